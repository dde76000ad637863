"""Training IR -> functional IR without a second trace: the fast path of capture.

``torch.export`` gives the *training IR*; the rules read the functional ATen vocabulary that
``run_decompositions({})`` produces. On the zoo the two differ only in a handful of ops (in-place
activations and adds, ``batch_norm``, ``dropout``, ``flatten`` and a few spellings), and
``run_decompositions`` re-traces the whole program to get there, most of a cold capture
(docs/design.md, "Fast path"; benchmarks/studies/results/capture_paths.md). So this pass
rewrites those ops in place instead, graph in, graph out. It is deliberately narrow: any op not
in :data:`UNCHANGED` or the rewrites, or an in-place op whose mutation could be observed, makes it
return ``None``, and the caller falls back to ``run_decompositions`` (both paths are compared in
tests/test_capture.py).
"""

from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten

# Ops that run_decompositions({}) leaves unchanged (seen on the torchvision and timm zoos).
UNCHANGED = frozenset(
    f"aten.{n}"
    for n in (
        "_assert_tensor_metadata.default",
        "einsum.default",
        "index.Tensor",
        "reshape.default",
        "adaptive_avg_pool2d.default",
        "add.Tensor",
        "addmm.default",
        "avg_pool2d.default",
        "cat.default",
        "clamp_min.default",
        "conv2d.default",
        "conv_transpose2d.input",
        "div.Tensor",
        "expand.default",
        "gelu.default",
        "group_norm.default",
        "hardsigmoid.default",
        "hardswish.default",
        "hardtanh.default",
        "layer_norm.default",
        "leaky_relu.default",
        "linalg_vector_norm.default",
        "linear.default",
        "matmul.default",
        "max_pool2d.default",
        "mean.dim",
        "mul.Tensor",
        "permute.default",
        "relu.default",
        "rsqrt.default",
        "scaled_dot_product_attention.default",
        "select.int",
        "sigmoid.default",
        "silu.default",
        "slice.Tensor",
        "softmax.int",
        "split.Tensor",
        "split_with_sizes.default",
        "squeeze.dim",
        "stack.default",
        "sub.Tensor",
        "sym_size.int",
        "tanh.default",
        "transpose.int",
        "unbind.int",
        "unsqueeze.default",
        "view.default",
    )
)

# In-place ops whose functional form (same arguments) is in UNCHANGED.
INPLACE = {
    f"aten.{n}_.{o}": getattr(getattr(aten, n), o)
    for n, o in (
        ("add", "Tensor"),
        ("mul", "Tensor"),
        ("relu", "default"),
        ("silu", "default"),
        ("hardswish", "default"),
        ("hardsigmoid", "default"),
        ("hardtanh", "default"),
        ("leaky_relu", "default"),
        ("gelu", "default"),
        ("sigmoid", "default"),
    )
}
DROPOUT = frozenset({"aten.dropout.default", "aten.dropout_.default"})
REWRITTEN = frozenset(
    {
        "aten.batch_norm.default",
        "aten.flatten.using_ints",
        "aten.unflatten.int",
        "aten.chunk.default",
        "aten.swapaxes.default",
        "aten.contiguous.default",
    }
)


def functionalize(ep: torch.export.ExportedProgram) -> fx.Graph | None:
    """Rewrite ``ep``'s training-IR graph (in place) into the functional vocabulary, or return
    None (graph untouched) when it holds anything this pass does not vouch for.

    The rewrites: in-place ops (``relu_``, ``add_``) become functional where their input is a
    fresh, unaliased tensor nobody reads afterwards; ``batch_norm`` becomes
    ``_native_batch_norm_legit_no_training`` + ``getitem``; eval-mode ``dropout`` goes;
    ``flatten`` / ``unflatten`` become a ``view``, ``chunk`` a ``split``, ``swapaxes`` a
    ``transpose`` and ``contiguous`` a ``clone``. ``reshape``, which the rules read as ``view``,
    stays."""
    sig = ep.graph_signature
    if sig.buffers_to_mutate or sig.user_inputs_to_mutate or not _vetted(ep.graph):
        return None
    order = {n: i for i, n in enumerate(ep.graph.nodes)}
    safe: set[fx.Node] = set()  # in-place nodes already shown safe: their results are fresh
    for n in ep.graph.nodes:
        if str(n.target) in INPLACE:
            if not _inplace_is_safe(n, order, safe):
                return None
            safe.add(n)
    if any(_rewrite_blocked(n) for n in ep.graph.nodes):
        return None
    graph = ep.graph
    for node in list(graph.nodes):
        key = str(node.target)
        if key in INPLACE:
            _replace(node, INPLACE[key], node.args, node.kwargs)
        elif key in DROPOUT:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif key == "aten.batch_norm.default":
            _batch_norm(node)
        elif key in ("aten.flatten.using_ints", "aten.unflatten.int"):
            _flatten(node)
        elif key == "aten.contiguous.default":
            _contiguous(node)
        elif key == "aten.chunk.default":
            _chunk(node)
        elif key == "aten.swapaxes.default":
            _replace(node, aten.transpose.int, node.args, node.kwargs)
    graph.lint()
    return graph


