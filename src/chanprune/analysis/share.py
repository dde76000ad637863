"""How much of a model masking can prune, and why not more.

The prunable share counts the output channels of conv and linear layers (final layers, whose
channels are the model's outputs, excluded) whose segment channel is not pinned. The causes say
in words what pins the rest: ops without a channel rule (grouped by rule, with their modules),
the model's outputs, and weight-bearing ops chanprune has no producer rule for (GPT-2's
``Conv1D`` is an ``addmm``), whose layers masking cannot see at all. ``mask`` warns with them
when the share is low, so nothing stays unpruned without a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .types import Axis, Barrier, ChannelAnalysis, node_shape

LOW_SHARE = 0.5  # mask() warns below this share
# ops that read a weight the way a producer does; one without a producer rule is a blind spot
WEIGHT_OPS = frozenset(
    {"addmm", "mm", "matmul", "bmm", "baddbmm", "linear", "einsum", "conv1d", "conv2d"}
    | {"conv3d", "convolution", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
)


@dataclass
class PrunableShare:
    """``prunable`` of ``total`` conv/linear output channels can be masked; ``causes`` say why
    the others cannot, largest first."""

    prunable: int
    total: int
    causes: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.prunable / self.total if self.total else 1.0

    def __str__(self) -> str:
        head = f"{self.prunable} of {self.total} conv/linear output channels are prunable"
        return head + (f" ({self.fraction:.0%})" if self.total else "")


def module_of(an: ChannelAnalysis, node_name: str) -> str:
    return an.capture.module_paths.get(node_name, "") or "<top>"


def group_barriers(an: ChannelAnalysis, barriers: list[Barrier]) -> list[str]:
    """One line per reason: the reason, then every module where an op hit it."""
    by_reason: dict[str, list[str]] = {}
    for b in barriers:
        mods = by_reason.setdefault(b.reason, [])
        if (m := module_of(an, b.node)) not in mods:
            mods.append(m)
    n = {r: sum(b.reason == r for b in barriers) for r in by_reason}
    return [
        f"{reason} ({n[reason]} op{'s' * (n[reason] > 1)}): {', '.join(mods)}"
        for reason, mods in sorted(by_reason.items(), key=lambda kv: -n[kv[0]])
    ]


def _output_roots(an: ChannelAnalysis) -> set[int]:
    roots: set[int] = set()
    for node in an.capture.graph.nodes:
        if node.op == "output":
            for a in node.all_input_nodes:
                v = an.axes.get(a.name)
                for ax in v if isinstance(v, list) else [v]:
                    if isinstance(ax, Axis):
                        roots.update(np.unique(an.root[ax.ids]).tolist())
    return roots


def _blind_layers(an: ChannelAnalysis) -> list[tuple[str, str, int]]:
    """(module, op, output channels) of ops that read a 2-D or larger parameter as a weight but
    are neither a producer nor a consumer: layers masking cannot see."""
    known = {p.weight for p in an.producers} | {c.weight for c in an.consumers}
    names = an.capture.state_names
    found = []
    for node in an.capture.graph.nodes:
        if node.op != "call_function":
            continue
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if op not in WEIGHT_OPS:
            continue
        weights = [
            names[a.name]
            for a in node.all_input_nodes
            if a.name in names and len(node_shape(a) or ()) >= 2 and names[a.name] not in known
        ]
        shape = node_shape(node)
        if weights and shape:
            width = shape[1] if op.startswith("conv") and len(shape) > 1 else shape[-1]
            found.append((module_of(an, node.name), f"{op} of {weights[0]}", width))
    return found


def prunable_share(an: ChannelAnalysis) -> PrunableShare:
    """The share of conv/linear output channels some masking can remove, with the causes."""
    outputs = _output_roots(an)
    prunable = total = 0
    pinned_by: dict[str, int] = {}
    for p in an.producers:
        roots = an.root[p.ids]
        if set(np.unique(roots).tolist()) <= outputs:
            continue  # a final layer: its channels are the model's outputs
        total += p.channels
        pinned = an.pinned[roots]
        prunable += int((~pinned).sum())
        for r in roots[pinned].tolist():
            note = re.sub(r", node \w+\)", ")", an.notes.get(int(r), "pinned"))
            pinned_by[note] = pinned_by.get(note, 0) + 1
    causes = [
        f"{n} channels: {note}" for note, n in sorted(pinned_by.items(), key=lambda kv: -kv[1])
    ]
    blind = _blind_layers(an)
    if blind:
        total += sum(w for _, _, w in blind)
        layers = ", ".join(f"{m} ({op})" for m, op, _ in blind)
        causes.insert(
            0,
            f"{sum(w for _, _, w in blind)} channels in {len(blind)} layer(s) whose op has no "
            f"producer rule, so masking cannot see them: {layers}",
        )
    return PrunableShare(prunable, total, causes)


def low_share_message(share: PrunableShare) -> str | None:
    """The warning ``mask`` gives when less than :data:`LOW_SHARE` of the channels is prunable."""
    if share.fraction >= LOW_SHARE:
        return None
    lines = "\n".join(f"- {c}" for c in share.causes)
    return (
        f"chanprune: only {share}; the rest cannot be pruned:\n{lines}\n"
        "(the export stays exact and keeps those channels whole; docs/guide/models.md lists "
        "what has a rule)"
    )
