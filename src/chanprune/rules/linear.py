"""Convolutions and linear layers: the producers and consumers of channels.

A dense conv/linear (groups == 1) reads its input channels through weight columns (consumer) and
creates fresh output channels (producer). A depthwise conv maps channel c to channel c, so it is
channel-preserving with per-channel weights. Other grouped convs need equal channel counts per
group, so their inputs and outputs are pinned (shown to the op in full) for now.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..analysis import Consumer, FlowState, Producer, node_shape
from . import register
from .base import Rule, op_name
from .channelwise import ChannelwiseParams

CONV = ("aten.conv1d", "aten.conv2d", "aten.conv3d")


def _is_conv(node: fx.Node) -> bool:
    return op_name(node).split(".")[0] in ("conv1d", "conv2d", "conv3d")


def _groups(node: fx.Node) -> int:
    if not _is_conv(node):
        return 1
    g = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    return int(g)


def _bias(node: fx.Node) -> object:
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")


class Dense(Rule):
    """conv (groups == 1) and linear: consumer of the input axis, producer of the output axis."""

    def _in_dim(self, node: fx.Node) -> int:
        return 1 if _is_conv(node) else len(node_shape(node.args[0])) - 1

    def flow(self, node: fx.Node, st: FlowState) -> None:
        x, w, b = node.args[0], node.args[1], _bias(node)
        wname, bname = st.param(w), st.param(b)
        if (
            wname is None
            or st.shared(wname)
            or (b is not None and (bname is None or st.shared(bname)))
        ):
            why = "weight/bias is computed or shared with another op"
            return st.barrier(node, f"{op_name(node)} {why}")
        groups = _groups(node)
        if groups != 1:
            return GROUPED.flow(node, st)
        ax = st.axis(x)
        if ax is not None and ax.dim != self._in_dim(node):
            st.pin(ax.ids, f"{st.where(node)} reads channels along another dimension")
            ax = None
        where = st.where(node)
        if ax is not None:
            st.consumers.append(Consumer(node.name, wname, ax.ids, where))
        w_shape = st.capture.tensors[wname].shape
        out_dim = 1 if _is_conv(node) else len(node_shape(node)) - 1
        out = st.new_axis(out_dim, int(w_shape[0]))
        first = st.n_producer_channels
        out.origin = np.arange(first, first + len(out), dtype=np.int64)
        st.n_producer_channels += len(out)
        st.producers.append(Producer(node.name, wname, bname, out.ids, first, where))
        st.axes[node.name] = out

    def _nonzero(self, node: fx.Node, lv) -> torch.Tensor:
        """(out, in) mask of weight entries that are not all zero."""
        key = ("nz", node.name)
        if key not in lv.cache:
            w = lv.t(node.args[1])
            lv.cache[key] = w.reshape(w.shape[0], w.shape[1], -1).abs().amax(-1).ne(0).numpy()
        return lv.cache[key]

    def zeros(self, node: fx.Node, lv) -> None:
        if lv.analysis.axes.get(node.name) is None:
            return Rule.zeros(self, node, lv)
        if _groups(node) != 1:
            return GROUPED.zeros(node, lv)
        nz = self._nonzero(node, lv)
        zin = lv.zero_of(node.args[0]) if lv.axis(node.args[0]) is not None else None
        live = nz if zin is None else nz[:, ~zin]
        zero = ~live.any(1)
        b = lv.t(_bias(node))
        if b is not None:
            zero &= (b == 0).numpy()
        lv.zero[node.name] = zero

    def demand(self, node: fx.Node, lv) -> None:
        if lv.analysis.axes.get(node.name) is None:
            return Rule.demand(self, node, lv)
        if _groups(node) != 1:
            return GROUPED.demand(node, lv)
        if lv.axis(node.args[0]) is not None:
            dout = lv.out_demand(node)
            lv.want(node.args[0], self._nonzero(node, lv)[dout].any(0))

    def emit(self, node: fx.Node, rw) -> None:
        if rw.analysis.axes.get(node.name) is None:
            return rw.verbatim(node)
        if _groups(node) != 1:
            return GROUPED.emit(node, rw)
        lv = rw.live
        x, w_arg, b_arg = node.args[0], node.args[1], _bias(node)
        out = output_rows(node, lv, rw.policy)
        w = lv.t(w_arg)
        xn, lx = rw.value(x)
        ax = rw.axis(x)
        if ax is not None:
            keep = lx[input_reads(node, lv, out)[lx]]
            if len(keep) == 0:
                keep = lx[:1] if len(lx) else np.array([0], dtype=np.int64)
            xn = rw.align(xn, ax.dim, lx, keep, x)
            w = w.index_select(0, torch.from_numpy(out)).index_select(1, torch.from_numpy(keep))
        else:
            w = w.index_select(0, torch.from_numpy(out))
        wname = rw.capture.state_names[w_arg.name]
        args = list(node.args)
        args[0], args[1] = xn, rw.put(wname, w)
        if b_arg is not None:
            bias = lv.t(b_arg).index_select(0, torch.from_numpy(out))
            args[2] = rw.put(rw.capture.state_names[b_arg.name], bias)
        rw.set(node, rw.call(node.target, tuple(args), dict(node.kwargs)), out)


def output_rows(node: fx.Node, lv, policy) -> np.ndarray:
    """The rows a dense layer emits, in the policy's order (one zero row if none is kept)."""
    out = policy.order(node, lv.kept(node))
    return out if len(out) else np.array([0], dtype=np.int64)


