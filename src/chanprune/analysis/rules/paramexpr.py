"""Per-channel vectors computed in forward from parameters and buffers.

FrozenBatchNorm2d (every torchvision detector's backbone) computes its affine in forward:
``scale = w.view(1, -1, 1, 1) * (rv.view(1, -1, 1, 1) + eps).rsqrt()``,
``shift = b.view(...) - rm.view(...) * scale``, then ``x * scale + shift``. Such a vector is a
*parameter expression*: element-wise ops, casts and reshapes over state tensors (each with one
channel dimension, or a broadcast scalar), every value in it having at most one dimension of
size > 1, of one common length C. Element c then depends on element c of its sources only, so
slicing the sources along their channel dimension and recomputing equals slicing the result.

The binary-op rule (``elementwise.py``) treats such an operand like a parameter: the channels
it meets stay prunable (they were pinned as "a full-width untracked tensor"), liveness
evaluates its values, output-side masking zeroes the sources that make it zero (companions:
FrozenBN's weight and bias, like BatchNorm's) and the rewrite recomputes it from sliced
sources, so the export holds the smaller buffers.

A *group* is a connected set of expression nodes (FrozenBN's scale and shift share ``scale``);
its sources are sliced once, to one layout for every op that reads the group (the first
reader's channels plus whatever the others keep); a reader holding another layout takes a
slice or gather of the (C-element) vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from ..types import node_shape

aten = torch.ops.aten

# position-wise ops: element c of the result reads element c of each (broadcast) operand
_ELEMENTWISE = frozenset(
    (
        "add", "sub", "rsub", "mul", "div", "neg", "abs", "sqrt", "rsqrt", "reciprocal", "pow",
        "square", "exp", "log", "sigmoid", "tanh", "relu", "clamp", "clamp_min", "clamp_max",
        "maximum", "minimum", "sign", "_to_copy", "clone", "alias", "detach", "lift_fresh_copy",
    )
)  # fmt: skip
# on a tensor with at most one dimension of size > 1 these only add or drop size-1 dimensions
_RESHAPES = frozenset(
    ("view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "permute", "transpose", "t")
) | {"expand", "flatten"}
_SUMS = ("add", "sub", "rsub")  # zero where every operand is


def _op(node: fx.Node) -> str:
    return getattr(node.target, "__name__", "").split(".")[0]


def _channel_dim(shape: tuple[int, ...] | None) -> int | None:
    """The one dimension of size > 1, None if there is none; -1 if there are several."""
    if shape is None:
        return -1
    big = [d for d, s in enumerate(shape) if s != 1]
    return big[0] if len(big) == 1 else None if not big else -1


@dataclass(frozen=True)
class Expr:
    """A group of expression nodes: what a reader needs to rewrite one of them."""

    group: str  # the least of its node names: the key of its one layout, whoever finds it
    nodes: tuple[str, ...]  # its computed nodes, inputs first
    leaves: tuple[tuple[str, int | None], ...]  # (qualified name, channel dim; None: broadcast)
    channels: int  # C


class _Finder:
    """Recognises expression nodes and their groups in one capture (memoised per call)."""

    def __init__(self, capture) -> None:
        self.capture = capture
        self.memo: dict[str, bool] = {}

    def leaf(self, a: fx.Node) -> str | None:
        return self.capture.state_names.get(a.name) if a.op == "placeholder" else None

    def is_expr(self, node: fx.Node) -> bool:
        if node.name in self.memo:
            return self.memo[node.name]
        self.memo[node.name] = False  # while deciding (no cycles in a graph, but be safe)
        ok = (
            node.op == "call_function"
            and (_op(node) in _ELEMENTWISE or _op(node) in _RESHAPES)
            and isinstance(node.meta.get("val"), torch.Tensor)
            and _channel_dim(node_shape(node)) != -1
            and not (_op(node) == "_to_copy" and set(node.kwargs) - {"dtype"})
            and bool(node.all_input_nodes)
            and all(self.leaf(a) is not None or self.is_expr(a) for a in node.all_input_nodes)
        )
        self.memo[node.name] = ok
        return ok

    def group(self, start: fx.Node) -> Expr | None:
        """The group around ``start``, or None where it is no per-channel parameter vector."""
        if not self.is_expr(start):
            return None
        shape = node_shape(start)
        cdim = _channel_dim(shape)
        if cdim is None:
            return None
        channels = shape[cdim]
        seen, todo = {start.name: start}, [start]
        while todo:
            n = todo.pop()
            for m in (*n.all_input_nodes, *n.users):
                if m.name not in seen and m.op == "call_function" and self.is_expr(m):
                    seen[m.name] = m
                    todo.append(m)
        nodes = _topological(seen)
        leaves: dict[str, int | None] = {}
        for n in nodes:
            d = _channel_dim(node_shape(n))
            if d is not None and node_shape(n)[d] != channels:
                return None
            for a in n.all_input_nodes:
                q = self.leaf(a)
                if q is None:
                    continue
                if any(u.name not in seen for u in a.users):
                    return None  # the source is read elsewhere too: it cannot be sliced
                t = self.capture.tensors[q]
                ld = _channel_dim(tuple(t.shape))
                if ld == -1 or (ld is not None and t.shape[ld] != channels):
                    return None
                leaves[q] = ld
        if all(d is None for d in leaves.values()):
            return None
        return Expr(min(seen), tuple(n.name for n in nodes), tuple(leaves.items()), channels)


def _topological(nodes: dict[str, fx.Node]) -> list[fx.Node]:
    """``nodes`` (a group) inputs first, in an order that does not depend on where the walk
    that found them started."""
    out: list[fx.Node] = []
    done: set[str] = set()

    def visit(n: fx.Node) -> None:
        done.add(n.name)
        for a in n.all_input_nodes:
            if a.name in nodes and a.name not in done:
                visit(a)
        out.append(n)

    for name in sorted(nodes):
        if name not in done:
            visit(nodes[name])
    return out


def find(capture, node: object) -> Expr | None:
    """The expression group ``node`` belongs to, if it is a per-channel parameter vector."""
    if not isinstance(node, fx.Node):
        return None
    return _Finder(capture).group(node)


def _closure(node: fx.Node, expr: Expr) -> list[fx.Node]:
    """The expression nodes ``node`` is computed from (itself included), inputs first."""
    members, found, todo = set(expr.nodes), {node.name: node}, [node]
    while todo:
        for a in todo.pop().all_input_nodes:
            if a.name in members and a.name not in found:
                found[a.name] = a
                todo.append(a)
    return [found[n] for n in expr.nodes if n in found]


def _members(start: fx.Node, expr: Expr) -> list[fx.Node]:
    """Every node of the group ``start`` belongs to, inputs first (a walk, not a graph scan)."""
    names, found, todo = set(expr.nodes), {start.name: start}, [start]
    while todo:
        n = todo.pop()
        for m in (*n.all_input_nodes, *n.users):
            if m.name in names and m.name not in found:
                found[m.name] = m
                todo.append(m)
    return [found[n] for n in expr.nodes if n in found]


def _leaf_dims(expr: Expr) -> dict[str, int | None]:
    return dict(expr.leaves)


# masking: which sources to zero so the vector is zero -------------------------------------------
def _zero_if(n: fx.Node) -> tuple[str, list[fx.Node]] | None:
    """When ``n`` is zero: ("all", operands) all of them are, ("any", factors) one of them
    is; None when no operand's zero makes it zero (``x + 1``, ``exp``)."""
    op, tensors = _op(n), [a for a in n.args if isinstance(a, fx.Node)]
    scalars = [a for a in n.args[1:] if isinstance(a, int | float) and not isinstance(a, bool)]
    if op in _SUMS:
        return None if any(s != 0 for s in scalars) else ("all", tensors)
    if op == "mul":
        return "any", tensors
    if op == "div":  # a zero numerator (the denominator left as it is)
        return ("all", [n.args[0]]) if isinstance(n.args[0], fx.Node) else None
    return ("all", tensors) if len(tensors) == 1 and _keeps_zero(n) else None


