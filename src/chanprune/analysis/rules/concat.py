"""Concatenation, split, unbind and slice, and tuple indexing.

Along the channel axis, concatenation places the inputs' channels side by side (DenseNet,
Inception), each input keeping its own ids (an untracked input gets fresh pinned ids), and split
and slice hand out ranges of positions. Along any other dimension (the batch of a two-view
encoder, tokens, a spatial half) these ops keep every channel at its position: the pieces of a
split share the input's ids, and the operands of a concatenation or stack are unified position
by position, like a residual add's. So pruning stays exact and the op runs unchanged on the
pruned width. Sizes along those dimensions may be symbolic (computed from the batch), so the
rules read the number of pieces off the traced value and map the size arguments into the new
graph rather than recomputing them.
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


def _mapped(rw, node: fx.Node, first: object) -> tuple[tuple, dict]:
    """``node``'s arguments in the new graph with ``first`` in place of its first one: size
    arguments may be nodes (a split size computed from a symbolic batch)."""
    args = (first, *(rw.map_arg(a) for a in node.args[1:]))
    return args, {k: rw.map_arg(v) for k, v in node.kwargs.items()}


class Cat(Rule):
    """cat(tensors, dim): along the channel axis the operands' ids side by side ("channels");
    along any other dimension one channel axis whose ids every operand shares ("align")."""

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
        _align_flow(node, st, axes, tracked_dims.pop())

    def _in_dim(self, node: fx.Node, out_dim: int) -> int:
        """The operands' channel dimension, given the output's (cat keeps the rank)."""
        return out_dim

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
        in_dim = self._in_dim(node, ax.dim)
        news, layouts = [], []
        for t in tensors:
            new, lay = rw.value(t)
            if rw.axis(t) is None:
                lay = np.arange(node_shape(t)[in_dim], dtype=np.int64)
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
                rw.align(n, in_dim, lay, target, t)
                for t, n, lay in zip(tensors, news, layouts, strict=True)
            ]
        out = rw.call(node.target, *_mapped(rw, node, news))
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


def _align_flow(node: fx.Node, st: FlowState, axes: list[Axis | None], out_dim: int) -> None:
    """Operands joined along a dimension other than their channel axis: position i of every
    operand is the same channel (its zero needs all of theirs), so their ids are unified."""
    first = next(a for a in axes if a is not None)
    for a in axes:
        if a is not None:
            st.union(first.ids, a.ids)
    # an untracked operand (a class token) holds every channel in order: it is aligned to
    # the output's layout like a tracked one, so the channels stay prunable
    st.kinds[node.name] = "align"
    st.axes[node.name] = Axis(out_dim, first.ids, np.full(len(first), -1, dtype=np.int64))


class Stack(Cat):
    """stack(tensors, dim): a new dimension, never the channel axis; the operands' channels
    are unified as in a concatenation along another dimension (two views stacked back)."""

    def flow(self, node: fx.Node, st: FlowState) -> None:
        axes = [st.axis(t) for t in node.args[0]]
        if all(a is None for a in axes):
            st.axes[node.name] = None
            return
        tracked_dims = {a.dim for a in axes if a is not None}
        if len(tracked_dims) > 1:
            return st.barrier(node, "stack mixes channel axes")
        c = tracked_dims.pop()
        d = _dim(node, 1, 0, len(node_shape(node)))
        _align_flow(node, st, axes, c + (d <= c))

    def _in_dim(self, node: fx.Node, out_dim: int) -> int:
        d = _dim(node, 1, 0, len(node_shape(node)))
        return out_dim - (d < out_dim)


class Split(Rule):
    """split.Tensor(x, size, dim) / split_with_sizes(x, sizes, dim) -> a list of tensors.

    Along the channel axis each piece takes its range of ids ("channels"). Along any other
    dimension ("other": two views split off the batch, a spatial half) every piece holds every
    channel with the input's ids, so the pieces stay in the input's segments and the op runs
    unchanged on the pruned width. The pieces are read off the traced value: the size
    arguments may be nodes (a size computed from a symbolic batch), and their number is what
    the trace saw."""

    dim_arg = 2  # the index of the ``dim`` argument

    def _piece_dim(self, ax_dim: int, dim: int) -> int:
        """Where a piece's channel axis is, split along ``dim`` (split keeps the rank)."""
        return ax_dim

    def _channel_pieces(self, node: fx.Node, st: FlowState, ax: Axis, sizes: list) -> None:
        if not all(isinstance(s, int) for s in sizes):
            return st.barrier(node, "split of the channel axis into sizes known only at run time")
        bounds = np.cumsum([0, *sizes])
        st.kinds[node.name] = "channels"
        st.axes[node.name] = [
            Axis(ax.dim, ax.ids[s:e], ax.origin[s:e]) for s, e in itertools.pairwise(bounds)
        ]

    def flow(self, node: fx.Node, st: FlowState) -> None:
        ax = st.axis(node.args[0])
        if ax is None:
            return Rule.flow(self, node, st)
        pieces = node.meta.get("val")
        if not isinstance(pieces, list | tuple):
            return st.barrier(node, "a split whose pieces were not traced")
        dim = _dim(node, self.dim_arg, 0, len(node_shape(node.args[0])))
        if dim == ax.dim:
            return self._channel_pieces(node, st, ax, [p.shape[dim] for p in pieces])
        st.kinds[node.name] = "other"
        moved = self._piece_dim(ax.dim, dim)
        st.axes[node.name] = [Axis(moved, ax.ids, ax.origin) for _ in pieces]

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
            rw.set(node, rw.call(node.target, *_mapped(rw, node, xn)), [lx for _ in axes])
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


class Unbind(Split):
    """unbind.int(x, dim) -> the slices along ``dim``, which disappears. Along any dimension
    but the channel axis, as a split; along the channel axis each piece is one channel without
    an axis of its own: a barrier."""

    dim_arg = 1

    def _piece_dim(self, ax_dim: int, dim: int) -> int:
        return ax_dim - (dim < ax_dim)

    def _channel_pieces(self, node: fx.Node, st: FlowState, ax: Axis, sizes: list) -> None:
        st.barrier(node, "unbind of the channel axis")


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
        if dim != ax.dim:  # every channel, at its position (two views sliced off the batch)
            st.kinds[node.name] = "other"
            st.axes[node.name] = Axis(ax.dim, ax.ids, ax.origin)
            return
        if any(isinstance(a, fx.Node) for a in node.args[2:]):
            return st.barrier(node, "slice of the channel axis at a bound known only at run time")
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
            rw.set(node, rw.call(node.target, *_mapped(rw, node, xn)), lx)
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
register(Stack(), "aten.stack")
register(Split(), "aten.split.Tensor", "aten.split_with_sizes")
register(Unbind(), "aten.unbind.int")
register(Slice(), "aten.slice.Tensor")
register(GetItem(), "<built-in function getitem>")
