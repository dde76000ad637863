"""Activations in place: the export's last pass (a graph in, the same graph edited).

Capture makes the graph functional, so every ``ReLU(inplace=True)`` of the model comes back as an
out-of-place ``relu``, and the export would allocate a new tensor per activation where eager
PyTorch overwrites its input, which costs time on CPU (benchmarks/studies/results/inplace.md).
This pass makes an activation in-place again where nothing can observe the difference: its input
is the fresh result of an op in :data:`PRODUCERS` whose backward does not read that result, and
the activation is its only reader. So an export stays trainable as well as exact. The list is
explicit, not "any op returning a fresh tensor", because some backwards read their result
(``sigmoid``'s); were one missed, autograd would raise, not miscompute.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable

import torch
from torch import fx

aten = torch.ops.aten

#: functional activation -> its in-place twin (same arguments after ``self``)
INPLACE = {
    aten.relu.default: aten.relu_.default,
    aten.hardtanh.default: aten.hardtanh_.default,
    aten.silu.default: aten.silu_.default,
    aten.hardswish.default: aten.hardswish_.default,
    aten.hardsigmoid.default: aten.hardsigmoid_.default,
    aten.leaky_relu.default: aten.leaky_relu_.default,
    aten.gelu.default: aten.gelu_.default,
    aten.elu.default: aten.elu_.default,
    aten.mish.default: aten.mish_.default,
    aten.sigmoid.default: aten.sigmoid_.default,
    aten.tanh.default: aten.tanh_.default,
}

#: ops whose result is a new tensor that their backward does not read
PRODUCERS = frozenset(
    {
        aten.conv1d.default,
        aten.conv2d.default,
        aten.conv3d.default,
        aten.convolution.default,
        aten.conv_transpose1d.default,
        aten.conv_transpose2d.input,
        aten.conv_transpose3d.input,
        aten.linear.default,
        aten.addmm.default,
        aten.mm.default,
        aten.bmm.default,
        aten.matmul.default,
        aten.add.Tensor,
        aten.sub.Tensor,
        aten.mul.Tensor,
        aten.cat.default,
        aten.index_select.default,
        aten.gather.default,
        aten.index_add.default,
        aten.constant_pad_nd.default,
        aten.mean.dim,
    }
)

#: multi-output ops whose first result (via ``getitem``) is a new tensor their backward does
#: not read (it reads the input and the saved statistics)
NORMS = frozenset(
    {
        aten._native_batch_norm_legit_no_training.default,
        aten.native_layer_norm.default,
        aten.native_group_norm.default,
    }
)


def _fresh(node: object, extra: frozenset) -> bool:
    if not isinstance(node, fx.Node) or node.op != "call_function":
        return False
    if node.target in PRODUCERS or node.target in extra:
        return True
    if node.target is operator.getitem:
        src, i = node.args
        return i == 0 and isinstance(src, fx.Node) and src.target in NORMS
    return False


def inplace_activations(graph: fx.Graph, producers: Iterable[object] = ()) -> int:
    """Make each activation whose input is a private, fresh tensor in-place; returns how many.

    ``producers``: further call targets known to return a new tensor whose backward does not
    read it (the exporter's own ``gather_rows``)."""
    extra = frozenset(producers)
    done = 0
    for node in graph.nodes:
        twin = INPLACE.get(node.target) if node.op == "call_function" else None
        if twin is None or not node.args:
            continue
        x = node.args[0]
        if not _fresh(x, extra) or len(x.users) != 1:
            continue
        if any(a is x for a in node.args[1:]) or x in node.kwargs.values():
            continue
        node.target = twin
        done += 1
    return done


def undo_inplace(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with its in-place activations functional again: the pass undone, to
    measure what it saves (``benchmarks/studies/inplace.py``) and to check it changes no
    gradient."""
    functional = {v: k for k, v in INPLACE.items()}
    gm = copy.deepcopy(gm)
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in functional:
            n.target = functional[n.target]
    gm.recompile()
    return gm
