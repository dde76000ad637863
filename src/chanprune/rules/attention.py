"""Multi-head attention from one q/k/v projection (timm/torchvision-style fused attention).

The pattern ``qkv(B, N, 3D).view(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)`` ->
``scaled_dot_product_attention(q, k, v)`` -> ``.transpose(1, 2).reshape(B, N, D)`` is folded
into its last node. Channels stay prunable, exactly:

- q/k: head h's score is ``sum_j q_hj k_hj * scale``; a pair with a zero q or k adds nothing,
  so it is dropped, and ``scale`` is passed explicitly (the original ``1/sqrt(d)``).
- v: output channel (h, j) is ``attn_h @ v_hj``: zero where v is, so it follows v.
- every head keeps the same width (SDPA needs it): the largest per-head count, shorter heads
  filled with slots whose product is zero (q/k) or whose output is the channel's own value (v),
  like grouped convolutions.

Anything else (q/k norms, rotary embeddings, a hand-written softmax) does not match and stays a
barrier (the split view pins the projection's channels).
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import fx

from ..analysis import ABSORBED, Axis, FlowState, node_shape

ATTENTION = "attention"
aten = torch.ops.aten


def _only_user(node: fx.Node) -> fx.Node | None:
    users = [u for u in node.users if not str(u.target).startswith("aten._assert")]
    return users[0] if len(users) == 1 and users[0].op == "call_function" else None


def _is(node: fx.Node | None, *names: str) -> bool:
    name = getattr(getattr(node, "target", None), "__name__", "")
    return node is not None and name.split(".")[0] in names


def match(split: fx.Node, ax: Axis, st: FlowState) -> list[fx.Node] | None:
    """The nodes from the split view to the merging reshape, or None."""
    a, b = node_shape(split.args[0]), node_shape(split)
    if ax.dim != len(a) - 1 or len(a) != 3 or len(b) != 5 or b[:2] != a[:2] or b[2] != 3:
        return None
    perm = _only_user(split)
    if not _is(perm, "permute") or list(perm.args[1]) != [2, 0, 3, 1, 4]:
        return None
    unbind = _only_user(perm)
    if not _is(unbind, "unbind") or (len(unbind.args) > 1 and unbind.args[1] != 0):
        return None
    items = [u for u in unbind.users if u.target is operator.getitem]
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
    swap = _only_user(sdpa)
    if not _is(swap, "transpose") or sorted(d % 4 for d in swap.args[1:3]) != [1, 2]:
        return None
    merge = _only_user(swap)
    if not _is(merge, "view", "_unsafe_view", "reshape"):
        return None
    if node_shape(merge) != (*a[:2], a[2] // 3):
        return None
    return [split, perm, unbind, *items, sdpa, swap, merge]


def fold(chain: list[fx.Node], st: FlowState) -> None:
    for n in chain[:-1]:
        st.kinds[n.name] = ABSORBED
    st.kinds[chain[-1].name] = ATTENTION
    st.axes[chain[0].name] = None


def _parts(merge: fx.Node) -> tuple[fx.Node, fx.Node, int, int]:
    """(qkv node, sdpa node, heads, head dim) from the merging reshape."""
    sdpa = merge.args[0].args[0]
    split = sdpa.args[0].args[0].args[0].args[0]
    _, _, _, heads, dim = node_shape(split)
    return split.args[0], sdpa, heads, dim


def flow(merge: fx.Node, st: FlowState) -> None:
    qkv = _parts(merge)[0]
    ax = st.axis(qkv)
    n = len(ax) // 3
    st.axes[merge.name] = Axis(2, ax.ids[2 * n :], ax.origin[2 * n :])


def zeros(merge: fx.Node, lv) -> None:
    z = lv.zero_of(_parts(merge)[0])
    lv.zero[merge.name] = z[2 * (len(z) // 3) :].copy()


def _pairs(merge: fx.Node, lv, heads: int, dim: int) -> np.ndarray:
    """(heads, dim): q and k both non-zero there, in a head with a demanded output."""
    z = lv.zero_of(_parts(merge)[0]).reshape(3, heads, dim)
    used = lv.out_demand(merge).reshape(heads, dim).any(1)
    return ~z[0] & ~z[1] & used[:, None]


def demand(merge: fx.Node, lv) -> None:
    qkv, _, heads, dim = _parts(merge)
    pairs = _pairs(merge, lv, heads, dim).reshape(-1)
    v = lv.out_demand(merge) & ~lv.zero_of(qkv)[2 * heads * dim :]
    lv.want(qkv, np.concatenate([pairs, pairs, v]))


def _slots(keep: np.ndarray, prefer: np.ndarray, width: int) -> np.ndarray:
    """Per head: the kept positions, then fillers (``prefer`` first) up to ``width``."""
    out = []
    for h in range(keep.shape[0]):
        mine = np.flatnonzero(keep[h])
        rest = [j for j in np.argsort(~prefer[h], kind="stable").tolist() if not keep[h, j]]
        out.append(np.concatenate([mine, rest[: width - len(mine)]]).astype(np.int64))
    return np.stack(out)


def emit(merge: fx.Node, rw) -> None:
    lv = rw.live
    qkv, sdpa, heads, dim = _parts(merge)
    xn, lx = rw.value(qkv)
    n = heads * dim
    z = lv.zero_of(qkv).reshape(3, heads, dim)
    pairs = _pairs(merge, lv, heads, dim)
    v_keep = np.zeros(n, dtype=bool)
    v_keep[lv.kept(merge)] = True
    v_keep = v_keep.reshape(heads, dim)
    w_qk = max(1, int(pairs.sum(1).max()))
    w_v = max(1, int(v_keep.sum(1).max()))
    qk = _slots(pairs, ~pairs, w_qk)  # fillers: a zero product
    v = _slots(v_keep, z[2], w_v)  # fillers: zero v first (their output is zero)
    base = (np.arange(heads) * dim)[:, None]
    tokens = node_shape(qkv)[1]
    parts = []
    for offset, slots in ((0, qk), (n, qk), (2 * n, v)):
        t = rw.align(xn, 2, lx, (base + slots).reshape(-1) + offset, qkv)
        t = rw.call(aten.view.default, (t, [-1, tokens, heads, slots.shape[1]]))
        parts.append(rw.call(aten.permute.default, (t, [0, 2, 1, 3])))
    kwargs = dict(sdpa.kwargs)
    if kwargs.get("scale") is None:  # the original width's scale, not the pruned one's
        kwargs["scale"] = 1.0 / math.sqrt(dim)
    args = (*parts, *(rw.map_arg(a) for a in sdpa.args[3:]))
    out = rw.call(sdpa.target, args, kwargs)
    out = rw.call(aten.transpose.int, (out, 1, 2))
    out = rw.call(aten.reshape.default, (out, [-1, tokens, heads * w_v]))
    rw.set(merge, out, (base + v).reshape(-1))
