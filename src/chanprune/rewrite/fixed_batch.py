"""An export whose graph holds only some batch sizes refuses the others, by name, at run time.

torch.export fixes the batch where the model's Python depends on it (one piece per sample:
``torch.stack([f(t) for t in x.unbind(0)])``), and capture cannot always undo that
(``capture.trace._retrace_larger``); some decompositions fix it modulo something
(``tensor_split(x, 2, 0)`` becomes slices that hold for even batches only). Run at another
batch, such a graph may fail deep inside or return a wrong result without any error (three
samples in, two out). Where the user asked for a dynamic batch and capture got a restricted one
(``Capture.fixed_batch``), the export warns and checks its inputs' batch before anything else.
"""

from __future__ import annotations

import warnings

import torch
from torch import fx

from ..capture.batch import PICKING, Allowed
from ..capture.trace import Capture
from ..errors import InputError


def require_batch(x: torch.Tensor, allowed: Allowed, message: str) -> torch.Tensor:
    """``x`` itself where its batch is ``allowed``; otherwise :class:`InputError` (``message``)."""
    n = x.shape[0]
    ok = n == allowed if isinstance(allowed, int) else n % allowed[0] in allowed[1]
    if not ok:
        raise InputError(f"got a batch of {n}, but {message}")
    return x


def guard(module: fx.GraphModule, cap: Capture, model_name: str) -> None:
    """Make ``module`` check its batched inputs' batch size where ``cap`` restricted it."""
    allowed = cap.fixed_batch
    if allowed is None:
        return
    message = restricted_batch_message(cap, model_name)
    warnings.warn(f"chanprune: {message}", stacklevel=4)  # the caller of export
    graph = module.graph
    inputs = [
        n
        for n in graph.nodes
        if n.op == "placeholder" and n.name in cap.user_inputs and _batched(n.meta.get("val"))
    ]
    last = [n for n in graph.nodes if n.op == "placeholder"][-1] if inputs else None
    for node in inputs:
        with graph.inserting_after(last):
            checked = graph.call_function(require_batch, (node, allowed, message))
        node.replace_all_uses_with(checked, delete_user_cb=lambda user, c=checked: user is not c)
        last = checked
    module.recompile()


def restricted_batch_message(cap: Capture, model_name: str) -> str:
    """Which batches the graph holds for and why, naming the ops that pick along the batch."""
    allowed = cap.fixed_batch
    ops = [cap.where(n) for n in cap.graph.nodes if _picks_along_batch(n)]
    ops_text = f" ({'; '.join(ops[:3])} picks pieces along the batch)" if ops else ""
    if isinstance(allowed, int):
        return (
            f"{model_name} was exported for a batch of {allowed} only: torch.export fixed the "
            f"batch while tracing it{ops_text}, so the pruned graph works on exactly {allowed} "
            "samples. Export with example inputs of the batch size you will run it at, or "
            "write the model without per-sample Python (no loop over x.unbind(0))"
        )
    m, residues = allowed
    which = f"== {residues[0]}" if len(residues) == 1 else f"in {set(residues)}"
    return (
        f"{model_name} was exported for batch sizes n with n % {m} {which} only: a "
        f"decomposition torch.export made fixed the batch modulo {m}{ops_text}, so other "
        "batches would lose or misplace samples. Export with example inputs of the batch size "
        "you will run it at; to halve the batch, torch.split(x, [n - n // 2, n // 2]) or "
        "torch.chunk(x, 2) hold for every batch where torch.tensor_split does not"
    )


def _batched(val: object) -> bool:
    return isinstance(val, torch.Tensor) and val.dim() > 0


def _picks_along_batch(node: fx.Node) -> bool:
    """``node`` unbinds, splits, slices or selects along dim 0 (the batch)."""
    at = PICKING.get(node.target) if node.op == "call_function" else None
    x = node.args[0] if at is not None and node.args else None
    val = x.meta.get("val") if isinstance(x, fx.Node) else None
    if not _batched(val):
        return False
    dim = node.args[at] if len(node.args) > at else node.kwargs.get("dim", 0)
    if dim % val.dim() != 0:
        return False
    if node.target == torch.ops.aten.slice.Tensor:  # a whole-range slice picks nothing
        start, end = [*node.args[2:], None, None][:2]
        to_end = end is None or (isinstance(end, int) and end >= 1 << 62)
        return not (start in (None, 0) and to_end)
    return True
