"""Layout policies: in which physical order a tensor holds its kept channels.

Wherever the rewriter has a free choice (a producer's output rows, the channels of a merged
residual sum) it asks the policy. ``NaturalOrder`` keeps the original channel order: the
paper's baseline export, where consumers that read a subset gather it with a copy.
"""

from __future__ import annotations

import numpy as np
from torch import fx


class NaturalOrder:
    """Original channel order everywhere; consumers gather what they read (the baseline)."""

    name = "baseline"

    def order(self, node: fx.Node, positions: np.ndarray) -> np.ndarray:
        return np.sort(positions)

    def merge(self, node: fx.Node, positions: np.ndarray, layouts: list[np.ndarray]) -> np.ndarray:
        return np.sort(positions)
