"""Layout policies: in which physical order a tensor holds its kept channels.

Wherever the rewriter has a free choice (a producer's output rows, the channels of a merged
residual sum) it asks the policy. ``NaturalOrder`` keeps the original channel order: the
paper's baseline export, where consumers that read a subset gather it with a copy.
``SolvedOrder`` is UPSCALE's reorder: per segment it asks the layout solver for an order of the
segment's channels in which the consumers' read sets are contiguous (free slices), minimising
the bytes that still have to be gathered. Every tensor of the segment then follows that order.

Under output-side masks a residual add's operands hold different channels. The reorder export
writes the narrower one into the wider (``analysis/rules/elementwise.py``, ``rewrite/writers.py``):
a slice add where its channels are contiguous in the result's layout, else an indexed write. So
the channels each *writer* adds are a set the order should keep contiguous, as a reader's: the
solver gets both. And a residual stream (adds chained through activations) holds, from its first
add on, every channel a later add of it writes (``held``), so that later writers add into it in
place instead of each add padding the stream out to a wider one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx

from ..analysis.rules import rule_for
from ..analysis.rules.channelwise import Unary
from ..analysis.rules.elementwise import choose_base, coefficients, writes_into
from ..analysis.rules.linear import input_reads, output_rows
from ..analysis.types import Axis, ChannelAnalysis, node_shape
from ..capture.batch import per_sample
from ..liveness.flow import Liveness
from ..rewrite.writers import writable
from .solver import LayoutPlan, LayoutProblem, solve_layout


class NaturalOrder:
    """Original channel order everywhere; consumers gather what they read (the baseline)."""

    name = "baseline"
    writes = False  # a narrower residual operand is padded, not written into the wider one

    def order(self, node: fx.Node, positions: np.ndarray) -> np.ndarray:
        return np.sort(positions)

    def held(self, node: fx.Node, need: np.ndarray) -> np.ndarray | None:
        """The layout a residual add's result holds when it is more than ``need`` (a stream's
        buffer, holding later writers' channels too); None: the rule's own choice."""
        return None

    def merge(self, node: fx.Node, positions: np.ndarray, layouts: list[np.ndarray]) -> np.ndarray:
        return np.sort(positions)


@dataclass
class SegmentLayout:
    """The solver's answer for one segment, kept for plans and reports."""

    channels: int  # segment channels in the problem
    consumers: list[str]  # consumer nodes reading the segment
    plan: LayoutPlan  # its sets: the readers', the writers', the concatenation blocks
    realisable: bool = True  # every concatenation block is contiguous (else cost/bound are moot)
    writers: list[str] = field(default_factory=list)  # residual adds writing into the segment