def _vetted(graph: fx.Graph) -> bool:
    known = UNCHANGED | INPLACE.keys() | DROPOUT | REWRITTEN
    for n in graph.nodes:
        if n.op in ("placeholder", "output"):
            continue
        if n.op != "call_function":
            return False
        if n.target is operator.getitem or n.target is operator.mul:  # mul: of symbolic sizes
            continue
        if str(n.target) not in known:
            return False
    return True


def _fresh(node: object, safe: set[fx.Node]) -> bool:
    """The node's value is a new tensor that aliases nothing (so mutating it is private)."""
    if not isinstance(node, fx.Node) or node.op != "call_function":
        return False
    if node in safe:
        return True
    target = node.target
    if str(target) in INPLACE or str(target) in DROPOUT or target is operator.getitem:
        return False
    schema = getattr(target, "_schema", None)
    if schema is None or schema.is_mutable:
        return False
    return all(r.alias_info is None for r in schema.returns)


def _inplace_is_safe(node: fx.Node, order: dict[fx.Node, int], safe: set[fx.Node]) -> bool:
    """``op_(a, ...)`` may become ``op(a, ...)``: ``a`` is fresh and nobody reads it later or
    through an alias, so only the in-place node's own result carries the new value."""
    a = node.args[0] if node.args else None
    if not _fresh(a, safe) or any(isinstance(x, fx.Node) and x is a for x in node.args[1:]):
        return False
    for user in a.users:
        if user is node:
            continue
        if order[user] > order[node] or not _fresh(user, safe):
            return False
    return True


def _rewrite_blocked(node: fx.Node) -> bool:
    """Shapes of the rewrites below that this pass does not handle."""
    key = str(node.target)
    if key in DROPOUT:
        return bool(_arg(node, 2, "train", False))
    if key == "aten.batch_norm.default":
        training = _arg(node, 5, "training", True)
        return bool(training) or node.args[3] is None or node.args[4] is None
    if key in ("aten.flatten.using_ints", "aten.unflatten.int"):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return True
        return sum(not isinstance(s, int) for s in val.shape) > 1
    if key == "aten.chunk.default":
        return _chunk_size(node) is None
    if key == "aten.contiguous.default":
        fmt = _arg(node, 1, "memory_format", torch.contiguous_format)
        return fmt is not torch.contiguous_format
    return False


def _arg(node: fx.Node, i: int, name: str, default: object) -> object:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _replace(node: fx.Node, target: object, args: tuple, kwargs: dict) -> fx.Node:
    graph = node.graph
    with graph.inserting_after(node):
        new = graph.call_function(target, tuple(args), dict(kwargs))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return new


def _batch_norm(node: fx.Node) -> None:
    """batch_norm(x, w, b, mean, var, training=False, momentum, eps, cudnn) ->
    _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)[0]."""
    x, w, b, mean, var = node.args[:5]
    momentum = _arg(node, 6, "momentum", 0.1)
    eps = _arg(node, 7, "eps", 1e-5)
    graph = node.graph
    val = node.meta.get("val")
    with graph.inserting_before(node):
        bn = graph.call_function(
            aten._native_batch_norm_legit_no_training.default,
            (x, w, b, mean, var, momentum, eps),
        )
        out = graph.call_function(operator.getitem, (bn, 0))
    bn.meta = dict(node.meta)
    if isinstance(val, torch.Tensor):
        empty = val.new_empty((0,))
        bn.meta["val"] = (val, empty, empty)
    out.meta = dict(node.meta)
    node.replace_all_uses_with(out)
    graph.erase_node(node)


def _flatten(node: fx.Node) -> None:
    """flatten / unflatten -> reshape(x, shape), the one symbolic size (the batch) as -1:
    flatten's own semantics (a view where x's strides allow, else a copy). Not a view even
    where the traced x is contiguous: the fake tensors' strides after an element-wise op on
    operands of mixed layouts need not be the real ones (a roll times a channels-last map)."""
    shape = [s if isinstance(s, int) else -1 for s in node.meta["val"].shape]
    _replace(node, aten.reshape.default, (node.args[0], shape), {})


def _contiguous(node: fx.Node) -> None:
    """contiguous(x) -> clone(x, memory_format=contiguous_format), as the decomposition does."""
    _replace(node, aten.clone.default, (node.args[0],), {"memory_format": torch.contiguous_format})


def _chunk_size(node: fx.Node) -> int | None:
    """The split size ``chunk(x, chunks, dim)`` uses, where the dimension's size is known."""
    x = node.args[0]
    val = x.meta.get("val") if isinstance(x, fx.Node) else None
    chunks = _arg(node, 1, "chunks", None)
    dim = _arg(node, 2, "dim", 0)
    if not isinstance(val, torch.Tensor) or not isinstance(chunks, int) or chunks < 1:
        return None
    size = val.shape[dim]
    return -(-size // chunks) if isinstance(size, int) and size > 0 else None


def _chunk(node: fx.Node) -> None:
    """chunk(x, n, dim) -> split(x, ceil(size / n), dim): the same pieces."""
    dim = _arg(node, 2, "dim", 0)
    _replace(node, aten.split.Tensor, (node.args[0], _chunk_size(node), dim), {})
