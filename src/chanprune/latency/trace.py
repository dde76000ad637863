"""The ops one forward pass runs, as plain records a latency table can look up and replay.

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every ATen op a module runs
(eager modules, ``fx.GraphModule`` exports and ``torch.export`` programs alike), with the real
shapes, so the same trace describes the unpruned model and any export of it. Each record keeps
what it takes to rerun the op alone on fresh tensors of the same shapes (:func:`replay_args`),
which is how :mod:`chanprune.latency.table` measures it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from ..capture.trace import as_input_tuple, eval_mode

aten = torch.ops.aten

#: ops that only describe memory (views, metadata): they cost a dispatch, never a kernel
VIEWS = frozenset(
    {
        "aten.view.default",
        "aten._unsafe_view.default",
        "aten.reshape.default",
        "aten.permute.default",
        "aten.transpose.int",
        "aten.t.default",
        "aten.expand.default",
        "aten.slice.Tensor",
        "aten.select.int",
        "aten.squeeze.dim",
        "aten.squeeze.dims",
        "aten.unsqueeze.default",
        "aten.alias.default",
        "aten.detach.default",
        "aten.as_strided.default",
        "aten.split.Tensor",
        "aten.split_with_sizes.default",
        "aten.unbind.int",
        "aten.narrow.default",
        "aten.sym_size.int",
        "aten.lift_fresh.default",
    }
)

#: ops whose cost grows with MACs rather than with the bytes they touch
COMPUTE = frozenset(
    {
        "aten.convolution.default",
        "aten.mkldnn_convolution.default",
        "aten.addmm.default",
        "aten.mm.default",
        "aten.bmm.default",
        "aten.linear.default",
        "aten.matmul.default",
        "aten._scaled_dot_product_flash_attention_for_cpu.default",
        "aten._scaled_dot_product_efficient_attention.default",
        "aten._scaled_dot_product_flash_attention.default",
        "aten.baddbmm.default",
        "aten.einsum.default",
    }
)
COMPUTE_PREFIXES = ("aten.conv", "aten.cudnn_conv", "aten._convolution", "aten.scaled_dot_product")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor argument: its shape, dtype and whether it was contiguous."""

    shape: tuple[int, ...]
    dtype: str
    contiguous: bool

    def make(self, device: str = "cpu") -> torch.Tensor:
        """A fresh tensor like the recorded one: floats in [0.5, 1.5) (no NaN from a variance,
        no denormals), zero integers (valid indices)."""
        dtype = getattr(torch, self.dtype)
        if dtype.is_floating_point:
            t = torch.rand(self.shape, dtype=dtype, device=device) + 0.5
        else:
            t = torch.zeros(self.shape, dtype=dtype, device=device)
        if not self.contiguous and len(self.shape) == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t


@dataclass(frozen=True)
class OpCall:
    """One op a forward pass ran: its name, arguments (tensors as :class:`TensorSpec`) and the
    bytes it read and wrote. ``key`` identifies it in a latency table."""

    op: str
    args: tuple
    kwargs: tuple  # sorted (name, value) pairs
    bytes_in: int
    bytes_out: int

    @property
    def key(self) -> str:
        return f"{self.op}{self.args!r}{self.kwargs!r}"

    @property
    def kind(self) -> str:
        """``"view"`` (no kernel), ``"compute"`` (MAC-bound) or ``"memory"`` (byte-bound)."""
        if self.op in VIEWS:
            return "view"
        if self.op in COMPUTE or self.op.startswith(COMPUTE_PREFIXES):
            return "compute"
        return "memory"


def _spec(x: object) -> object:
    if isinstance(x, torch.Tensor):
        return TensorSpec(tuple(int(s) for s in x.shape), str(x.dtype).split(".")[-1], _dense(x))
    if isinstance(x, torch.dtype | torch.device | torch.layout | torch.memory_format):
        return ("torch", str(x).split(".")[-1]) if not isinstance(x, torch.device) else None
    return x


def _dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or x.dim() != 4


def _nbytes(tree: object) -> int:
    leaves, _ = tree_flatten(tree)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[OpCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls.append(
            OpCall(
                op=str(func),
                args=tuple(tree_map(_spec, list(args))),
                kwargs=tuple(sorted((k, _spec(v)) for k, v in kwargs.items())),
                bytes_in=_nbytes((args, kwargs)),
                bytes_out=_nbytes(out),
            )
        )
        return out


def op_trace(
    module: Callable[..., object], example_inputs: object, example_kwargs: dict | None = None
) -> list[OpCall]:
    """The ops one inference forward pass of ``module`` runs on ``example_inputs``, in order."""
    inputs = as_input_tuple(example_inputs)
    rec = _Recorder()
    ctx = eval_mode(module) if isinstance(module, torch.nn.Module) else contextlib.nullcontext()
    with ctx, torch.inference_mode(), rec:
        module(*inputs, **(example_kwargs or {}))
    return rec.calls


def node_call(node: object) -> OpCall | None:
    """The op call an ``fx`` node of a captured graph makes, from its recorded values (None for
    placeholders, outputs and nodes without a recorded value)."""
    if getattr(node, "op", None) != "call_function" or not isinstance(node.target, OpOverload):
        return None

    def val(a: object) -> object:
        return a.meta.get("val") if hasattr(a, "meta") else a

    args = tree_map(val, list(node.args))
    kwargs = tree_map(val, dict(node.kwargs))
    leaves, _ = tree_flatten((args, kwargs))
    if any(isinstance(x, torch.SymInt | torch.SymFloat) for x in leaves):
        return None
    out = node.meta.get("val")
    return OpCall(
        op=str(node.target),
        args=tuple(tree_map(_spec, args)),
        kwargs=tuple(sorted((k, _spec(v)) for k, v in kwargs.items())),
        bytes_in=_nbytes((args, kwargs)),
        bytes_out=_nbytes(out),
    )


def resolve_op(name: str) -> object:
    """The ATen overload called ``name`` (``"aten.add.Tensor"``)."""
    ns, op, overload = name.split(".")
    return getattr(getattr(getattr(torch.ops, ns), op), overload)


def replay_args(call: OpCall, device: str = "cpu") -> tuple[tuple, dict]:
    """Fresh arguments for running ``call`` alone: new tensors of the recorded shapes."""

    def build(x: object) -> object:
        if isinstance(x, TensorSpec):
            return x.make(device)
        if isinstance(x, tuple) and len(x) == 2 and x[0] == "torch":
            return getattr(torch, x[1])
        if isinstance(x, tuple | list):
            return [build(v) for v in x]
        return x

    args = tuple(build(a) for a in call.args)
    kwargs = {k: build(v) for k, v in call.kwargs}
    if device != "cpu" and "device" in dict(call.kwargs):
        kwargs["device"] = torch.device(device)
    return args, kwargs
