"""Concatenation, split and slice along the channel axis, and tuple indexing.

Concatenating along the channel axis places the inputs' channels side by side (DenseNet,
Inception), each input keeping its own ids; an untracked input gets fresh pinned ids. Split and
slice hand out ranges of positions. Along any other dimension these ops only need the operands'
channels to agree, like a residual add.
"""

from __future__ import annotations

import itertools
import operator

import numpy as np
import torch
from torch import fx

from ..types import Axis, FlowState, node_shape, value_shape
from .base import Rule
from .registry import register


def _dim(node: fx.Node, i: int, default: int, rank: int) -> int:
    d = node.args[i] if len(node.args) > i else node.kwargs.get("dim", default)
    return d % rank


class Cat(Rule):
    def flow(self, node: fx.Node, st: FlowState) -> None:
        tensors = node.args[0]
        axes = [st.axis(t) for t in tensors]
        if all(a is None for a in axes):
            st.axes[node.name] = None
            return
        rank = len(node_shape(node))
        dim = _dim(node, 1, 0, rank)
        tracked_dims = {a.dim for a in axes if a is not None}
        if tracked_dims == {dim}:
            parts = []
            for t, a in zip(tensors, axes, strict=True):
                if a is None:
                    a = st.new_axis(dim, node_shape(t)[dim])
                    st.pin(a.ids, f"untracked input of {st.where(node)}")
                parts.append(a)
            st.kinds[node.name] = "channels"
            ids = np.concatenate([a.ids for a in parts])
            st.axes[node.name] = Axis(dim, ids, np.concatenate([a.origin for a in parts]))
            return
        if len(tracked_dims) > 1 or dim in tracked_dims:
            return st.barrier(node, "cat mixes channel axes")
        cdim = tracked_dims.pop()
        first = next(a for a in axes if a is not None)
        for a in axes:
            if a is not None:
                st.union(first.ids, a.ids)
        # an untracked operand (a class token) holds every channel in order: it is aligned to
        # the output's layout like a tracked one, so the channels stay prunable
        st.kinds[node.name] = "align"
        st.axes[node.name] = Axis(cdim, first.ids, np.full(len(first), -1, dtype=np.int64))

    def _mode(self, node: fx.Node, an) -> str | None:
        return an.kinds.get(node.name)

    def zeros(self, node: fx.Node, lv) -> None:
        mode = self._mode(node, lv.analysis)
        if mode is None:
            return Rule.zeros(self, node, lv)
        parts = []
        for t in node.args[0]:
            z = lv.zero_of(t) if lv.axis(t) is not None else None
            if mode == "channels" and z is None:
                z = np.zeros(node_shape(t)[lv.analysis.axes[node.name].dim], dtype=bool)
            parts.append(z)
        if mode == "channels":
            lv.zero[node.name] = np.concatenate(parts)
        else:
            n = len(lv.analysis.axes[node.name])
            lv.zero[node.name] = np.logical_and.reduce(
                [p if p is not None else np.zeros(n, dtype=bool) for p in parts]
            )

    def demand(self, node: fx.Node, lv) -> None:
        mode = self._mode(node, lv.analysis)
        if mode is None:
            return Rule.demand(self, node, lv)
        d, start = lv.out_demand(node), 0
        dim = lv.analysis.axes[node.name].dim
        for t in node.args[0]:
            if mode == "channels":
                n = node_shape(t)[dim]
                lv.want(t, d[start : start + n])
                start += n
            else:
                lv.want(t, d)

    def emit(self, node: fx.Node, rw) -> None:
        mode = self._mode(node, rw.analysis)
        if mode is None:
            return rw.verbatim(node)
        tensors = node.args[0]
        ax = rw.axis(node)
        news, layouts = [], []
        for t in tensors:
            new, lay = rw.value(t)
            if rw.axis(t) is None:
                lay = np.arange(node_shape(t)[ax.dim], dtype=np.int64)
            news.append(new)
            layouts.append(lay)
        if mode == "channels":
            out, start = [], 0
            for t, lay in zip(tensors, layouts, strict=True):
                out.append(lay + start)
                start += node_shape(t)[ax.dim]
            target = np.concatenate(out).astype(np.int64)
        else:
            tracked = [lay for t, lay in zip(tensors, layouts, strict=True) if rw.axis(t)]
            need = rw.live.kept(node)
            if (
                all(np.array_equal(tracked[0], x) for x in tracked)
                and np.isin(need, tracked[0]).all()
            ):
                target = tracked[0]
            else:
                target = rw.policy.merge(node, need, tracked)
            news = [
                rw.align(n, ax.dim, lay, target, t)
                for t, n, lay in zip(tensors, news, layouts, strict=True)
            ]
        out = rw.call(node.target, (news, *node.args[1:]), dict(node.kwargs))
        if mode == "channels":
            out, target = _drop_unread(node, rw, out, target, ax.dim)
        rw.set(node, out, target)


