"""Multi-head attention from one q/k/v projection (timm ViT, MaxViT and the like).

The chain ``qkv(..., 3D).view(...)`` -> permutes/transposes -> ``unbind``/``chunk`` into q, k, v
of shape (B, H, N, d) -> ``scaled_dot_product_attention`` -> ``.transpose(1, 2).reshape(...,
D)`` is folded into its last node (:func:`match`), so the projection's channels stay prunable,
exactly: q/k pairs with a zero member and zero v channels go (:func:`demand`, :func:`emit`).
Anything else (q/k norms, rotary embeddings, a hand-written softmax, separate q/k/v
projections) does not match and stays a barrier (the split view pins the projection).
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import fx

from ..types import ABSORBED, Axis, FlowState, node_shape

ATTENTION = "attention"
aten = torch.ops.aten


def _only_user(node: fx.Node) -> fx.Node | None:
    users = [u for u in node.users if not str(u.target).startswith("aten._assert")]
    return users[0] if len(users) == 1 and users[0].op == "call_function" else None


def _is(node: fx.Node | None, *names: str) -> bool:
    name = getattr(getattr(node, "target", None), "__name__", "")
    return node is not None and name.split(".")[0] in names


_MOVES = ("permute", "transpose")
_SPLITS = ("unbind", "split", "split_with_sizes")


def _replay(node: fx.Node, value: torch.Tensor) -> object:
    """Apply a view/move/split node to ``value`` (batch and token sizes set to 1)."""
    args = [value, *node.args[1:]]
    name = node.target.__name__.split(".")[0]
    if name in ("view", "reshape", "_unsafe_view"):
        shape = list(node_shape(node))
        args[1] = [1, 1, *shape[2:]]
    return node.target(*args, **node.kwargs)


def match(split: fx.Node, ax: Axis, st: FlowState) -> list[fx.Node] | None:
    """The nodes from the view splitting the qkv channels to the merging reshape, or None.

    Where each q/k/v head channel sits in the projection is found by replaying the view,
    moves and split on the projection's channel indices (``qkv_index``), so the ViT layout
    ([q | k | v] over all heads) and MaxViT's ([q | k | v] per head) are the same case.
    """
    a, b = node_shape(split.args[0]), node_shape(split)
    if ax.dim != len(a) - 1 or len(b) not in (4, 5) or a[0] != b[0]:
        return None
    if int(np.prod(b[2:])) != a[-1] or a[-1] % 3:
        return None
    chain, node = [split], _only_user(split)
    while _is(node, *_MOVES):
        chain.append(node)
        node = _only_user(node)
    if not _is(node, *_SPLITS):
        return None
    items = [u for u in node.users if u.target is operator.getitem]
    items.sort(key=lambda u: u.args[1])
    if len(items) != 3 or [u.args[1] for u in items] != [0, 1, 2]:
        return None
    sdpa = _only_user(items[0])
    if not _is(sdpa, "scaled_dot_product_attention") or list(sdpa.args[:3]) != items:
        return None
    if any(_only_user(u) is not sdpa for u in items) or sdpa.kwargs.get("enable_gqa"):
        return None
    if any(st.axis(x) is not None for x in sdpa.all_input_nodes if x not in items):
        return None
    heads, dim = node_shape(items[0])[1], node_shape(items[0])[3]
    if any(node_shape(u)[1::2] != (heads, dim) for u in items) or heads * dim * 3 != a[-1]:
        return None
    swap = _only_user(sdpa)
    if not _is(swap, "transpose") or sorted(d % 4 for d in swap.args[1:3]) != [1, 2]:
        return None
    merge = _only_user(swap)
    if not _is(merge, "view", "_unsafe_view", "reshape"):
        return None
    if node_shape(merge) != (*a[:-1], heads * dim):
        return None
    try:  # where each (q/k/v, head, j) sits among the projection's channels
        value = torch.arange(a[-1]).reshape(1, 1, a[-1])
        for n in [*chain, node]:
            value = _replay(n, value)
        index = np.stack([value[i].reshape(heads, dim).numpy() for i in range(3)])
    except Exception:
        return None
    if sorted(index.reshape(-1).tolist()) != list(range(a[-1])):
        return None
    return [*chain, node, *items, sdpa, swap, merge], index


def is_attention(kind: object) -> bool:
    return isinstance(kind, tuple) and kind[0] == ATTENTION


def fold(found: tuple[list[fx.Node], np.ndarray], st: FlowState) -> None:
    """Absorb the chain into its merging reshape; kinds[merge] = (ATTENTION, qkv, index)."""
    chain, index = found
    for n in chain[:-1]:
        st.kinds[n.name] = ABSORBED
    st.kinds[chain[-1].name] = (ATTENTION, chain[0].args[0], index)
    st.axes[chain[0].name] = None


def _parts(merge: fx.Node, an) -> tuple[fx.Node, fx.Node, np.ndarray]:
    """(qkv node, sdpa node, index[q/k/v, head, j] -> qkv channel) of a folded attention."""
    _, qkv, index = an.kinds[merge.name]
    return qkv, merge.args[0].args[0], index


def flow(merge: fx.Node, st: FlowState) -> None:
    qkv, _, index = _parts(merge, st)
    ax = st.axis(qkv)
    v = index[2].reshape(-1)
    st.axes[merge.name] = Axis(len(node_shape(merge)) - 1, ax.ids[v], ax.origin[v])


def zeros(merge: fx.Node, lv) -> None:
    """v: output channel (h, j) is ``attn_h @ v_hj``: zero where v is, so it follows v."""
    qkv, _, index = _parts(merge, lv.analysis)
    lv.zero[merge.name] = lv.zero_of(qkv)[index[2].reshape(-1)]


def _pairs(merge: fx.Node, lv) -> np.ndarray:
    """(heads, dim): q and k both non-zero there, in a head with a demanded output."""
    qkv, _, index = _parts(merge, lv.analysis)
    z = lv.zero_of(qkv)[index]
    used = lv.out_demand(merge).reshape(index.shape[1:]).any(1)
    return ~z[0] & ~z[1] & used[:, None]


def demand(merge: fx.Node, lv) -> None:
    """q/k: head h's score is ``sum_j q_hj k_hj * scale``; a pair with a zero q or k adds
    nothing, so the pair is dropped (its non-zero partner is not needed either). v: needed
    where its output channel is demanded and v is non-zero."""
    qkv, _, index = _parts(merge, lv.analysis)
    pairs = _pairs(merge, lv)
    need = np.zeros(index.size, dtype=bool)
    need[index[0]] = pairs
    need[index[1]] = pairs
    need[index[2].reshape(-1)] = lv.out_demand(merge) & ~lv.zero_of(qkv)[index[2].reshape(-1)]
    lv.want(qkv, need)


def _slots(keep: np.ndarray, prefer: np.ndarray, width: int) -> np.ndarray:
    """Per head: the kept positions, then fillers (``prefer`` first) up to ``width``."""
    out = []
    for h in range(keep.shape[0]):
        mine = np.flatnonzero(keep[h])
        rest = [j for j in np.argsort(~prefer[h], kind="stable").tolist() if not keep[h, j]]
        out.append(np.concatenate([mine, rest[: width - len(mine)]]).astype(np.int64))
    return np.stack(out)


def emit(merge: fx.Node, rw) -> None:
    """The attention on pruned q/k/v. Every head keeps the same width (SDPA needs it): the
    largest per-head count, shorter heads filled with slots whose product is zero (q/k) or
    whose output is the channel's own value (v), like grouped convolutions. ``scale`` is passed
    explicitly (the original ``1/sqrt(d)``), since d shrinks."""
    lv = rw.live
    qkv, sdpa, index = _parts(merge, rw.analysis)
    _, heads, dim = index.shape
    xn, lx = rw.value(qkv)
    z = lv.zero_of(qkv)[index]
    pairs = _pairs(merge, lv)
    v_keep = np.zeros(heads * dim, dtype=bool)
    v_keep[lv.kept(merge)] = True
    v_keep = v_keep.reshape(heads, dim)
    qk = _slots(pairs, ~pairs, max(1, int(pairs.sum(1).max())))  # fillers: a zero product
    v = _slots(v_keep, z[2], max(1, int(v_keep.sum(1).max())))  # zero v first: output zero
    shape = node_shape(qkv)
    tokens = int(np.prod(shape[1:-1]))
    rows = np.arange(heads)[:, None]
    parts = []
    for which, slots in ((0, qk), (1, qk), (2, v)):
        pos = index[which][rows, slots].reshape(-1)
        t = rw.align(xn, len(shape) - 1, lx, pos, qkv)
        t = rw.call(aten.view.default, (t, [-1, tokens, heads, slots.shape[1]]))
        parts.append(rw.call(aten.transpose.int, (t, 1, 2)))
    kwargs = dict(sdpa.kwargs)
    if kwargs.get("scale") is None:  # the original width's scale, not the pruned one's
        kwargs["scale"] = 1.0 / math.sqrt(dim)
    args = (*parts, *(rw.map_arg(a) for a in sdpa.args[3:]))
    out = rw.call(sdpa.target, args, kwargs)
    out = rw.call(aten.transpose.int, (out, 1, 2))
    out_shape = [-1, *node_shape(merge)[1:-1], heads * v.shape[1]]
    out = rw.call(aten.reshape.default, (out, out_shape))
    rw.set(merge, out, (rows * dim + v).reshape(-1))
