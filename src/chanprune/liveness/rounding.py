"""Width rounding: keep a few extra (zero or unread) channels so that a kernel runs at a width
its backend handles fast. Exact, since the extra channels are zeros of the masked model or read
by nobody."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..analysis.rules.linear import conv_groups
from ..analysis.types import Axis
from ..errors import InputError
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
        _carry(lv, an.root[ax.ids[spare[:need]]])  # every tensor of the segment carries them


# a width that is not a multiple of the backend's vector width runs slower per MAC: round up
# where that adds at most this share of channels (benchmarks/studies/results/widths.md)
WIDTH_SLACK = 0.25


def default_width_quantum() -> int:
    """The channel multiple the CPU's kernels run fastest at: its fp32 vector width (16 with
    AVX-512, 8 with AVX2, 4 otherwise: SSE, NEON), or the environment's
    ``CHANPRUNE_WIDTH_QUANTUM`` (to export the same shapes on any machine)."""
    pinned = os.environ.get("CHANPRUNE_WIDTH_QUANTUM")
    if pinned is not None:
        if not pinned.isdigit() or int(pinned) < 1:
            raise InputError(f"CHANPRUNE_WIDTH_QUANTUM must be a positive integer, got {pinned!r}")
        return int(pinned)
    capability = torch.backends.cpu.get_cpu_capability()
    return 16 if "AVX512" in capability else 8 if "AVX2" in capability else 4


def round_widths(lv: Liveness, quantum: int, slack: float = WIDTH_SLACK) -> dict[str, int]:
    """Keep extra channels so that dense layers' output widths are multiples of ``quantum``.

    A segment whose producers all keep the same channels (one producer, as a bottleneck's
    inner conv or an MLP's hidden layer; or constrained masks) is widened with original
    channels that are zero or read by nobody, in every tensor of the segment, when that adds
    at most ``slack`` of its width; so its producers write, and its readers read, an aligned
    width, exactly. Segments whose producers keep different channels (an unconstrained
    residual stream) keep their widths. Returns {producer node: rounded width}.
    """
    if quantum <= 1:
        return {}
    an = lv.analysis
    nodes = {n.name: n for n in an.capture.graph.nodes}
    by_segment: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = {}
    for p in an.producers:
        if an.kinds.get(p.node) == "grouped" or not isinstance(lv.demand.get(p.node), np.ndarray):
            continue
        ax = an.axes.get(p.node)
        if not isinstance(ax, Axis):
            continue
        roots = an.root[ax.ids]
        key = tuple(np.unique(roots).tolist())
        by_segment.setdefault(key, []).append((p.node, np.unique(roots[lv.kept(nodes[p.node])])))
    done = {}
    for segment, members in by_segment.items():
        kept = members[0][1]
        if any(not np.array_equal(k, kept) for _, k in members[1:]) or an.pinned[kept].any():
            continue
        need = -len(kept) % quantum
        if not len(kept) or not need or len(kept) + need > len(segment):
            continue
        if need > slack * len(kept):
            continue
        spare = np.setdiff1d(np.asarray(segment), kept)
        fillers = spare[np.argsort(an.pinned[spare], kind="stable")][:need]
        _carry(lv, fillers)
        done.update({name: len(kept) + need for name, _ in members})
    return done


def _carry(lv: Liveness, fillers: np.ndarray) -> None:
    """Keep segment channels ``fillers`` in every tensor that holds them."""
    an = lv.analysis
    for name, other in an.axes.items():
        demand = lv.demand.get(name)
        if not isinstance(other, Axis) or not isinstance(demand, np.ndarray):
            continue
        pos = np.isin(an.root[other.ids], fillers)
        if pos.any():
            for table in (lv.padding, lv.revive):
                table[name] = table.get(name, np.zeros(len(demand), dtype=bool)) | pos
            demand |= pos
