"""Dense segments: every tensor of a segment holds every channel any tensor of it keeps, and
every consumer reads its whole input, so the export needs no run-time copy at all.

Why: ONNX Runtime runs convolutions in blocked (NCHWc) layout and converts back to plain NCHW
around any op it has no blocked kernel for; the gathers, slices and pads that unconstrained
masks need are such ops, so every one of them costs two layout conversions of a whole tensor
(``benchmarks/results/ort_graphs.md``). Keeping the zero rows and columns instead costs their
MACs but keeps the graph in one layout, as a constrained export's is. Exact: a carried channel is
one the masked model computes too (a zero row of one producer, a channel another producer
writes), and a column read extra meets either a zero weight or a zero channel.
"""

from __future__ import annotations

import numpy as np

from ..analysis.types import Axis
from .flow import Liveness
from .rounding import _carry


def densify(lv: Liveness) -> int:
    """Carry, into every tensor holding it, each segment channel some tensor keeps, and make
    consumers read all they are given (``analysis.rules.linear.input_reads``). Returns how many
    tensor channels were added."""
    an = lv.analysis
    nodes = [
        n
        for n in an.capture.graph.nodes
        if isinstance(an.axes.get(n.name), Axis) and isinstance(lv.demand.get(n.name), np.ndarray)
    ]
    kept = [an.root[an.axes[n.name].ids[lv.kept(n)]] for n in nodes]
    before = sum(len(k) for k in kept)
    if kept:
        _carry(lv, np.unique(np.concatenate(kept)))
    lv.dense = True
    return sum(len(lv.kept(n)) for n in nodes) - before
