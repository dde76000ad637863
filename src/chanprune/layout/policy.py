"""Layout policies: in which physical order a tensor holds its kept channels.

Wherever the rewriter has a free choice (a producer's output rows, the channels of a merged
residual sum) it asks the policy. ``NaturalOrder`` keeps the original channel order: the
paper's baseline export, where consumers that read a subset gather it with a copy.
``SolvedOrder`` is UPSCALE's reorder: per segment it asks the layout solver for an order of the
segment's channels in which the consumers' read sets are contiguous (free slices), minimising
the bytes that still have to be gathered. Every tensor of the segment then follows that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from ..analysis.rules.linear import input_reads, output_rows
from ..analysis.types import Axis, ChannelAnalysis
from ..capture.batch import per_sample
from ..liveness.flow import Liveness
from .solver import LayoutPlan, LayoutProblem, solve_layout


class NaturalOrder:
    """Original channel order everywhere; consumers gather what they read (the baseline)."""

    name = "baseline"

    def order(self, node: fx.Node, positions: np.ndarray) -> np.ndarray:
        return np.sort(positions)

    def merge(self, node: fx.Node, positions: np.ndarray, layouts: list[np.ndarray]) -> np.ndarray:
        return np.sort(positions)


@dataclass
class SegmentLayout:
    """The solver's answer for one segment, kept for plans and reports."""

    channels: int  # segment channels in the problem
    consumers: list[str]  # consumer nodes reading the segment
    plan: LayoutPlan  # its reads: the consumers', then the concatenation blocks kept together
    realisable: bool = True  # every concatenation block is contiguous (else cost/bound are moot)


class SolvedOrder(NaturalOrder):
    """Order each segment's channels so its consumers read slices (the reorder export)."""

    name = "reorder"

    def __init__(
        self,
        analysis: ChannelAnalysis,
        live: Liveness,
        time_limit: float = 2.0,
        max_work: int | None = 300_000,
    ):
        """The search per segment stops after ``max_work`` units (PQ-tree operations x atoms), a
        work budget rather than a clock, so exports and plans do not depend on the load;
        ``time_limit`` (seconds) is only a safety net. The default leaves headroom over the
        smallest budget that proves every segment of the benchmarked zoo optimal
        (benchmarks/studies/results/solver_budget.md)."""

        self.analysis = analysis
        self.rank = np.arange(len(analysis.root), dtype=np.int64)
        nodes = {n.name: n for n in analysis.capture.graph.nodes}
        marker = analysis.capture.marker
        segment_of: dict[int, int] = {}
        segments = analysis.segments()
        for i, seg in enumerate(segments):
            for r in seg.tolist():
                segment_of[r] = i
        reads: dict[int, list[tuple[str, frozenset, float]]] = {}
        self.cross_readers: list[str] = []  # consumers reading channels of several segments
        natural = NaturalOrder()
        for con in analysis.consumers:
            node = nodes[con.node]
            x = node.args[0]
            ax = live.axis(x)
            if ax is None or not isinstance(analysis.axes.get(node.name), Axis):
                continue
            mask = input_reads(node, live, output_rows(node, live, natural))
            roots = frozenset(analysis.root[ax.ids[mask]].tolist())
            segs = {segment_of[r] for r in roots}
            if len(segs) != 1:
                # reads channels of several segments (through a concatenation, whose inputs
                # stay whole and in order): no order of one segment makes it a slice, so it
                # gathers whatever the orders are; leave it out of every segment's problem
                if segs:
                    self.cross_readers.append(con.node)
                continue
            reads.setdefault(segs.pop(), []).append(
                (con.node, roots, _bytes_per_channel(x, ax, marker))
            )
        for node in analysis.capture.graph.nodes:  # a residual add reading part of an operand
            info = analysis.kinds.get(node.name)
            if not isinstance(info, dict) or not isinstance(analysis.axes.get(node.name), Axis):
                continue
            need = frozenset(analysis.root[analysis.axes[node.name].ids[live.kept(node)]].tolist())
            for i in info["tracked"]:
                a = node.args[i]
                have = frozenset(analysis.root[live.axis(a).ids[live.kept(a)]].tolist())
                if need and need < have:
                    seg = segment_of[next(iter(need))]
                    reads.setdefault(seg, []).append(
                        (node.name, need, _bytes_per_channel(a, live.axis(a), marker))
                    )
        blocks = _concat_blocks(analysis, segment_of)
        self.segments: list[SegmentLayout] = []
        for seg, items in sorted(reads.items()):
            channels = tuple(segments[seg].tolist())
            # a concatenation's output holds its inputs as blocks in input order, so the order
            # must keep each block (and each run of leading blocks) contiguous to be realisable
            heavy = 1.0 + len(channels) * sum(w for _, _, w in items)
            forced = sorted(blocks.get(seg, ()), key=sorted)
            problem = LayoutProblem(
                channels=channels,
                consumers=tuple(s for _, s, _ in items) + tuple(forced),
                weights=tuple(w for _, _, w in items) + (heavy,) * len(forced),
            )
            plan = solve_layout(problem, time_limit=time_limit, max_work=max_work)
            self.rank[list(plan.order)] = np.arange(len(plan.order))
            realisable = all(r.copied == 0 for r in plan.reads[len(items) :])
            self.segments.append(
                SegmentLayout(len(channels), [n for n, _, _ in items], plan, realisable)
            )

    def order(self, node: fx.Node, positions: np.ndarray) -> np.ndarray:
        ax = self.analysis.axes.get(node.name)
        if isinstance(ax, list):
            ax = ax[0]
        if not isinstance(ax, Axis):
            return np.sort(positions)
        keys = self.rank[self.analysis.root[ax.ids[positions]]]
        return positions[np.lexsort((positions, keys))]

    def merge(self, node: fx.Node, positions: np.ndarray, layouts: list[np.ndarray]) -> np.ndarray:
        return self.order(node, positions)