def zeroing(capture, node: fx.Node, expr: Expr) -> list[tuple[str, int]] | None:
    """Sources (name, channel dim) whose zero makes ``node`` zero in every channel they cover,
    or None where no choice does. A product needs one zero factor: the one whose zero
    silences most of the group (FrozenBN's shift ``b - rm * w * rsqrt(rv)``: the weight,
    which zeroes the scale too, as BatchNorm's companions do)."""
    members, dims = set(expr.nodes), _leaf_dims(expr)
    group = _members(node, expr)

    def sources(n: fx.Node) -> set[str] | None:
        if n.name not in members:
            q = capture.state_names.get(n.name)
            return {q} if q is not None and dims.get(q) is not None else None
        rule = _zero_if(n)
        if rule is None:
            return None
        parts = [sources(a) for a in rule[1]]
        if rule[0] == "all":
            return None if any(p is None for p in parts) else set().union(*parts)
        options = [p for p in parts if p is not None]
        return max(options, key=lambda p: (_silenced(group, p, capture), -len(p)), default=None)

    found = sources(node)
    return None if found is None else [(q, dims[q]) for q in sorted(found)]


def _silenced(group: list[fx.Node], zeroed: set[str], capture) -> int:
    """How many group nodes are zero once the sources ``zeroed`` are (structurally)."""
    zero = {a for a in capture.state_names if capture.state_names[a] in zeroed}
    for n in group:
        rule = _zero_if(n)
        if rule is not None and (all if rule[0] == "all" else any)(a.name in zero for a in rule[1]):
            zero.add(n.name)
    return len(zero & {n.name for n in group})


