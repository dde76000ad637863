"""Width rounding: keep a few extra (zero or unread) channels so that a kernel runs at a width
its backend handles fast. Exact, since the extra channels are zeros of the masked model or read
by nobody."""

from __future__ import annotations

import numpy as np

from ..analysis.rules.linear import conv_groups
from ..analysis.types import Axis
from .flow import Liveness


def round_depthwise(lv: Liveness, quantum: int) -> None:
    """Keep extra channels so that every depthwise conv's channel count is a multiple of
    ``quantum`` (never above its original count).

    Why: ONNX Runtime runs a convolution in its fast blocked (NCHWc) kernels only when the
    channel counts are multiples of its block size, and its fallback for a depthwise conv is
    much slower (``benchmarks/studies/results/depthwise_quantum.md``; docs/design.md,
    "Depthwise convolutions"). The extra channels are original channels that are zero or read by
    nobody in the masked model, so keeping them is exact. They are kept in every tensor of their
    segment, producers included, so no op between needs a pad or a gather; a consumer reads them
    (with its zero weights) when it reads every other channel its input keeps
    (``analysis.rules.linear.input_reads``).
    """
    if quantum <= 1:
        return
    an = lv.analysis
    depthwise = [
        n
        for n in an.capture.graph.nodes
        if an.kinds.get(n.name) == "channelwise"
        and conv_groups(n) > 1
        and isinstance(an.axes.get(n.name), Axis)
        and isinstance(lv.demand.get(n.name), np.ndarray)
    ]
    for node in depthwise:
        ax = an.axes[node.name]
        # the conv runs on every channel its input holds (a channelwise op takes its input's
        # layout when that covers what it keeps: Rewriter.cover in rewrite/rewriter.py), so
        # round that union
        x = node.args[0]
        held = np.zeros(len(ax), dtype=bool)
        held[lv.kept(x)] = True
        kept = np.union1d(lv.kept(node), np.flatnonzero(held))
        need = -len(kept) % quantum
        if not len(kept) or not need or len(kept) + need > len(ax):
            continue
        # prefer channels the input already holds, then non-zero ones: the fewest new rows
        zx = lv.zero_of(x)
        nonzero = ~zx if zx is not None else np.zeros(len(ax), dtype=bool)
        spare = np.setdiff1d(np.arange(len(ax)), kept)
        spare = spare[np.lexsort((spare, ~nonzero[spare], ~held[spare]))]
        fillers = an.root[ax.ids[spare[:need]]]
        for name, other in an.axes.items():  # every tensor of the segment carries them
            demand = lv.demand.get(name)
            if not isinstance(other, Axis) or not isinstance(demand, np.ndarray):
                continue
            pos = np.isin(an.root[other.ids], fillers)
            if pos.any():
                for table in (lv.padding, lv.revive):
                    table[name] = table.get(name, np.zeros(len(demand), dtype=bool)) | pos
                demand |= pos