def _concat_blocks(analysis: ChannelAnalysis, segment_of: dict[int, int]) -> dict[int, set]:
    """Per segment, the channel sets a concatenation keeps together: each input's channels and
    the union of its first ``k`` inputs (so blocks also keep their input order, up to reversal,
    which preserves contiguity)."""
    out: dict[int, set] = {}
    for node in analysis.capture.graph.nodes:
        if analysis.kinds.get(node.name) != "channels" or not isinstance(
            node.args[0], list | tuple
        ):
            continue
        by_segment: dict[int, list[frozenset]] = {}
        for t in node.args[0]:
            ax = analysis.axes.get(t.name) if isinstance(t, fx.Node) else None
            if not isinstance(ax, Axis) or not len(ax):
                continue
            roots = analysis.root[ax.ids]
            for seg in {segment_of[int(r)] for r in roots.tolist()}:
                part = frozenset(r for r in roots.tolist() if segment_of[int(r)] == seg)
                by_segment.setdefault(seg, []).append(part)
        for seg, parts in by_segment.items():
            if len(parts) < 2:
                continue
            sets = out.setdefault(seg, set())
            prefix: frozenset = frozenset()
            for part in parts:
                sets.add(part)
                prefix = prefix | part
                sets.add(prefix)
    return out


def _bytes_per_channel(x: fx.Node, ax: Axis, marker: int | None) -> float:
    """Bytes one channel of ``x`` occupies per sample (what a gather of it copies)."""
    val = x.meta.get("val")
    shape = val.shape if isinstance(val, torch.Tensor) else ()
    size = (
        torch.finfo(val.dtype).bits // 8
        if isinstance(val, torch.Tensor) and val.is_floating_point()
        else 4
    )
    spatial = int(
        np.prod([per_sample(s, marker) for d, s in enumerate(shape) if d not in (0, ax.dim)] or [1])
    )
    return float(size * spatial)
