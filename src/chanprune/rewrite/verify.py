"""Verification: the exported module must reproduce the masked model on the example inputs.

On a mismatch we replay both graphs node by node and name the first original node whose value
differs from its pruned counterpart (restricted to the channels the pruned tensor holds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx
from torch.utils import _pytree as pytree

from ..capture.trace import Capture, run_graph, user_leaves
from ..errors import ExportError
from .rewriter import RewriteResult

RTOL = 1e-4


@dataclass
class Check:
    max_abs_diff: float
    max_abs_ref: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= RTOL * max(self.max_abs_ref, 1e-6)


def compare(reference: object, actual: object) -> Check:
    """Max |ref - actual| over all tensor leaves, and max |ref| for the relative tolerance."""
    ref, act = pytree.tree_leaves(reference), pytree.tree_leaves(actual)
    if len(ref) != len(act):
        return Check(float("inf"), 0.0)
    diff, scale = 0.0, 0.0
    for r, a in zip(ref, act, strict=True):
        if isinstance(r, torch.Tensor):
            if not isinstance(a, torch.Tensor) or r.shape != a.shape:
                return Check(float("inf"), 0.0)
            r, a = r.detach().double(), a.detach().double().to(r.device)
            both_nan = torch.isnan(r) & torch.isnan(a)
            d = torch.where(both_nan, torch.zeros_like(r), (r - a).abs())
            if r.numel():
                diff = max(diff, float(torch.nan_to_num(d, nan=float("inf")).max()))
                scale = max(scale, float(torch.nan_to_num(r.abs(), nan=0.0).max()))
    return Check(diff, scale)


def verify(
    cap: Capture,
    result: RewriteResult,
    inputs: tuple[torch.Tensor, ...],
    reference: object,
    kwargs: dict | None = None,
) -> Check:
    """Run the pruned module as the model was run (``model(*inputs, **kwargs)``) and compare
    with the masked model's ``reference`` outputs; a mismatch names the first diverging node."""
    with torch.no_grad():
        actual = result.module(*inputs, **(kwargs or {}))
    check = compare(reference, actual)
    if not check.ok:
        where = first_divergence(cap, result, inputs, kwargs)
        raise ExportError(
            f"exported model differs from the masked model: max |diff| {check.max_abs_diff:.3g} "
            f"vs max |output| {check.max_abs_ref:.3g}; first diverging node: {where}"
        )
    return check


def first_divergence(
    cap: Capture, result: RewriteResult, inputs: tuple, kwargs: dict | None = None
) -> str:
    """Name the first original node whose pruned counterpart holds different values."""
    original = run_graph(cap, inputs, kwargs=kwargs)
    pruned = _values(result.module, user_leaves(cap, inputs, kwargs))
    for node in cap.graph.nodes:
        new = result.node_map.get(node.name)
        layout = result.layouts.get(node.name)
        if new is None or new not in pruned or not isinstance(layout, np.ndarray):
            continue
        ref, got = original[node.name], pruned[new]
        ax = getattr(result.axes.get(node.name), "dim", None)
        if not isinstance(ref, torch.Tensor) or ax is None:
            continue
        present = ref.index_select(ax, torch.from_numpy(layout))
        if present.shape != got.shape or not compare(present, got).ok:
            return cap.where(node)
        demand = result.demand.get(node.name)
        if isinstance(demand, np.ndarray):  # an absent channel must be zero or unused
            absent = np.setdiff1d(np.flatnonzero(demand), layout)
            if len(absent) and ref.index_select(ax, torch.from_numpy(absent)).any():
                return cap.where(node) + " (drops a live channel)"
    return "none found node by node (the difference appears in the outputs only)"


def _values(module: fx.GraphModule, args: tuple) -> dict[str, object]:
    """Every node's value as the node computed it: a copy, since an in-place activation or
    residual write (``inplace.py``, ``writers.py``) later changes the tensor it returned."""
    out: dict[str, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            v = super().run_node(n)
            out[n.name] = v.detach().clone() if isinstance(v, torch.Tensor) else v
            return v

    with torch.no_grad():
        Recorder(module).run(*args)
    return out