def _drop_unread(node: fx.Node, rw, out: fx.Node, layout: np.ndarray, dim: int):
    """Narrow a concatenation to the channels read after it, where that moves a copy, not adds one.

    The output holds every channel its inputs hold, and an input read by several
    concatenations (DenseNet: each layer's features go into every later layer's input) holds
    the union of what they read. When this concatenation feeds a single consumer through
    channelwise ops (BatchNorm, ReLU), that consumer would gather its channels anyway; gathering
    them here instead lets those ops run on the read channels only, with the same copy.
    """
    keep = np.isin(layout, rw.live.kept(node))
    if keep.all() or not _feeds_one_consumer(node, rw.analysis):
        return out, layout
    narrowed = layout[keep]
    return rw.align(out, dim, layout, narrowed, node), narrowed


def _feeds_one_consumer(node: fx.Node, analysis) -> bool:
    """``node`` reaches one consumer through a chain of single-user ops on the same channels
    and the same shape (so the gather moved up copies no more elements than where it was)."""
    consumers = {c.node for c in analysis.consumers}
    ids, shape = analysis.axes[node.name].ids, node_shape(node)
    while len(node.users) == 1:
        (node,) = node.users
        if node.name in consumers:
            return True
        ax, val = analysis.axes.get(node.name), node.meta.get("val")
        if isinstance(ax, list):  # a tuple result (BatchNorm's): its first tensor
            ax = ax[0] if ax else None
            val = val[0] if isinstance(val, list | tuple) and val else None
        if not isinstance(ax, Axis) or not np.array_equal(ax.ids, ids):
            return False
        if value_shape(val) != shape:
            return False
    return False


class Split(Rule):
    """split.Tensor(x, size, dim) / split_with_sizes(x, sizes, dim) -> a list of tensors."""

    def _sizes(self, node: fx.Node, n: int) -> list[int]:
        s = node.args[1]
        if isinstance(s, int):
            return [min(s, n - i) for i in range(0, n, s)]
        return list(s)

    def flow(self, node: fx.Node, st: FlowState) -> None:
        ax = st.axis(node.args[0])
        if ax is None:
            return Rule.flow(self, node, st)
        rank = len(node_shape(node.args[0]))
        dim = _dim(node, 2, 0, rank)
        sizes = self._sizes(node, node_shape(node.args[0])[dim])
        if dim == ax.dim:
            bounds = np.cumsum([0, *sizes])
            st.kinds[node.name] = "channels"
            st.axes[node.name] = [
                Axis(dim, ax.ids[s:e], ax.origin[s:e]) for s, e in itertools.pairwise(bounds)
            ]
        else:
            st.kinds[node.name] = "other"
            st.axes[node.name] = [Axis(ax.dim, ax.ids, ax.origin) for _ in sizes]

    def zeros(self, node: fx.Node, lv) -> None:
        mode = lv.analysis.kinds.get(node.name)
        if mode is None:
            return Rule.zeros(self, node, lv)
        z = lv.zero_of(node.args[0])
        if mode == "other":
            lv.zero[node.name] = [z.copy() for _ in lv.analysis.axes[node.name]]
        else:
            bounds = np.cumsum([0] + [len(a) for a in lv.analysis.axes[node.name]])
            lv.zero[node.name] = [z[s:e] for s, e in itertools.pairwise(bounds)]

    def demand(self, node: fx.Node, lv) -> None:
        mode = lv.analysis.kinds.get(node.name)
        if mode is None:
            return Rule.demand(self, node, lv)
        parts = lv.demand[node.name]
        if mode == "other":
            lv.want(node.args[0], np.logical_or.reduce(parts))
        else:
            lv.want(node.args[0], np.concatenate(parts))

    def emit(self, node: fx.Node, rw) -> None:
        mode = rw.analysis.kinds.get(node.name)
        if mode is None:
            return rw.verbatim(node)
        x = node.args[0]
        xn, lx = rw.value(x)
        axes = rw.analysis.axes[node.name]
        if mode == "other":
            out = rw.call(node.target, (xn, *node.args[1:]), dict(node.kwargs))
            rw.set(node, out, [lx for _ in axes])
            return
        dim = rw.axis(x).dim
        bounds = np.cumsum([0] + [len(a) for a in axes])
        pieces = [lx[(lx >= s) & (lx < e)] for s, e in itertools.pairwise(bounds)]
        if np.array_equal(np.concatenate(pieces), lx):  # in order: one split, all views
            counts = [len(p) for p in pieces]
            split = rw.call(torch.ops.aten.split_with_sizes.default, (xn, counts, dim))
            news = [rw.call(operator.getitem, (split, i)) for i in range(len(pieces))]
        else:
            news = [rw.align(xn, dim, lx, p, x) for p in pieces]
        rw.set(node, news, [p - s for p, s in zip(pieces, bounds, strict=False)])


