"""View-like ops: the channel axis moves (permute, unsqueeze, expand ...) or is flattened.

A reshape that keeps the channel axis as its own dimension just moves it. A reshape that merges
it with the dimensions after it (``x.flatten(1)`` before a classifier) makes each channel a run
of ``inner`` consecutive positions. Anything that splits the channel axis is a barrier.
Shape arguments are rewritten for the pruned width.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..types import ABSORBED, Axis, FlowState, node_shape
from . import attention
from .base import Rule
from .channelwise import Channelwise
from .registry import register

aten = torch.ops.aten


def _norm(d: int, rank: int) -> int:
    return d % rank if rank else 0


class Permute(Channelwise):
    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        rank = len(node_shape(node.args[0]))
        return [_norm(d, rank) for d in node.args[1]].index(ax.dim)


class Transpose(Channelwise):
    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        rank = len(node_shape(node.args[0]))
        d0, d1 = (_norm(d, rank) for d in node.args[1:3]) if len(node.args) > 2 else (0, 1)
        return d1 if ax.dim == d0 else d0 if ax.dim == d1 else ax.dim


class Unsqueeze(Channelwise):
    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        d = _norm(node.args[1], len(node_shape(node)))
        return ax.dim + (d <= ax.dim)


class Squeeze(Channelwise):
    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        shape = node_shape(node.args[0])
        if len(node.args) > 1:
            dims = node.args[1]
            dims = [dims] if isinstance(dims, int) else list(dims)
            dims = [_norm(d, len(shape)) for d in dims if shape[_norm(d, len(shape))] == 1]
        else:
            dims = [i for i, s in enumerate(shape) if s == 1]
        return None if ax.dim in dims else ax.dim - sum(d < ax.dim for d in dims)


class Select(Channelwise):
    """select.int / unbind along a non-channel dim."""

    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        d = _norm(node.args[1], len(node_shape(node.args[0])))
        return None if d == ax.dim else ax.dim - (d < ax.dim)


class Factory(Rule):
    """new_zeros/new_ones/new_full/new_empty: a new tensor that takes only its input's dtype
    and device (Swin's shifted-window mask): no channel flows, and no input channel is needed."""

    def flow(self, node: fx.Node, st: FlowState) -> None:
        st.axes[node.name] = None

    def demand(self, node: fx.Node, lv) -> None:
        return

    def emit(self, node: fx.Node, rw) -> None:
        args = (rw.value(node.args[0])[0], *(rw.map_arg(a) for a in node.args[1:]))
        kwargs = {k: rw.map_arg(v) for k, v in node.kwargs.items()}
        rw.set(node, rw.call(node.target, args, kwargs), None)


class Roll(Channelwise):
    """roll along other dims (Swin's shifted windows); rolling the channels (or the flattened
    tensor) mixes them."""

    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        rank = len(node_shape(node.args[0]))
        dims = node.args[2] if len(node.args) > 2 else node.kwargs.get("dims", [])
        dims = [dims] if isinstance(dims, int) else list(dims)
        return None if not dims or ax.dim in [_norm(d, rank) for d in dims] else ax.dim


class Expand(Channelwise):
    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        return ax.dim + len(node.args[1]) - len(node_shape(node.args[0]))

    def emit(self, node: fx.Node, rw) -> None:
        if not self._tracked(node, rw.live):
            return rw.verbatim(node)
        xn, lx = rw.value(node.args[0])
        sizes = list(rw.map_arg(node.args[1]))
        sizes[rw.axis(node).dim] = -1
        rw.set(node, rw.call(node.target, (xn, sizes, *node.args[2:]), dict(node.kwargs)), lx)


def _groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pair up runs of dims of two shapes with equal products (size-1 dims join a run)."""
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        gi, gj, pa, pb = [], [], 1, 1
        while True:
            if pa <= pb and i < len(a):
                gi.append(i)
                pa *= a[i]
                i += 1
            elif j < len(b):
                gj.append(j)
                pb *= b[j]
                j += 1
            elif i < len(a):
                gi.append(i)
                pa *= a[i]
                i += 1
            else:
                break
            if pa == pb and (i == len(a) or a[i] != 1) and (j == len(b) or b[j] != 1):
                break
        groups.append((gi, gj))
    return groups


GROUP_MERGE, GROUP_SPLIT = "group-merge", "group-split"
# ops a per-group statistic passes through between the split and the merge back
_STAT_OPS = ("var", "mean", "std", "sum", "amax", "add", "sub", "mul", "div", "sqrt", "rsqrt")
_STAT_OPS += ("pow", "_to_copy", "expand", "clone", "alias", "contiguous")


def _group_statistics(split: fx.Node, ax: Axis) -> fx.Node | None:
    """``x.view(B, G, C // G, ...)`` -> per-group reductions -> ``expand`` -> ``view(x.shape)``.

    The result is a per-channel statistic (EvoNorm's group std), position c for channel c. The
    split sees x at full width (removed channels padded back as zeros), so the statistic is
    exact with the original channel count, and the channels need not be pinned. Returns the
    merging view, or None when the pattern does not match.
    """
    a, b = node_shape(split.args[0]), node_shape(split)
    d = ax.dim
    if len(b) != len(a) + 1 or b[:d] != a[:d] or b[d + 2 :] != a[d + 1 :]:
        return None
    node = split
    for _ in range(12):
        users = [u for u in node.users if not str(u.target).startswith("aten._assert")]
        if len(users) != 1 or users[0].op != "call_function" or users[0].args[0] is not node:
            return None
        node = users[0]
        name = getattr(node.target, "__name__", "").split(".")[0]
        if name in ("view", "_unsafe_view", "reshape"):
            return node if node_shape(node) == a else None
        tensors = [x for x in node.all_input_nodes if node_shape(x) is not None]
        if name not in _STAT_OPS or len(tensors) != 1:
            return None
    return None


class View(Channelwise):
    """view/reshape: moves the channel axis, or flattens it with the dims after it."""

    def _plan(self, node: fx.Node, ax: Axis) -> tuple[int, int] | None:
        a, b = node_shape(node.args[0]), node_shape(node)
        for gi, gj in _groups(a, b):
            if ax.dim not in gi:
                continue
            real_i = [d for d in gi if a[d] != 1]
            real_j = [d for d in gj if b[d] != 1]
            if len(real_j) != 1 or not real_i or real_i[0] != ax.dim:
                return None
            inner = int(np.prod([a[d] for d in real_i[1:]])) if len(real_i) > 1 else 1
            return real_j[0], inner
        return None

    def flow(self, node: fx.Node, st: FlowState) -> None:
        if attention.is_attention(st.kinds.get(node.name)):
            return attention.flow(node, st)
        if st.kinds.get(node.name) == GROUP_MERGE:
            split = node.args[0]
            while st.kinds.get(split.name) != GROUP_SPLIT:
                split = split.args[0]
            ax = st.axis(split.args[0])
            st.axes[node.name] = Axis(ax.dim, ax.ids, np.full(len(ax), -1, dtype=np.int64))
            return
        ax = st.axis(node.args[0])
        if ax is None:
            return super().flow(node, st)
        plan = self._plan(node, ax)
        if plan is None:
            chain = attention.match(node, ax, st)
            if chain is not None:  # q/k/v heads: see analysis/rules/attention.py
                return attention.fold(chain, st)
            merge = _group_statistics(node, ax)
            if merge is not None:  # per-group statistics (EvoNorm's group_std): see below
                st.kinds[merge.name] = GROUP_MERGE
                st.kinds[node.name] = GROUP_SPLIT
                st.axes[node.name] = None  # the statistics see x in full (padded): exact
                return
            return st.barrier(node, f"{node.target} splits or merges the channel axis")
        dim, inner = plan
        st.kinds[node.name] = f"view:{inner}"
        origin = np.repeat(ax.origin, inner) if inner == 1 else np.full(len(ax) * inner, -1)
        st.axes[node.name] = Axis(dim, np.repeat(ax.ids, inner), origin)

    def _merge(self, node: fx.Node, an) -> bool:
        return an.kinds.get(node.name) == GROUP_MERGE

    def _inner(self, node: fx.Node, an) -> int:
        return int(an.kinds[node.name].split(":")[1])

    def zeros(self, node: fx.Node, lv) -> None:
        if attention.is_attention(lv.analysis.kinds.get(node.name)):
            return attention.zeros(node, lv)
        if self._merge(node, lv.analysis):  # a statistic (std + eps): never provably zero
            lv.zero[node.name] = np.zeros(len(lv.analysis.axes[node.name]), dtype=bool)
            return
        if not self._tracked(node, lv):
            return super().zeros(node, lv)
        lv.zero[node.name] = np.repeat(lv.zero_of(node.args[0]), self._inner(node, lv.analysis))

    def demand(self, node: fx.Node, lv) -> None:
        if attention.is_attention(lv.analysis.kinds.get(node.name)):
            return attention.demand(node, lv)
        if self._merge(node, lv.analysis):
            return  # its input is untracked; the split view demands all of x
        if not self._tracked(node, lv):
            return super().demand(node, lv)
        inner = self._inner(node, lv.analysis)
        lv.want(node.args[0], lv.out_demand(node).reshape(-1, inner).any(1))

    def emit(self, node: fx.Node, rw) -> None:
        if attention.is_attention(rw.analysis.kinds.get(node.name)):
            return attention.emit(node, rw)
        if self._merge(node, rw.analysis):
            rw.verbatim(node)
            rw.lay[node.name] = np.arange(len(rw.axis(node)), dtype=np.int64)
            return
        if not self._tracked(node, rw.live):
            return rw.verbatim(node)
        inner = self._inner(node, rw.analysis)
        xn, lx = rw.value(node.args[0])
        out = (lx[:, None] * inner + np.arange(inner)[None, :]).reshape(-1)
        shape = list(rw.map_arg(node.args[1]))
        dim = rw.axis(node).dim
        if shape[dim] != -1:
            shape[dim] = len(out)
        # a view relies on its input's strides, which a pad or gather before it may have changed
        # (an elementwise op keeps its input's memory format): reshape is the same view where
        # one exists, and a copy where the pruned input is laid out differently
        target = aten.reshape.default if node.target == aten.view.default else node.target
        rw.set(node, rw.call(target, (xn, shape), dict(node.kwargs)), out)


register(Permute(), "aten.permute")
register(Transpose(), "aten.transpose", "aten.t")
register(Unsqueeze(), "aten.unsqueeze")
register(Squeeze(), "aten.squeeze")
register(Select(), "aten.select.int")
register(Roll(), "aten.roll")
register(Factory(), "aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.new_empty")
register(Expand(), "aten.expand")
register(View(), "aten.view", "aten._unsafe_view", "aten.reshape")


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op == "call_function" else None


class ChannelShuffle(View):
    """view(n, g, c/g, ...) -> transpose(1, 2) [-> clone] -> view(n, c, ...): a fixed permutation.

    The pattern is recognised at its first view; the middle nodes emit nothing and the last
    one relabels positions and puts them back in order with one gather (the original shuffle
    copies too), so the shuffled channels stay prunable.
    """

    def _match(self, node: fx.Node, ax: Axis) -> tuple[list[fx.Node], np.ndarray] | None:
        a, b = node_shape(node.args[0]), node_shape(node)
        d = ax.dim
        if len(b) != len(a) + 1 or b[:d] != a[:d] or b[d + 2 :] != a[d + 1 :]:
            return None
        g, cpg = b[d], b[d + 1]
        swap = _only_user(node)
        rank = len(b)
        if swap is None or "transpose" not in str(swap.target):
            return None
        if sorted(x % rank for x in swap.args[1:3]) != [d, d + 1]:
            return None
        chain = [node, swap]
        merge = _only_user(swap)
        if merge is not None and "clone" in str(merge.target):  # .contiguous()
            chain.append(merge)
            merge = _only_user(merge)
        if merge is None or not any(k in str(merge.target) for k in ("view", "reshape")):
            return None
        if node_shape(merge) != a:
            return None
        chain.append(merge)
        i, j = np.meshgrid(np.arange(cpg), np.arange(g), indexing="ij")
        return chain, (j * cpg + i).reshape(-1)

    def flow(self, node: fx.Node, st: FlowState) -> None:
        if node.name in st.shuffles:
            src, perm = st.shuffles[node.name]
            ax = st.axis(src)
            st.axes[node.name] = Axis(ax.dim, ax.ids[perm], ax.origin[perm])
            return
        ax = st.axis(node.args[0])
        if ax is not None and self._plan(node, ax) is None:
            match = self._match(node, ax)
            if match is not None:
                chain, perm = match
                for n in chain[:-1]:  # this view, the transpose, the copy: folded into the last
                    st.kinds[n.name] = ABSORBED
                st.shuffles[chain[-1].name] = (node.args[0], perm)
                st.axes[node.name] = None
                return
        super().flow(node, st)

    def zeros(self, node: fx.Node, lv) -> None:
        if (shuffle := lv.analysis.shuffles.get(node.name)) is None:
            return super().zeros(node, lv)
        src, perm = shuffle
        lv.zero[node.name] = lv.zero_of(src)[perm]

    def demand(self, node: fx.Node, lv) -> None:
        if (shuffle := lv.analysis.shuffles.get(node.name)) is None:
            return super().demand(node, lv)
        src, perm = shuffle
        d = np.zeros(len(perm), dtype=bool)
        d[perm] = lv.out_demand(node)
        lv.want(src, d)

    def emit(self, node: fx.Node, rw) -> None:
        if (shuffle := rw.analysis.shuffles.get(node.name)) is None:
            return super().emit(node, rw)
        src, perm = shuffle
        xn, lx = rw.value(src)
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        relabeled = inverse[lx]  # positions after the shuffle, in the source's physical order
        target = np.sort(relabeled)
        rw.set(node, rw.align(xn, rw.axis(src).dim, relabeled, target, src), target)


register(ChannelShuffle(), "aten.view", "aten._unsafe_view", "aten.reshape")