_KEEPS_ZERO: dict[tuple, bool] = {}


def _keeps_zero(n: fx.Node) -> bool:
    """f(0) == 0 for a one-tensor op (reshapes and casts trivially; others evaluated)."""
    if _op(n) in _RESHAPES:
        return True
    key = (str(n.target), repr(n.args[1:]), repr(sorted(n.kwargs.items())))
    if key not in _KEEPS_ZERO:
        try:
            out = n.target(torch.zeros(1), *n.args[1:], **n.kwargs)
            _KEEPS_ZERO[key] = bool((out == 0).all())
        except Exception:
            _KEEPS_ZERO[key] = False
    return _KEEPS_ZERO[key]


# liveness: the vector's values --------------------------------------------------------------------
def value(node: fx.Node, expr: Expr, lv) -> torch.Tensor:
    """``node``'s value with the liveness' tensors (the current, masked weights)."""
    key = ("paramexpr", node.name)
    if key not in lv.cache:
        env: dict[str, torch.Tensor] = {}

        def arg(a: object) -> object:
            if isinstance(a, fx.Node):
                return env[a.name] if a.name in env else lv.t(a)
            if isinstance(a, list | tuple):
                return type(a)(arg(x) for x in a)
            return a

        with torch.no_grad():
            for n in _closure(node, expr):
                kwargs = {k: arg(v) for k, v in n.kwargs.items()}
                env[n.name] = n.target(*arg(tuple(n.args)), **kwargs)
        lv.cache[key] = env[node.name]
    return lv.cache[key]


# rewriting ---------------------------------------------------------------------------------------
def reput(rw, name: str, tensor: torch.Tensor) -> fx.Node:
    """``rw.put``, or replace the value where an unchanged copy of the op that reads the
    parameter already emitted it in full (that copy is then dead and removed)."""
    node = rw._attrs.get(name)
    if node is None:
        return rw.put(name, tensor)
    tensor = tensor.detach().clone().contiguous()
    if name in rw.capture.parameter_names:
        tensor = torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point())
    rw.state[name] = tensor
    return node