class SolvedOrder(NaturalOrder):
    """Order each segment's channels so its consumers read slices (the reorder export)."""

    name = "reorder"
    writes = True

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
        self.streams = _streams(analysis, live)
        order = {n: i for i, n in enumerate(analysis.capture.graph.nodes)}
        writes: dict[int, list[tuple[str, frozenset, float]]] = {}
        for node in analysis.capture.graph.nodes:  # a residual add reading part of an operand
            info = analysis.kinds.get(node.name)
            if not isinstance(info, dict) or not isinstance(analysis.axes.get(node.name), Axis):
                continue
            need = self._held_roots(node, live)
            have = [self._held_roots(node.args[i], live) for i in info["tracked"]]
            for i, got in zip(info["tracked"], have, strict=True):
                a = node.args[i]
                part = need & got if writes_into(node, info) else need
                if part and part < got:
                    seg = segment_of[next(iter(part))]
                    reads.setdefault(seg, []).append(
                        (node.name, part, _bytes_per_channel(a, live.axis(a), marker))
                    )
            # ... or writing one operand (the channels it holds of the result's) into the other
            if not (need and writes_into(node, info)):
                continue
            have = [got & need for got in have]
            covers = [got == need for got in have]
            b = choose_base(covers, [len(got) for got in have], coefficients(node))
            w = node.args[1 - b]
            if not (have[0] and have[1]) or covers[1 - b]:
                continue  # nothing to write (or into), or a plain add
            if covers[b] and not writable(node.args[b], node, order):
                continue  # out of place: it copies the whole stream in any order
            writes.setdefault(segment_of[next(iter(need))], []).append(
                (node.name, have[1 - b], _bytes_per_channel(w, live.axis(w), marker))
            )
        blocks = _concat_blocks(analysis, segment_of)
        self.segments: list[SegmentLayout] = []
        for seg in sorted(reads.keys() | writes.keys()):
            channels = tuple(segments[seg].tolist())
            items = reads.get(seg, []) + writes.get(seg, [])
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
                SegmentLayout(
                    len(channels),
                    [n for n, _, _ in reads.get(seg, [])],
                    plan,
                    realisable,
                    [n for n, _, _ in writes.get(seg, [])],
                )
            )

    def _held_roots(self, node: object, live: Liveness) -> frozenset:
        """The segment channels (roots) ``node``'s export holds: a stream's (also after the
        activations that follow its add), else its kept channels."""
        an = self.analysis
        v = node
        while isinstance(v, fx.Node) and v.name not in self.streams and _passes(v, an):
            v = v.args[0]
        if isinstance(v, fx.Node) and v.name in self.streams:
            return self.streams[v.name]
        ax = live.axis(node)
        if ax is None:
            return frozenset()
        return frozenset(an.root[ax.ids[live.kept(node)]].tolist())

    def held(self, node: fx.Node, need: np.ndarray) -> np.ndarray | None:
        roots = self.streams.get(node.name)
        ax = self.analysis.axes.get(node.name)
        if roots is None or not isinstance(ax, Axis):
            return None
        mine = np.isin(self.analysis.root[ax.ids], np.fromiter(roots, dtype=np.int64))
        return self.order(node, np.union1d(np.flatnonzero(mine), need).astype(np.int64))

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


def _streams(analysis: ChannelAnalysis, live: Liveness) -> dict[str, frozenset]:
    """Per residual add (``writes_into``), the channels (roots) its result holds: its kept
    channels and those every later add of the same stream (reached through activations)
    holds. So a stream's first add pads it once to every channel its later writers add, and
    they write into it in place, instead of each add padding the stream out to a wider one."""
    nodes = list(analysis.capture.graph.nodes)
    adds = {n.name for n in nodes if writes_into(n, analysis.kinds.get(n.name))}
    out: dict[str, frozenset] = {}
    for node in reversed(nodes):
        if node.name not in adds:
            continue
        ax = analysis.axes[node.name]
        held = set(analysis.root[ax.ids[live.kept(node)]].tolist())
        for later in _next_adds(node, adds, analysis):
            held |= out[later.name]
        out[node.name] = frozenset(held)
    return out


def _next_adds(node: fx.Node, adds: set[str], analysis: ChannelAnalysis) -> list[fx.Node]:
    """The residual adds taking ``node``'s value as an operand, directly or through
    activations (:func:`_passes`)."""
    found, todo = [], [node]
    while todo:
        v = todo.pop()
        for u in v.users:
            if u.name in adds and any(a is v for a in u.args[:2]):
                found.append(u)
            elif _passes(u, analysis) and u.args[0] is v:
                todo.append(u)
    return found


def _passes(node: fx.Node, analysis: ChannelAnalysis) -> bool:
    """``node`` is an element-wise op on its first argument mapping 0 to 0 (an activation), so
    its result keeps its input's layout, a stream's included."""
    if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    rule = rule_for(node)
    return (
        isinstance(rule, Unary)
        and isinstance(analysis.axes.get(node.name), Axis)
        and node_shape(node) == node_shape(node.args[0])
        and rule.preserves_zero(node)
    )


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