def input_reads(node: fx.Node, lv, rows: np.ndarray) -> np.ndarray:
    """Per input position: does the layer read it (a weight for a kept row, a live input)?"""
    return DENSE._nonzero(node, lv)[rows].any(0) & ~lv.zero_of(node.args[0])


class Grouped(Rule):
    """Grouped conv. Depthwise (one input channel per group, same count out) is channelwise;
    any other grouping pins its input and output channels (full width, exact)."""

    def flow(self, node: fx.Node, st: FlowState) -> None:
        wname = st.param(node.args[1])
        w = st.capture.tensors[wname]
        ax = st.axis(node.args[0])
        if w.shape[1] == 1 and w.shape[0] == _groups(node) and ax is not None and ax.dim == 1:
            return DEPTHWISE.flow(node, st)
        st.untracked(ax, f"reaches grouped {st.where(node)} (groups={_groups(node)})")
        out = st.new_axis(1, int(w.shape[0]))
        st.pin(out.ids, f"output of grouped {st.where(node)}")
        st.axes[node.name] = out

    def _is_dw(self, node: fx.Node, an) -> bool:
        return an.kinds.get(node.name) == "channelwise"

    def zeros(self, node: fx.Node, lv) -> None:
        if self._is_dw(node, lv.analysis):
            return DEPTHWISE.zeros(node, lv)
        w, b = lv.t(node.args[1]), lv.t(_bias(node))
        zero = (w == 0).reshape(w.shape[0], -1).all(1).numpy()
        if b is not None:
            zero &= (b == 0).numpy()
        lv.zero[node.name] = zero

    def demand(self, node: fx.Node, lv) -> None:
        if self._is_dw(node, lv.analysis):
            return DEPTHWISE.demand(node, lv)
        lv.require_all(node.args[0])

    def emit(self, node: fx.Node, rw) -> None:
        if self._is_dw(node, rw.analysis):
            return DEPTHWISE.emit(node, rw)
        rw.verbatim(node)
        rw.lay[node.name] = np.arange(len(rw.axis(node)), dtype=np.int64)


class Depthwise(ChannelwiseParams):
    """Depthwise conv: output channel c = conv(input channel c, weight[c]) + bias[c]."""

    def params(self, node: fx.Node) -> list[tuple[int, int]]:
        return [(1, 0), (2, 0)]  # (argument index, channel dim of that tensor)

    def scale_shift(self, node: fx.Node, lv):
        w, b = lv.t(node.args[1]), lv.t(_bias(node))
        scale = (w != 0).reshape(w.shape[0], -1).any(1).numpy()
        shift = np.zeros(len(scale), dtype=bool) if b is None else (b != 0).numpy()
        return scale, shift

    def rebuild(self, node: fx.Node, args: list, kwargs: dict, n: int) -> tuple[list, dict]:
        args[6] = n
        return args, kwargs


GROUPED = Grouped()
DEPTHWISE = Depthwise()
DENSE = register(Dense(), "aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.linear")