def _readers(rw, start: fx.Node, expr: Expr) -> tuple[list[fx.Node], bool]:
    """The ops reading the group as an operand, and whether they are all its users outside
    it (else an op reads it unchanged, in full, and its sources must stay whole)."""
    members = set(expr.nodes)
    readers: dict[str, fx.Node] = {}
    whole = True
    for n in _members(start, expr):
        for u in n.users:
            if u.name in members:
                continue
            info = rw.analysis.kinds.get(u.name)
            exprs = info.get("exprs", {}) if isinstance(info, dict) else {}
            reads = [i for i, a in enumerate(u.args) if a is n]
            if (
                reads
                and n not in u.kwargs.values()
                and all(i in exprs and exprs[i].group == expr.group for i in reads)
                and not info["full"]
            ):
                readers[u.name] = u
            else:
                whole = False
    return list(readers.values()), whole


def layout(rw, node: fx.Node, expr: Expr, target: np.ndarray) -> np.ndarray:
    """The layout of ``node``'s group: fixed by its first reader (``target``) plus every channel
    the other readers keep; the original order in full where something reads it unchanged."""
    memo = rw.exprs.get(expr.group)
    if memo is None:
        readers, sliceable = _readers(rw, node, expr)
        if sliceable:
            extra = [rw.live.kept(r) for r in readers]
            rest = np.setdiff1d(np.concatenate([target, *extra]), target)
            lay = np.concatenate([np.asarray(target, dtype=np.int64), rest.astype(np.int64)])
        else:
            lay = np.arange(expr.channels, dtype=np.int64)
        memo = rw.exprs[expr.group] = {"layout": lay, "sliced": sliceable, "nodes": {}}
    return memo["layout"]


def operand(rw, node: fx.Node, expr: Expr, target: np.ndarray) -> fx.Node:
    """``node`` (an expression) holding the channels ``target`` (a subset of the group's
    layout) along its channel dimension."""
    lay = layout(rw, node, expr, target)
    memo = rw.exprs[expr.group]
    new = _emit(rw, node, expr, lay, memo["nodes"]) if memo["sliced"] else rw.map_arg(node)
    cdim = _channel_dim(node_shape(node))
    where = {int(c): i for i, c in enumerate(lay.tolist())}
    idx = np.array([where[int(c)] for c in np.asarray(target).tolist()], dtype=np.int64)
    if np.array_equal(idx, np.arange(len(lay))):
        return new
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return rw.call(aten.slice.Tensor, (new, cdim, int(idx[0]), int(idx[0] + len(idx))))
    return rw.call(aten.index_select.default, (new, cdim, rw.index(idx)))


def _emit(rw, node: fx.Node, expr: Expr, lay: np.ndarray, done: dict[str, fx.Node]) -> fx.Node:
    """Recompute ``node`` from its sources sliced to ``lay`` (each source sliced once)."""
    dims, idx = _leaf_dims(expr), torch.from_numpy(np.asarray(lay, dtype=np.int64))

    def arg(a: object) -> object:
        if isinstance(a, fx.Node):
            if a.name in done:
                return done[a.name]
            q = rw.capture.state_names[a.name]
            if dims[q] is None:
                return rw.param_node(a)
            done[a.name] = reput(rw, q, rw.live.tensors[q].detach().index_select(dims[q], idx))
            return done[a.name]
        if isinstance(a, list | tuple):
            return type(a)(arg(x) for x in a)
        return a

    for n in _closure(node, expr):
        if n.name in done:
            continue
        if _op(n) in _RESHAPES:
            shape = list(node_shape(n))
            cdim = _channel_dim(tuple(shape))
            if cdim is not None:
                shape[cdim] = len(lay)
            done[n.name] = rw.call(aten.reshape.default, (arg(n.args[0]), shape))
        else:
            kwargs = {k: arg(v) for k, v in n.kwargs.items()}
            done[n.name] = rw.call(n.target, arg(tuple(n.args)), kwargs)
    return done[node.name]
