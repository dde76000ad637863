"""Report data: what pruning does to one model over a range of amounts, per export method.

For each amount the model is masked twice from its original weights: constrained (coupled
layers together, exported without copies) and unconstrained (exported as ``baseline`` and
``reorder``, plus ``ideal``: the reorder export with every channel read a contiguous view,
copying nothing). All of them, and the unpruned model, are timed side by side (interleaved,
medians). At one chosen amount the report also keeps the channels per layer and the export
plans (copies per segment). Plain data out, so the HTML renderer (``report.html``) only draws
it and runs no model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..api import export
from ..evaluation.stats import count_macs, count_params
from ..evaluation.timing import measure_latency
from ..masking.masks import mask
from ..plan import Plan, plan
from ..rewrite.ideal import ideal
from .state import restore_state

if TYPE_CHECKING:
    from .frontier import AccuracyView

METHODS = ("unpruned", "constrained", "baseline", "reorder", "ideal")


@dataclass
class Layer:
    name: str  # weight parameter name
    out_total: int
    out_kept: int
    in_total: int
    in_kept: int


@dataclass
class ReportData:
    model: str
    input_shape: tuple[int, ...]
    masking: dict[str, object]
    amounts: list[float]
    runs: int
    latency: dict[str, list[float]] = field(default_factory=dict)  # method -> ms per amount
    params: dict[str, list[int]] = field(default_factory=dict)
    macs: dict[str, list[int]] = field(default_factory=dict)
    detail_amount: float = 0.0
    layers: list[Layer] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)  # baseline / reorder at detail_amount
    accuracy: AccuracyView | None = None  # top-1 vs measured latency (report --targets)


def collect(
    model: torch.nn.Module,
    x: torch.Tensor,
    name: str,
    amounts: list[float],
    detail_amount: float,
    runs: int = 5,
    step: Callable[[str], object] | None = None,
    **masking: object,
) -> ReportData:
    """Measure ``model`` (left unchanged) at each amount; ``step(label)`` is a context manager
    factory for progress display."""
    step = step or _no_step
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    data = ReportData(name, tuple(x.shape), dict(masking), list(amounts), runs)
    data.detail_amount = detail_amount
    unpruned = copy.deepcopy(model).eval()
    for m in METHODS:
        data.latency[m], data.params[m], data.macs[m] = [], [], []
    try:
        for amount in amounts:
            with step(f"amount {amount}: mask + export"):
                mods = _exports(model, x, amount, masking, original)
                mods["unpruned"] = unpruned
                if amount == detail_amount:
                    data.layers = _layers(unpruned, mods["reorder"])
                    data.plans = {m: plan(model, x, method=m) for m in ("baseline", "reorder")}
            with step(f"amount {amount}: latency"):
                lat = measure_latency({m: mods[m] for m in METHODS}, x, runs=runs)
            for m in METHODS:
                data.latency[m].append(lat[m])
                data.params[m].append(count_params(mods[m]))
                data.macs[m].append(count_macs(mods[m], x) if m != "ideal" else -1)
    finally:
        restore_state(model, original)
    return data


def _exports(model, x, amount, masking, original) -> dict[str, torch.nn.Module]:
    restore_state(model, original)
    mask(model, x, amount=amount, constrained=True, **masking)
    mods = {"constrained": export(model, x, method="baseline")}
    restore_state(model, original)
    mask(model, x, amount=amount, constrained=False, **masking)
    mods["baseline"] = export(model, x, method="baseline")
    mods["reorder"] = export(model, x, method="reorder")
    mods["ideal"] = ideal(mods["reorder"])
    return mods  # the model stays masked (unconstrained): plan() reads it


def _layers(original: torch.nn.Module, pruned: torch.nn.Module) -> list[Layer]:
    """Dense layers (weights of rank >= 2) in model order, with channels kept by the export."""
    kept = dict(pruned.state_dict())
    transposed = _transposed_weights(pruned)
    out = []
    for name, w in original.state_dict().items():
        if w.dim() >= 2 and name.endswith("weight") and name in kept:
            k = kept[name]
            o, i = (1, 0) if name in transposed else (0, 1)
            out.append(
                Layer(name.removesuffix(".weight"), w.shape[o], k.shape[o], w.shape[i], k.shape[i])
            )
    return out


def _transposed_weights(pruned: torch.nn.Module) -> set[str]:
    """Weights stored (in, out, ...): those of transposed convs and of ``addmm`` (GPT-2's
    ``Conv1D``), read off the exported graph."""
    graph = getattr(pruned, "graph", None)
    if graph is None:
        return set()
    names = set()
    for node in graph.nodes:
        op = getattr(node.target, "__name__", "").split(".")[0]
        if node.op == "call_function" and (op == "addmm" or op.startswith("conv_transpose")):
            w = node.args[2] if op == "addmm" else node.args[1]
            if getattr(w, "op", None) == "get_attr":
                names.add(str(w.target))
    return names


class _no_step:
    def __init__(self, label: str) -> None:
        pass

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
