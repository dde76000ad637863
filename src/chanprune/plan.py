"""Export plans: what an export would keep and copy, per segment, without returning the module.

``chanprune.plan(model, x, method)`` runs the same stages as ``export`` (capture, analysis,
liveness, layout, rewrite) and reports per segment the channels kept, the consumers, the run-time
copies (gathers, pads, residual writes) in channels and bytes per sample, and, for
``method="reorder"``, whether the layout solver proved its order optimal and the lower bound it
proved: the copies an order decides (readers' gathers, writers' indexed writes) at their proven
minimum, plus those no order changes (pads, a residual stream's new buffer, out-of-place writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .analysis.propagate import analyze
from .analysis.types import Axis
from .api import check_group_quantum, check_method, check_width_quantum, policy_for
from .capture.trace import as_example, capture, gc_paused
from .layout.policy import SolvedOrder
from .liveness import export_liveness
from .rewrite.rewriter import FIXED_KINDS, GROUP_QUANTUM, Copy, rewrite


@dataclass
class SegmentPlan:
    """One segment of a :class:`Plan` (channels that are the same channel across tensors): its
    size, what the export keeps and copies of it and, for the reorder export, whether the
    layout solver proved those copies minimal."""

    index: int
    channels: int  # segment channels before pruning
    kept: int  # segment channels kept in at least one tensor
    consumers: int  # layers reading the segment
    gathers: int  # run-time copies (gathers, pads, residual writes) of the segment's channels
    copied_channels: int
    copied_bytes: int  # per sample
    # reorder: the solver proved the copy cost minimal (False where its sets do not describe the
    # export's copies; then lower_bound_bytes is None)
    optimal: bool | None = None
    # reorder: proven lower bound on copied bytes (readers and writers), plus the copies no
    # order changes (FIXED_KINDS: pads, a stream's new buffer, out-of-place writes)
    lower_bound_bytes: float | None = None
    solver: str = ""  # reorder: "c1p", "exact" or "heuristic"


@dataclass
class Plan:
    """What an export would keep and copy, per segment: the result of :func:`plan`.

    ``segments`` holds one :class:`SegmentPlan` per segment, ``copies`` every run-time copy
    (gather, pad or residual write: ``Copy.kind``) the export performs, and ``cross_segment``
    the copies that read several segments at once through a concatenation (DenseNet), which no
    segment order avoids.
    ``str(plan)`` is :meth:`summary`.
    """

    method: str
    segments: list[SegmentPlan]
    copies: list[Copy] = field(default_factory=list)
    # copies of channels from several segments at once: a consumer reading through a
    # concatenation (DenseNet) whose inputs stay whole and in order; no segment order helps
    cross_segment: SegmentPlan | None = None

    @property
    def copied_bytes(self) -> int:
        """Bytes the export copies at run time per sample, cross-segment reads included."""
        extra = self.cross_segment.copied_bytes if self.cross_segment else 0
        return sum(s.copied_bytes for s in self.segments) + extra

    @property
    def gathers(self) -> int:
        """Run-time copies (gathers and pads) the export performs, cross-segment reads included."""
        extra = self.cross_segment.gathers if self.cross_segment else 0
        return sum(s.gathers for s in self.segments) + extra

    def summary(self) -> str:
        """A readable table: one row per segment that has consumers or copies."""
        rows = [s for s in self.segments if s.consumers or s.gathers]
        head = (
            f"{'seg':>4} {'channels':>8} {'kept':>6} {'readers':>7} {'copies':>6} "
            f"{'copied ch':>9} {'bytes/sample':>12} {'proof':>10}"
        )
        lines = [
            f"export plan (method={self.method}): {len(rows)} segments, "
            f"{self.gathers} copies, {self.copied_bytes:,} bytes/sample",
            head,
            "-" * len(head),
        ]
        for s in rows:
            proof = "" if s.optimal is None else ("optimal" if s.optimal else "heuristic")
            if s.optimal is False and s.lower_bound_bytes is None:
                proof = "unproven"  # the solver's sets do not describe the export's copies
            lines.append(
                f"{s.index:>4} {s.channels:>8} {s.kept:>6} {s.consumers:>7} "
                f"{s.gathers:>6} {s.copied_channels:>9} {s.copied_bytes:>12,} {proof:>10}"
            )
        c = self.cross_segment
        if c is not None and c.gathers:
            lines.append(
                f"{'x':>4} {'':>8} {'':>6} {c.consumers or '':>7} {c.gathers:>6} "
                f"{c.copied_channels:>9} {c.copied_bytes:>12,} {'':>10}"
            )
            lines.append("x = reads across several segments through a concatenation (gathered)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@gc_paused
def plan(
    model: torch.nn.Module,
    example_inputs: object,
    method: str = "reorder",
    group_quantum: int = GROUP_QUANTUM,
    example_kwargs: dict[str, object] | None = None,
    dynamic_shapes: object = None,
    width_quantum: int | None = None,
) -> Plan:
    """What ``export`` with the same arguments would keep and copy, per segment.

    It runs the same stages but returns no module: a cheap look at the copies an export would
    make and, for ``method="reorder"``, at whether the layout solver proved them minimal.
    ``example_kwargs``, ``dynamic_shapes`` and ``width_quantum`` are as in
    :func:`chanprune.export`.
    """
    check_method(method)
    check_group_quantum(group_quantum)
    width_quantum = check_width_quantum(width_quantum)
    inputs, kwargs = as_example(example_inputs, example_kwargs)
    an = analyze(capture(model, inputs, example_kwargs=kwargs, dynamic_shapes=dynamic_shapes))
    live = export_liveness(an, method, group_quantum, width_quantum)
    policy = policy_for(method, an, live)
    result = rewrite(an, live, policy, group_quantum)
    segments = an.segments()
    seg_of = {r: i for i, seg in enumerate(segments) for r in seg.tolist()}
    nodes = {n.name: n for n in an.capture.graph.nodes}
    kept_roots: set[int] = set()
    for name, ax in an.axes.items():
        if isinstance(ax, Axis) and isinstance(live.zero.get(name), np.ndarray):
            kept_roots.update(an.root[ax.ids[live.kept(nodes[name])]].tolist())
    plans = [
        SegmentPlan(i, len(seg), len(kept_roots & set(seg.tolist())), 0, 0, 0, 0)
        for i, seg in enumerate(segments)
    ]
    for con in an.consumers:
        plans[seg_of[int(an.root[con.ids[0]])]].consumers += 1
    cross = SegmentPlan(-1, 0, 0, 0, 0, 0, 0, solver="cross")
    fixed = [0] * len(plans)  # per segment: bytes of the copies no order changes
    for copy in result.copies:
        ax = an.axes.get(copy.source)
        if not isinstance(ax, Axis):
            continue
        val = nodes[copy.source].meta.get("val")
        item = val.element_size() if isinstance(val, torch.Tensor) else 4
        positions = np.array([q for q in copy.positions if q >= 0], dtype=np.int64)
        segs = {seg_of[int(r)] for r in an.root[ax.ids[positions]].tolist()} or {
            seg_of[int(an.root[ax.ids[0]])]
        }
        seg = segs.pop() if len(segs) == 1 else None
        p = plans[seg] if seg is not None else cross
        p.gathers += 1
        p.copied_channels += copy.channels
        p.copied_bytes += copy.elements * item
        if seg is not None and copy.kind in FIXED_KINDS:
            fixed[seg] += copy.elements * item
    if isinstance(policy, SolvedOrder):
        solved = set()
        for sl in policy.segments:
            seg = seg_of[int(sl.plan.order[0])]
            solved.add(seg)
            p = plans[seg]
            # the solver's sets describe this export only if the copies an order decides cost
            # what the solver says its order costs (not so where a rule holds a layout in an
            # order of its own, e.g. a grouped conv's per-group one)
            described = sl.realisable and abs(p.copied_bytes - fixed[seg] - sl.plan.cost) < 0.5
            p.optimal = sl.plan.optimal and described
            p.lower_bound_bytes = sl.plan.lower_bound + fixed[seg] if described else None
            p.solver = sl.plan.method
            if p.copied_bytes == fixed[seg]:  # nothing an order decides is copied: minimal
                p.optimal, p.lower_bound_bytes = True, float(fixed[seg])
        for seg, p in enumerate(plans):  # copies in a segment the solver had no sets for
            if seg not in solved and p.gathers:
                p.optimal = p.copied_bytes == fixed[seg]  # only copies no order changes
                p.lower_bound_bytes = float(fixed[seg]) if p.optimal else None
        cross.consumers = len(policy.cross_readers)
    return Plan(method, plans, result.copies, cross)
