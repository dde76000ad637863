"""Multi-head attention: q, k and v split into heads, attended, merged back.

The core is ``scaled_dot_product_attention`` or the written-out ``q @ k.transpose(-2, -1)`` ...
``softmax`` ... ``@ v`` (Swin). From it (:func:`match`) each of q, k, v is traced back through
moves (permute/transpose/select/copies), scalings by a constant, an optional split of a fused
projection (timm's ``qkv.unbind``), an optional rotary embedding (``x * cos + rotate_half(x) *
sin``, q and k) and an optional key/value head repeat (grouped-query attention) to the view that
splits a projection's channels into (heads, head_dim). The output's ``transpose(1, 2).reshape(...,
D)`` ends it. Everything in between is folded into that last node (the written-out form keeps
its score ops, between the two matmuls, as they are), so the projections' channels stay
prunable, exactly:

- q/k: head h's score is ``sum_u q_hu . k_gu`` over units u (one channel, or the pair
  (u, u + d/2) that a rotary embedding rotates together), g = h's key/value head. A unit whose
  q or k part is zero adds nothing, so its non-zero partner is not needed either.
- v: output channel (h, j) is ``attn_h @ v_gj``: zero where v is, needed where demanded.
- A head whose output nobody reads is dropped whole (q, its mask rows, and k/v heads no
  remaining q head uses); in the written-out form every head stays, its score ops untouched.

Every head keeps the same width (SDPA needs it), padded with units whose product is zero; the
original ``1/sqrt(d)`` scale is passed explicitly. Patterns that do not match (a hand-written
softmax, partial rotary) leave the splitting view a barrier.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from ..types import ABSORBED, Axis, FlowState, node_shape
from .base import Rule
from .registry import register

ATTENTION = "attention"
SCORE = "attention-score"  # kinds[] mark of the written-out form's q @ k^T
aten = torch.ops.aten

_MOVES = ("permute", "transpose", "clone", "contiguous", "alias", "select", "unsqueeze", "squeeze")
_SCALES = ("mul", "div")
_SPLITS = ("unbind", "split", "split_with_sizes", "chunk")
_VIEWS = ("view", "_unsafe_view", "reshape")
_SDPA = "scaled_dot_product_attention"
_SEARCH = 64  # nodes searched forward from a splitting view for its SDPA


@dataclass
class Operand:
    """One of q, k, v: the projection output it comes from and where its channels land."""

    src: fx.Node  # (B, L, C), channel axis last
    index: np.ndarray  # (heads, head_dim): position in ``src`` of each head channel
    scales: tuple[tuple[object, float], ...] = ()  # (mul or div, constant) on the way
    tokens_first: bool = False  # ``src`` is (L, B, C), as in torch.nn.MultiheadAttention


@dataclass
class Heads:
    """A folded attention: kinds[merge] = (ATTENTION, Heads)."""

    q: Operand
    k: Operand
    v: Operand
    sdpa: fx.Node  # SDPA, or the score matmul q @ k^T of the written-out form
    rotary: tuple[fx.Node, fx.Node] | None  # cos, sin, each (B or 1, 1, L, head_dim)
    merge: fx.Node | None = None
    value: fx.Node | None = None  # the written-out form's probabilities @ v
    moves: tuple[fx.Node, ...] = ()  # permute/transpose from (B, H, L, d) to (..., H, d)

    @property
    def manual(self) -> bool:
        return self.value is not None

    @property
    def heads(self) -> int:
        return self.q.index.shape[0]

    @property
    def group(self) -> np.ndarray:
        """The key/value head each q head reads (``h // (H / H_kv)``)."""
        return np.arange(self.heads) // (self.heads // self.k.index.shape[0])

    def units(self) -> np.ndarray:
        """(units, members) head-dim positions scored together: pairs under rotary."""
        d = self.q.index.shape[1]
        if self.rotary is None:
            return np.arange(d)[:, None]
        return np.stack([np.arange(d // 2), np.arange(d // 2) + d // 2], 1)


def _name(node: object) -> str:
    return getattr(getattr(node, "target", None), "__name__", "").split(".")[0]


def _is(node: object, *names: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and _name(node) in names


def _arg(node: fx.Node, i: int, key: str, default: object = None) -> object:
    return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)


# matching ------------------------------------------------------------------------------------
def _repeat(x: fx.Node, nodes: list[fx.Node]) -> tuple[fx.Node, int]:
    """Undo a key/value head repeat ``expand(unsqueeze(y, 2)).reshape(B, H, L, d)``."""
    if not _is(x, *_VIEWS):
        return x, 1
    y, chain = x.args[0], [x]
    if _is(y, "clone"):
        chain.append(y)
        y = y.args[0]
    if not _is(y, "expand"):
        return x, 1
    chain.append(y)
    u = _past_noop_slices(y.args[0], chain)
    if not _is(u, "unsqueeze") or u.args[1] % 5 != 2:
        return x, 1
    chain.append(u)
    src = _past_noop_slices(u.args[0], chain)  # HF's [:, :, None, :, :]
    shape, rep_shape = node_shape(src), node_shape(y)
    if shape is None or len(shape) != 4 or rep_shape[:2] + rep_shape[3:] != shape[:2] + shape[2:]:
        return x, 1
    nodes.extend(chain)
    return src, rep_shape[2]


def _noop_slice(x: object) -> bool:
    """A slice that keeps everything (``t[:, :]``, or a symbolic size's full range)."""
    return (
        _is(x, "slice")
        and node_shape(x) == node_shape(x.args[0])
        and _arg(x, 2, "start") in (0, None)
    )


def _past_noop_slices(x: object, chain: list[fx.Node]) -> object:
    while _noop_slice(x):
        chain.append(x)
        x = x.args[0]
    return x


def _rotary(x: fx.Node, nodes: list[fx.Node]) -> tuple[fx.Node, fx.Node, fx.Node] | None:
    """``y * cos + cat([-y[..., d/2:], y[..., :d/2]], -1) * sin`` -> (y, cos, sin)."""
    if not _is(x, "add") or len(x.args) != 2 or not all(_is(a, "mul") for a in x.args):
        return None
    for plain, turned in (x.args, x.args[::-1]):
        for y, cos in (plain.args, plain.args[::-1]):
            for cat, sin in (turned.args, turned.args[::-1]):
                found = _rotate_half(cat, y)
                if found is not None and isinstance(cos, fx.Node) and isinstance(sin, fx.Node):
                    nodes.extend([x, plain, turned, *found])
                    return y, cos, sin
    return None


def _rotate_half(cat: object, y: object) -> list[fx.Node] | None:
    if not _is(cat, "cat") or not isinstance(y, fx.Node):
        return None
    shape = node_shape(y)
    if shape is None or len(cat.args) < 2 or cat.args[1] % len(shape) != len(shape) - 1:
        return None
    parts = cat.args[0]
    if len(parts) != 2 or not _is(parts[0], "neg"):
        return None
    hi, lo, half = parts[0].args[0], parts[1], shape[-1] // 2
    for s, start, end in ((hi, half, shape[-1]), (lo, 0, half)):
        if not _is(s, "slice") or s.args[0] is not y or s.args[1] % len(shape) != len(shape) - 1:
            return None
        if s.args[2] != start or min(s.args[3], shape[-1]) != end:
            return None
    return [cat, parts[0], hi, lo]


def _path(x: fx.Node, nodes: list[fx.Node], scales: list) -> tuple[fx.Node, list[fx.Node]] | None:
    """Back from an SDPA operand through moves, constant scalings and splits to the splitting
    view. Returns (view, the moves and splits from the view forward to the operand); ``nodes``
    gains every node passed, ``scales`` the (op, constant) of each scaling."""
    path = []
    while True:
        if _is(x, *_SCALES) and isinstance(x.args[1], int | float) and len(x.args) == 2:
            nodes.append(x)
            scales.append((x.target, x.args[1]))
            x = x.args[0]
        elif _is(x, *_MOVES) or _noop_slice(x):
            path.append(x)
            x = x.args[0]
        elif x.op == "call_function" and x.target is operator.getitem and _is(x.args[0], *_SPLITS):
            path.extend([x, x.args[0]])
            x = x.args[0].args[0]
        elif _is(x, *_VIEWS) and _splits_channels(x):
            path.append(x)
            nodes.extend(path)
            return x, path[::-1]
        elif _is(x, *_VIEWS) and len(path) < _SEARCH:  # heads merged with the batch, as
            path.append(x)  # torch.nn.MultiheadAttention does
            x = x.args[0]
        else:
            return None


def _splits_channels(view: fx.Node) -> bool:
    """A view of a (T0, T1, C) tensor into (T0, T1, ..., d): the channels into heads."""
    a, b = node_shape(view.args[0]), node_shape(view)
    return a is not None and len(a) == 3 and len(b) > 3 and b[:2] == a[:2]


_STAND_IN = (2, 3)  # the sizes of the source's two leading dims in the replay


def _replay(node: fx.Node, value: object, real: tuple[int, int], small: tuple[int, int]) -> object:
    """Apply a view/move/split node to ``value``, the stand-in of its input."""
    if node.target is operator.getitem:
        return value[node.args[1]]
    args = [value, *node.args[1:]]
    if _is(node, *_VIEWS):  # as reshape: the replay skips the copies a view may rely on
        return value.reshape(_stand_in_shape(node_shape(node), real, small))
    if _is(node, "clone", "contiguous", "alias") or _noop_slice(node):
        return value
    return node.target(*args, **node.kwargs)


def _stand_in_shape(
    shape: tuple[int, ...], real: tuple[int, int], small: tuple[int, int]
) -> list[int]:
    """A view's shape with the source's leading sizes ``real`` replaced by the stand-in's,
    each taken from the first dim it divides (a wrong guess fails the checks in _index)."""
    out, left = [], [0, 1]
    for n in shape:
        size = 1
        for i in list(left):
            if real[i] > 1 and n % real[i] == 0:
                n //= real[i]
                size *= small[i]
                left.remove(i)
        out.append(n * size)
    return out


def _index(view: fx.Node, path: list[fx.Node]) -> tuple[np.ndarray, bool] | None:
    """(heads, head_dim) -> channel of the view's input, by replaying the path on indices.

    The stand-in has batch 2 and 3 tokens so that a move mixing them up would show."""
    src = node_shape(view.args[0])
    if src is None or len(src) != 3 or (src[0] == src[1] and len(path) > 1 + _n_moves(path)):
        return None  # two equal leading sizes cannot be told apart in a merged view
    c = src[-1]
    s0, s1 = (s if r > 1 else 1 for s, r in zip(_STAND_IN, src[:2], strict=True))
    value = torch.arange(s0 * s1 * c).reshape(s0, s1, c)
    try:
        for n in path:
            value = _replay(n, value, src[:2], (s0, s1))
    except Exception:
        return None
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        return None
    where = (value // c).numpy()
    i = np.arange(value.shape[0])[:, None, None, None]
    j = np.arange(value.shape[2])[None, None, :, None]
    # (B, H, L, d) with B, L the source's dims 0, 1 in this order or the other
    same = value.shape[0::2] == (s0, s1) and (where == i * s1 + j).all()
    if not same and not (value.shape[0::2] == (s1, s0) and (where == j * s1 + i).all()):
        return None
    if s0 == 1 or s1 == 1:  # a size-1 dim: which is the batch cannot be told; the real shapes
        same = node_shape(path[-1])[0::2] == src[:2]  # decide (equal sizes: the order kept)
    index = (value[0, :, 0, :] % c).numpy().astype(np.int64)
    if not (value % c == torch.from_numpy(index)[None, :, None, :]).all():
        return None
    return index, not same


def _n_moves(path: list[fx.Node]) -> int:
    return sum(not _is(n, *_VIEWS) for n in path)


def _operand(
    x: object, nodes: list[fx.Node], k_or_v: bool, rotary: list
) -> tuple[Operand, fx.Node, int] | None:
    if not isinstance(x, fx.Node) or (shape := node_shape(x)) is None or len(shape) != 4:
        return None
    rep = 1
    if k_or_v:
        x, rep = _repeat(x, nodes)
    if rotary is not None:
        found = _rotary(x, nodes)
        if found is not None:
            x, cos, sin = found
            rotary.append((cos, sin))
    scales: list = []
    walked = _path(x, nodes, scales)
    if walked is None:
        return None
    view, path = walked
    found = _index(view, path)
    if found is None:
        return None
    return Operand(view.args[0], found[0], tuple(scales), found[1]), view, rep


def _is_core(node: fx.Node) -> bool:
    """SDPA, or a score matmul ``q @ k.transpose(-2, -1)``."""
    if _is(node, _SDPA):
        return True
    k_t = node.args[1] if _is(node, "matmul") and len(node.args) == 2 else None
    return _is(k_t, "transpose") and sorted(d % 4 for d in k_t.args[1:3]) == [2, 3]


def _find(start: fx.Node, hit: Callable[[fx.Node], bool]) -> fx.Node | None:
    """The first node downstream of ``start`` that ``hit`` accepts (breadth first, bounded)."""
    seen, todo = {start}, deque([start])
    while todo and len(seen) < _SEARCH:
        node = todo.popleft()
        for u in node.users:
            if hit(u):
                return u
            if u not in seen:
                seen.add(u)
                todo.append(u)
    return None


def _value_matmul(score: fx.Node) -> fx.Node | None:
    """The written-out form's ``probabilities @ v``: the matmul downstream of the score whose
    first operand descends from it (through the score ops: scale, bias, softmax, ...)."""
    node = _find(score, lambda n: _is(n, "matmul"))
    if node is None or len(node.args) != 2:
        return None
    seen, todo = set(), deque([node.args[0]])
    while todo and len(seen) < 8 * _SEARCH:  # breadth first: a mask's own graph can be long
        n = todo.popleft()
        if n is score:
            return node
        if isinstance(n, fx.Node) and n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return None


def _merge(core: fx.Node, nodes: list[fx.Node]) -> tuple[fx.Node, tuple[fx.Node, ...]] | None:
    """The output's ``[view] -> moves -> reshape(..., H * d)``, the moves leaving (heads,
    head_dim) last: ``transpose(1, 2)`` (Hugging Face, timm), or MultiheadAttention's
    ``permute(2, 0, 1, 3)`` with tokens and batch merged by the reshape. Returns (the merging
    reshape, the moves)."""
    shape = node_shape(core)
    node = _single_user(core)
    if _is(node, *_VIEWS) and node_shape(node) == shape:
        nodes.append(node)
        node = _single_user(node)
    labels, moves = ["B", "H", "L", "D"], []
    while _is(node, "permute", "transpose", "clone", "contiguous"):
        if _is(node, "permute"):
            labels = [labels[d % 4] for d in node.args[1]]
        elif _is(node, "transpose"):
            a, b = (d % 4 for d in node.args[1:3])
            labels[a], labels[b] = labels[b], labels[a]
        nodes.append(node)
        moves.append(node)
        node = _single_user(node)
    if not _is(node, *_VIEWS) or labels[2:] != ["H", "D"] or not moves:
        return None
    moved = node_shape(moves[-1])
    out = node_shape(node)
    lead = len(moved) - 1 - len(out)  # leading dims the reshape merges into the first one
    if out[-1] != shape[1] * shape[3] or lead not in (0, 1):
        return None
    if out[:-1] != (int(np.prod(moved[: lead + 1])), *moved[lead + 1 : -2]):
        return None
    return node, tuple(moves)


def _single_user(node: fx.Node) -> fx.Node | None:
    users = [u for u in node.users if not _is(u, "_assert_tensor_metadata")]
    return users[0] if len(users) == 1 and users[0].op == "call_function" else None


def match(split: fx.Node, ax: Axis, st: FlowState) -> tuple[list[fx.Node], Heads] | None:
    """The folded attention that the view ``split`` (splitting channels into heads) begins.

    Returns (absorbed nodes with the merging reshape last, Heads), or None where anything
    differs from the pattern, a node in it is read from outside it, or it was seen already."""
    if ax.dim != len(node_shape(split.args[0])) - 1:
        return None
    sdpa = _find(split, _is_core)
    value = None
    if _is(sdpa, "matmul"):  # written out: q @ k^T ... @ v
        value, k_t = _value_matmul(sdpa), sdpa.args[1]
        if value is None or len(node_shape(k_t)) != 4:
            return None
        operands = [sdpa.args[0], k_t.args[0], value.args[1]]
    elif sdpa is None or len(sdpa.args) < 3 or _arg(sdpa, 4, "dropout_p", 0.0):
        return None
    else:
        operands = list(sdpa.args[:3])
    nodes: list[fx.Node] = [k_t] if value is not None else []
    rotary: list = []
    found = [_operand(operands[i], nodes, i > 0, rotary if i < 2 else None) for i in range(3)]
    if any(f is None for f in found) or split not in [f[1] for f in found]:
        return None
    (q, _, rq), (k, _, rk), (v, _, rv) = found
    if sdpa.kwargs.get("enable_gqa") and rk == rv == 1 and k.index.shape[0]:
        rk = rv = q.index.shape[0] // k.index.shape[0]  # SDPA repeats the kv heads itself
    if rq != 1 or rk != rv or len(rotary) not in (0, 2) or not _shapes_fit(q, k, v, rk):
        return None
    if rotary and (rotary[0] != rotary[1] or not _rotary_fits(rotary[0], q)):
        return None
    merged = _merge(value if value is not None else sdpa, nodes)
    if merged is None:
        return None
    merge, moves = merged
    absorbed = set(nodes) | {value if value is not None else sdpa}
    absorbed |= {u for n in absorbed for u in n.users if _is(u, "_assert_tensor_metadata")}
    inside = absorbed | {merge, sdpa}
    for n in absorbed:
        if any(u not in inside for u in n.users):
            return None
        if n is not split and n.name in st.axes:
            return None
    outside = [a for a in sdpa.all_input_nodes if a not in absorbed]
    outside += list(rotary[0]) if rotary else []
    if any(st.axis(a) is not None for a in outside):
        return None
    heads = Heads(q, k, v, sdpa, rotary[0] if rotary else None, merge, value, moves)
    return [*sorted(absorbed, key=_order(split)), merge], heads


def _order(split: fx.Node):
    nodes = {n: i for i, n in enumerate(split.graph.nodes)}
    return lambda n: nodes[n]


def _shapes_fit(q: Operand, k: Operand, v: Operand, rep: int) -> bool:
    (hq, dq), (hk, dk), (hv, _) = q.index.shape, k.index.shape, v.index.shape
    return dq == dk and hk == hv and hq == hk * rep


def _rotary_fits(cs: tuple[fx.Node, fx.Node], q: Operand) -> bool:
    d = q.index.shape[1]
    shapes = [node_shape(n) for n in cs]
    return d % 2 == 0 and all(
        s is not None and 2 <= len(s) <= 4 and s[-1] == d and (len(s) < 4 or s[1] == 1)
        for s in shapes
    )


def is_attention(kind: object) -> bool:
    return isinstance(kind, tuple) and kind[0] == ATTENTION


def fold(found: tuple[list[fx.Node], Heads], st: FlowState) -> None:
    """Absorb the pattern into its merging reshape; kinds[merge] = (ATTENTION, Heads)."""
    chain, heads = found
    for n in chain[:-1]:
        st.kinds[n.name] = ABSORBED
        st.axes[n.name] = None
    st.kinds[chain[-1].name] = (ATTENTION, heads)
    if heads.manual:
        st.kinds[heads.sdpa.name] = (SCORE, heads)


def _heads(merge: fx.Node, an) -> Heads:
    return an.kinds[merge.name][1]


def _tracked(op: Operand, axis) -> Axis | None:
    """The source's channel axis, if it is tracked along its last dimension."""
    ax = axis(op.src)
    return ax if ax is not None and ax.dim == len(node_shape(op.src)) - 1 else None


def flow(merge: fx.Node, st: FlowState) -> None:
    a = _heads(merge, st)
    for op in (a.q, a.k, a.v):  # a source tracked along another dim is read in full
        ax = st.axis(op.src)
        if ax is not None and _tracked(op, st.axis) is None:
            st.untracked(ax, f"reaches {st.where(a.sdpa)}: attention heads along another dim")
    ax = _tracked(a.v, st.axis)
    v = a.v.index[a.group].reshape(-1)
    dim = len(node_shape(merge)) - 1
    if ax is None:  # values from an untracked tensor: the output is a fresh segment
        st.axes[merge.name] = Axis(dim, st.fresh(len(v)), np.full(len(v), -1, dtype=np.int64))
    elif len(a.group) > a.k.index.shape[0]:
        # grouped-query: q heads sharing a v head output copies of its channels; each copy is
        # its own channel, so a reader can drop one head's copy and keep another's
        st.axes[merge.name] = Axis(dim, st.fresh(len(v)), ax.origin[v])
    else:
        st.axes[merge.name] = Axis(dim, ax.ids[v], ax.origin[v])


def _zero(op: Operand, lv) -> np.ndarray:
    """(heads, head_dim): provably zero channels of an operand (none if untracked)."""
    if _tracked(op, lv.axis) is None:
        return np.zeros(op.index.shape, dtype=bool)
    return lv.zero_of(op.src)[op.index]


def zeros(merge: fx.Node, lv) -> None:
    a = _heads(merge, lv.analysis)
    lv.zero[merge.name] = _zero(a.v, lv)[a.group].reshape(-1)


@dataclass
class _Live:
    used: np.ndarray  # (H,) q heads whose output is read
    pairs: np.ndarray  # (H, U) units with non-zero q and k parts in a used head
    k_units: np.ndarray  # (H_kv, U) units some used q head of the group scores
    v_need: np.ndarray  # (H_kv, dv) v channels some used head's demanded output reads


def _live(a: Heads, lv, merge: fx.Node) -> _Live:
    units, group = a.units(), a.group
    out = lv.out_demand(merge).reshape(a.heads, -1)
    used = out.any(1)
    q_unit = ~_zero(a.q, lv)[:, units].all(2)
    k_unit = ~_zero(a.k, lv)[:, units].all(2)
    pairs = q_unit & k_unit[group] & used[:, None]
    hkv = a.k.index.shape[0]
    k_units = np.zeros((hkv, len(units)), dtype=bool)
    v_need = np.zeros(a.v.index.shape, dtype=bool)
    np.logical_or.at(k_units, group, pairs)
    np.logical_or.at(v_need, group, out)
    return _Live(used, pairs, k_units, v_need & ~_zero(a.v, lv))


def _want(op: Operand, lv, need: np.ndarray) -> None:
    if _tracked(op, lv.axis) is None:
        return
    mask = np.zeros(len(lv.axis(op.src)), dtype=bool)
    mask[op.index[need]] = True
    lv.want(op.src, mask)


def demand(merge: fx.Node, lv) -> None:
    """q/k: the members of every scored unit; v: what a demanded output reads."""
    a = _heads(merge, lv.analysis)
    live, units = _live(a, lv, merge), a.units()
    _want(a.q, lv, _members(live.pairs, units))
    _want(a.k, lv, _members(live.k_units, units))
    _want(a.v, lv, live.v_need)


def _members(unit_mask: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Per head, the head-dim positions of the marked units."""
    out = np.zeros((unit_mask.shape[0], units.size), dtype=bool)
    for m in range(units.shape[1]):
        out[:, units[:, m]] |= unit_mask
    return out


def _slots(keep: np.ndarray, prefer: np.ndarray, width: int) -> np.ndarray:
    """Per row: the kept positions, then fillers (``prefer`` first) up to ``width``."""
    out = []
    for h in range(keep.shape[0]):
        mine = np.flatnonzero(keep[h])
        rest = [j for j in np.argsort(~prefer[h], kind="stable").tolist() if not keep[h, j]]
        out.append(np.concatenate([mine, rest[: width - len(mine)]]).astype(np.int64))
    return np.stack(out)


def _present(rw, op: Operand) -> np.ndarray:
    """(heads, head_dim): channels physically present in the source's emitted tensor."""
    _, lx = rw.value(op.src)
    if not isinstance(lx, np.ndarray) or _tracked(op, rw.axis) is None:
        return np.ones(op.index.shape, dtype=bool)
    here = np.zeros(len(rw.axis(op.src)), dtype=bool)
    here[lx] = True
    return here[op.index]


def _source(rw, op: Operand) -> tuple[object, np.ndarray]:
    if _tracked(op, rw.axis) is None:
        return rw.map_arg(op.src), np.arange(int(op.index.size), dtype=np.int64)
    return rw.value(op.src)


def _heads_of(rw, op: Operand, heads: np.ndarray, cols: np.ndarray) -> object:
    """(B, len(heads), L, width): head ``heads[i]``'s head-dim positions ``cols[i]``."""
    xn, lx = _source(rw, op)
    pos = op.index[heads[:, None], cols].reshape(-1)
    t = rw.align(xn, 2, lx, pos, op.src)
    t = rw.call(aten.unflatten.int, (t, -1, [len(heads), cols.shape[1]]))
    if op.tokens_first:  # (L, B, heads, width)
        return rw.call(aten.permute.default, (t, [1, 2, 0, 3]))
    return rw.call(aten.transpose.int, (t, 1, 2))


def _turn(rw, t: object, cos: object, sin: object, half: int) -> object:
    """Rotary embedding on a (..., 2 * half) tensor laid out [u..., u + d/2...]."""
    hi = rw.call(aten.slice.Tensor, (t, -1, half, 2 * half))
    lo = rw.call(aten.slice.Tensor, (t, -1, 0, half))
    turned = rw.call(aten.cat.default, ([rw.call(aten.neg.default, (hi,)), lo], -1))
    a = rw.call(aten.mul.Tensor, (t, cos))
    return rw.call(aten.add.Tensor, (a, rw.call(aten.mul.Tensor, (turned, sin))))


def _table(rw, node: fx.Node, cols: np.ndarray) -> object:
    """A (L, d), (B|1, L, d) or (B|1, 1, L, d) cos/sin table, per head ``cols[i]``: (B|1,
    heads, L, width)."""
    t = rw.map_arg(node)
    for _ in range(4 - len(node_shape(node))):
        t = rw.call(aten.unsqueeze.default, (t, 0 if len(node_shape(node)) == 2 else 1))
    t = rw.call(aten.index_select.default, (t, -1, rw.index(cols.reshape(-1))))
    t = rw.call(aten.unflatten.int, (t, -1, list(cols.shape)))
    return rw.call(aten.squeeze.dim, (rw.call(aten.transpose.int, (t, 1, 3)), 3))


def _keep(a: Heads, live: _Live) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q heads kept, kv heads kept, each kept q head's row among the kept kv heads)."""
    heads = np.flatnonzero(live.used) if not a.manual else np.arange(a.heads)
    if not len(heads):
        heads = np.array([0])
    kv = np.unique(a.group[heads])
    return heads, kv, np.searchsorted(kv, a.group[heads])


def _scaled(rw, t: object, op: Operand) -> object:
    for target, c in op.scales:
        t = rw.call(target, (t, c))
    return t


def _spread(rw, t: object, kv: np.ndarray, heads: np.ndarray, of: np.ndarray) -> object:
    """Key/value heads repeated for the q heads that share them (grouped-query attention)."""
    if len(kv) == len(heads) and np.array_equal(kv, heads):
        return t
    return rw.call(aten.index_select.default, (t, 1, rw.index(of)))


def _qk(rw, a: Heads, live: _Live) -> tuple[object, object]:
    """q and k of the kept heads, (B, heads, L, width) each: per key/value head the units
    scored, then units with a zero product (fillers), rotary and constant scalings applied."""
    units = a.units()
    heads, kv, of = _keep(a, live)
    width = max(1, int(live.k_units[kv].sum(1).max()))
    k_here = _present(rw, a.k)[:, units].all(2)
    unit_slots = _slots(live.k_units[kv], k_here[kv], width)
    cols = units[unit_slots].transpose(0, 2, 1).reshape(len(kv), -1)  # [u..., u + d/2...]
    q = _heads_of(rw, a.q, heads, cols[of])
    k = _heads_of(rw, a.k, kv, cols)
    if a.rotary is not None:
        cos, sin = a.rotary
        half = unit_slots.shape[1]
        q = _turn(rw, q, _table(rw, cos, cols[of]), _table(rw, sin, cols[of]), half)
        k = _turn(rw, k, _table(rw, cos, cols), _table(rw, sin, cols), half)
    return _scaled(rw, q, a.q), _spread(rw, _scaled(rw, k, a.k), kv, heads, of)


def _v(rw, a: Heads, live: _Live) -> tuple[object, np.ndarray]:
    """v of the kept heads, (B, heads, L, width): per key/value head the channels read, then
    zero ones (their output is zero); and the merged output's layout."""
    heads, kv, of = _keep(a, live)
    width = max(1, int(live.v_need[kv].sum(1).max()))
    slots = _slots(live.v_need[kv], _zero(a.v, rw.live)[kv], width)
    v = _spread(rw, _scaled(rw, _heads_of(rw, a.v, kv, slots), a.v), kv, heads, of)
    return v, (heads[:, None] * a.v.index.shape[1] + slots[of]).reshape(-1)


def emit(merge: fx.Node, rw) -> None:
    """The attention on pruned q/k/v: used heads only, each head as wide as the widest."""
    a = _heads(merge, rw.analysis)
    live = _live(a, rw.live, merge)  # what each head keeps, once for q/k and v
    v, layout = _v(rw, a, live)
    if a.manual:  # probabilities (the score ops, emitted as they are) @ v
        out = rw.call(a.value.target, (rw.map_arg(a.value.args[0]), v))
    else:
        out = _sdpa(rw, a, live, v)
    for move in a.moves:
        if not _is(move, "clone", "contiguous"):
            out = rw.call(move.target, (out, *move.args[1:]))
    out = rw.call(aten.flatten.using_ints, (out, -2, -1))
    if len(node_shape(merge)) < len(node_shape(a.moves[-1])) - 1:  # tokens and batch merged
        out = rw.call(aten.flatten.using_ints, (out, 0, 1))
    rw.set(merge, out, layout)


def _sdpa(rw, a: Heads, live: _Live, v: object) -> fx.Node:
    q, k = _qk(rw, a, live)
    heads, _, _ = _keep(a, live)
    args = [q, k, v, *(rw.map_arg(x) for x in a.sdpa.args[3:])]
    kwargs = {k_: rw.map_arg(x) for k_, x in a.sdpa.kwargs.items() if k_ != "enable_gqa"}
    mask_at = 3 if len(a.sdpa.args) > 3 else None
    mask = a.sdpa.args[3] if mask_at else a.sdpa.kwargs.get("attn_mask")
    if isinstance(mask, fx.Node) and len(heads) < a.heads:
        shape = node_shape(mask)
        if len(shape) >= 3 and shape[-3] == a.heads:
            picked = rw.call(aten.index_select.default, (rw.map_arg(mask), -3, rw.index(heads)))
            if mask_at:
                args[3] = picked
            else:
                kwargs["attn_mask"] = picked
    if kwargs.get("scale") is None:  # the original width's scale, not the pruned one's
        kwargs["scale"] = 1.0 / math.sqrt(a.q.index.shape[1])
    return rw.call(a.sdpa.target, tuple(args), kwargs)


class Score(Rule):
    """``aten.matmul``: the score ``q @ k^T`` of a written-out attention (see :func:`match`);
    any other matmul stays a barrier."""

    def _score(self, node: fx.Node, an) -> Heads | None:
        kind = an.kinds.get(node.name)
        return kind[1] if isinstance(kind, tuple) and kind[0] == SCORE else None

    def flow(self, node: fx.Node, st: FlowState) -> None:
        if self._score(node, st) is not None:
            st.axes[node.name] = None  # (B, heads, L, L): no channel axis
            return
        super().flow(node, st)

    def demand(self, node: fx.Node, lv) -> None:
        if self._score(node, lv.analysis) is None:  # q and k: demanded by the merge
            super().demand(node, lv)

    def emit(self, node: fx.Node, rw) -> None:
        a = self._score(node, rw.analysis)
        if a is None:
            return super().emit(node, rw)
        q, k = _qk(rw, a, _live(a, rw.live, a.merge))
        k_t = rw.call(aten.transpose.int, (k, -2, -1))
        rw.set(node, rw.call(node.target, (q, k_t)), None)


register(Score(), "aten.matmul")
