"""Dense segments: every tensor of a segment holds every channel any tensor of it keeps, and
every consumer reads its whole input, so the segment needs no run-time copy at all.

Why: ONNX Runtime runs convolutions in blocked (NCHWc) layout and converts back to plain NCHW
around any op it has no blocked kernel for; the gathers, slices, pads and residual writes that
unconstrained masks need are such ops, so every one of them costs two layout conversions of a
whole tensor (``benchmarks/results/ort_graphs.md``). Keeping the zero rows and columns instead
costs their MACs but keeps the graph in one layout, as a constrained export's is. Exact: a
carried channel is one the masked model computes too (a zero row of one producer, a channel
another producer writes), and a column read extra meets either a zero weight or a zero channel.

``export(method="dense")`` makes every segment dense; ``method="auto"`` only the segments whose
conv/linear MACs grow by at most :data:`AUTO_GROWTH`, the others keep ``reorder``'s layout.
"""

from __future__ import annotations

import numpy as np
from torch import fx

from ..analysis.rules.linear import input_reads
from ..analysis.types import Axis
from ..latency.costs import ChannelCosts
from ..latency.macs import mac_costs
from .flow import Liveness
from .rounding import _carry

AUTO_GROWTH = 0.25  # method="auto": a segment goes dense if its layers' MACs grow at most this


def densify(lv: Liveness, max_growth: float | None = None) -> int:
    """Carry, into every tensor holding it, each segment channel some tensor keeps, and make
    consumers of those segments read all they are given (``analysis.rules.linear.input_reads``).
    With ``max_growth``, only segments whose producers' and consumers' MACs grow by at most
    that share (:func:`growth`). Returns how many tensor channels were added."""
    an = lv.analysis
    nodes = _tracked(lv)
    kept = np.zeros(len(an.root), dtype=bool)
    for n in nodes:
        kept[an.root[an.axes[n.name].ids[lv.kept(n)]]] = True
    chosen = np.zeros(len(an.root), dtype=bool)
    costs = mac_costs(an) if max_growth is not None else None
    for seg in an.segments():
        union = seg[kept[seg]]
        if costs is None or growth(lv, seg, union, costs) <= max_growth:
            chosen[union] = True
    before = sum(len(lv.kept(n)) for n in nodes)
    if chosen.any():
        _carry(lv, np.flatnonzero(chosen))
    lv.dense_roots = chosen
    return sum(len(lv.kept(n)) for n in nodes) - before


def growth(
    lv: Liveness, segment: np.ndarray, union: np.ndarray, costs: ChannelCosts | None = None
) -> float:
    """The share by which the MACs of the layers writing or reading ``segment`` grow when its
    tensors all hold ``union``: producers computing every row of it they have, consumers reading
    every channel of it their input holds (0 when the layers do no work). ``costs``: the
    model's :func:`~chanprune.latency.macs.mac_costs`, computed once by the caller."""
    an = lv.analysis
    costs = costs or mac_costs(an)
    nodes = {n.name: n for n in an.capture.graph.nodes}
    in_seg = np.zeros(len(an.root), dtype=bool)
    in_seg[segment] = True
    held = np.zeros(len(an.root), dtype=bool)
    held[union] = True
    before = after = 0.0
    for i, p in enumerate(an.producers):
        roots = an.root[p.ids]
        if not in_seg[roots].any() or not isinstance(lv.demand.get(p.node), np.ndarray):
            continue
        before += len(lv.kept(nodes[p.node])) * costs.row[i]
        after += int(held[roots].sum()) * costs.row[i]
    for j, c in enumerate(an.consumers):
        node = nodes[c.node]
        x = node.args[0]
        ax = lv.axis(x)
        if (
            ax is None
            or not in_seg[an.root[ax.ids]].any()
            or not isinstance(lv.demand.get(c.node), np.ndarray)
        ):
            continue
        reads = input_reads(node, lv, lv.kept(node))
        before += int(reads.sum()) * costs.col[j]
        after += int(held[an.root[ax.ids]].sum()) * costs.col[j]
    return after / before - 1.0 if before > 0 else 0.0


def _tracked(lv: Liveness) -> list[fx.Node]:
    an = lv.analysis
    return [
        n
        for n in an.capture.graph.nodes
        if isinstance(an.axes.get(n.name), Axis) and isinstance(lv.demand.get(n.name), np.ndarray)
    ]