class Slice(Rule):
    """slice.Tensor(x, dim, start, end, step)."""

    def _range(self, node: fx.Node, n: int) -> tuple[int, int, int]:
        args = list(node.args) + [None] * (5 - len(node.args))
        start, end, step = args[2] or 0, args[3], args[4] or 1
        end = n if end is None else end
        return slice(start, end, step).indices(n)

    def flow(self, node: fx.Node, st: FlowState) -> None:
        ax = st.axis(node.args[0])
        if ax is None:
            return Rule.flow(self, node, st)
        rank = len(node_shape(node.args[0]))
        dim = _dim(node, 1, 0, rank)
        if dim != ax.dim:
            st.kinds[node.name] = "other"
            st.axes[node.name] = Axis(ax.dim, ax.ids, ax.origin)
            return
        s, e, step = self._range(node, len(ax))
        if step != 1:
            return st.barrier(node, "strided slice of the channel axis")
        st.kinds[node.name] = f"channels:{s}:{e}"
        st.axes[node.name] = Axis(dim, ax.ids[s:e], ax.origin[s:e])

    def _bounds(self, node: fx.Node, an) -> tuple[int, int] | None:
        mode = an.kinds.get(node.name, "")
        if mode.startswith("channels:"):
            _, s, e = mode.split(":")
            return int(s), int(e)
        return None

    def zeros(self, node: fx.Node, lv) -> None:
        if lv.analysis.kinds.get(node.name) is None:
            return Rule.zeros(self, node, lv)
        z = lv.zero_of(node.args[0])
        b = self._bounds(node, lv.analysis)
        lv.zero[node.name] = z.copy() if b is None else z[b[0] : b[1]]

    def demand(self, node: fx.Node, lv) -> None:
        if lv.analysis.kinds.get(node.name) is None:
            return Rule.demand(self, node, lv)
        b = self._bounds(node, lv.analysis)
        d = lv.out_demand(node)
        if b is None:
            lv.want(node.args[0], d)
        else:
            full = np.zeros(len(lv.axis(node.args[0])), dtype=bool)
            full[b[0] : b[1]] = d
            lv.want(node.args[0], full)

    def emit(self, node: fx.Node, rw) -> None:
        if rw.analysis.kinds.get(node.name) is None:
            return rw.verbatim(node)
        x = node.args[0]
        xn, lx = rw.value(x)
        b = self._bounds(node, rw.analysis)
        if b is None:
            rw.set(node, rw.call(node.target, (xn, *node.args[1:]), dict(node.kwargs)), lx)
            return
        sel = lx[(lx >= b[0]) & (lx < b[1])]
        rw.set(node, rw.align(xn, rw.axis(x).dim, lx, sel, x), sel - b[0])


class GetItem(Rule):
    def flow(self, node: fx.Node, st: FlowState) -> None:
        src, i = node.args
        v = st.axes.get(src.name)
        st.axes[node.name] = v[i] if isinstance(v, list) else None

    def zeros(self, node: fx.Node, lv) -> None:
        src, i = node.args
        z = lv.zero.get(src.name)
        lv.zero[node.name] = z[i] if isinstance(z, list) else None

    def demand(self, node: fx.Node, lv) -> None:
        src, i = node.args
        d, mine = lv.demand.get(src.name), lv.demand.get(node.name)
        if isinstance(d, list) and isinstance(d[i], np.ndarray) and mine is not None:
            d[i] |= mine

    def emit(self, node: fx.Node, rw) -> None:
        src, i = node.args
        new, layouts = rw.value(src)
        out = new[i] if isinstance(new, list) else rw.call(operator.getitem, (new, i))
        rw.set(node, out, layouts[i] if isinstance(layouts, list) else None)


register(Cat(), "aten.cat")
register(Split(), "aten.split.Tensor", "aten.split_with_sizes")
register(Slice(), "aten.slice.Tensor")
register(GetItem(), "<built-in function getitem>")
