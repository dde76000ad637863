"""The unit masking chooses: one maskable channel of one layer (plain data that both the plain
choosers in ``masks.py`` and the mixed ranking in ``mixed.py`` take)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Unit:
    """One maskable channel: of a layer (``param``), its weight positions, its segment channel."""

    layer: int  # index into the list of layers on this side
    param: str  # weight name of the producer/consumer
    channel: int  # channel index reported to the user (row, or consumer input channel)
    rows: np.ndarray  # weight positions along the masked dim (several after a flatten)
    root: int  # segment channel
    score: float = 0.0
