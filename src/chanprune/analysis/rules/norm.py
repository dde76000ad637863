"""Norms whose statistics run over the channel axis: LayerNorm, RMSNorm, GroupNorm.

Removing a zero channel changes a channel mean or variance (the count shrinks), so these ops do
not commute with pruning. We compute them *exactly with the original channel count*: the norm
is handed its input at full width, the removed channels padded back as the zeros they are in the
masked model, and runs unchanged. Its channels are therefore *not* pinned: producers writing
into a normalised stream (a transformer's residual stream, a ConvNeXt block) still lose rows;
the only cost is a pad where the stream itself is narrower than the norm. Output channel c is
``xhat_c * w_c + b_c``: zero where weight and bias are (RMSNorm: ``x_c * r * w_c``, zero where
the input or the weight is). Output channel c stays channel c, so ids pass through.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..types import Axis, FlowState, node_shape
from .base import Rule, op_name
from .registry import register

aten = torch.ops.aten


class StatNorm(Rule):
    weight_arg = 2
    bias_arg: int | None = 3
    outputs: int | None = None  # tuple-returning variants (native_*): the first is the output
    preserves_zero = False  # RMSNorm: a zero input channel stays zero

    def channel_ok(self, node: fx.Node, ax: Axis, rank: int) -> bool:
        """LayerNorm/RMSNorm: over the last dimension only, and that is the channel axis."""
        shape = node.args[1]
        return len(shape) == 1 and ax.dim == rank - 1

    def flow(self, node: fx.Node, st: FlowState) -> None:
        x = node.args[0]
        ax = st.axis(x)
        if ax is None or any(st.axis(a) is not None for a in node.all_input_nodes if a is not x):
            return Rule.flow(self, node, st)
        if not self.channel_ok(node, ax, len(node_shape(x))):
            return st.barrier(node, f"{op_name(node)} normalises over more than the channel axis")
        st.kinds[node.name] = "statnorm"
        origin = ax.origin if self.preserves_zero else np.full(len(ax), -1, dtype=np.int64)
        out = Axis(ax.dim, ax.ids, origin)
        st.axes[node.name] = [out] + [None] * (self.outputs - 1) if self.outputs else out

    def _tracked(self, node: fx.Node, an) -> bool:
        return an.kinds.get(node.name) == "statnorm"

    def _param_zero(self, node: fx.Node, i: int | None, lv, n: int, absent: bool) -> np.ndarray:
        """Per channel: is this parameter zero there? ``absent`` answers for a missing one."""
        arg = node.args[i] if i is not None and len(node.args) > i else None
        if arg is None:
            return np.full(n, absent)
        t = lv.t(arg)
        if t is None or t.dim() != 1 or len(t) != n:
            return np.zeros(n, dtype=bool)  # computed or broadcast: assume non-zero
        return (t == 0).numpy()

    def zeros(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv.analysis):
            return Rule.zeros(self, node, lv)
        zin = lv.zero_of(node.args[0])
        n = len(zin)
        wz = self._param_zero(node, self.weight_arg, lv, n, absent=False)
        if self.preserves_zero:
            zero = zin | wz
        else:
            zero = wz & self._param_zero(node, self.bias_arg, lv, n, absent=True)
        lv.zero[node.name] = [zero] + [None] * (self.outputs - 1) if self.outputs else zero

    def demand(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv.analysis):
            return Rule.demand(self, node, lv)
        lv.require_all(node.args[0])  # the statistics read every non-zero channel

    order_free = True  # statistics over the whole channel axis: any channel order will do

    def emit(self, node: fx.Node, rw) -> None:
        if self.order_free and self._tracked(node, rw.analysis) and self._emit_in_layout(node, rw):
            return
        rw.verbatim(node)  # full width, original order: removed channels come back as zeros
        if self._tracked(node, rw.analysis):
            full = np.arange(len(rw.axis(node.args[0])), dtype=np.int64)
            rw.lay[node.name] = [full] + [None] * (self.outputs - 1) if self.outputs else full

    def _emit_in_layout(self, node: fx.Node, rw) -> bool:
        """Run the norm in the segment's planned order, weight and bias permuted alike (absent
        channels padded in as zeros). Computed or shared parameters keep the original order."""
        x = node.args[0]
        xn, lx = rw.value(x)
        params = [
            node.args[i] if i is not None and len(node.args) > i else None
            for i in (self.weight_arg, self.bias_arg)
        ]
        if not isinstance(lx, np.ndarray) or any(
            p is not None
            and (
                not isinstance(p, fx.Node)
                or p.name not in rw.capture.state_names
                or len(p.users) > 1  # shared: its other users expect the original order
            )
            for p in params
        ):
            return False
        ax = rw.axis(x)
        if len(lx) == len(ax):  # a layout holds each channel at most once
            order = np.asarray(lx, dtype=np.int64)  # every channel present: take it as it comes
        else:  # pad the absent ones in, into the segment's planned order (downstream expects it)
            order = np.asarray(rw.policy.order(x, np.arange(len(ax), dtype=np.int64)), np.int64)
        xn = rw.align(xn, ax.dim, lx, order, x)
        args = list(node.args)
        args[0] = xn
        idx = torch.from_numpy(order)
        for i, p in zip((self.weight_arg, self.bias_arg), params, strict=True):
            if p is not None:
                args[i] = rw.put(rw.capture.state_names[p.name], rw.live.t(p).index_select(0, idx))
        for i in range(1, len(args)):
            if isinstance(args[i], fx.Node) and args[i].graph is not rw.graph:
                args[i] = rw.map_arg(args[i])
        out = rw.call(node.target, tuple(args), dict(node.kwargs))
        rw.set(node, out, [order] + [None] * (self.outputs - 1) if self.outputs else order)
        return True


class NativeLayerNorm(StatNorm):
    """native_layer_norm(x, normalized_shape, weight, bias, eps) -> (out, mean, rstd)."""

    outputs = 3


class RmsNorm(StatNorm):
    """rms_norm(x, normalized_shape, weight, eps); _fused_rms_norm returns (out, rstd)."""

    bias_arg = None
    preserves_zero = True


class FusedRmsNorm(RmsNorm):
    outputs = 2


class GroupNorm(StatNorm):
    """group_norm(x, groups, weight, bias, eps, cudnn): statistics per group of channels."""

    order_free = False

    def channel_ok(self, node: fx.Node, ax: Axis, rank: int) -> bool:
        return ax.dim == 1


class NativeGroupNorm(GroupNorm):
    """native_group_norm(x, weight, bias, N, C, HxW, groups, eps) -> (out, mean, rstd)."""

    weight_arg, bias_arg, outputs = 1, 2, 3


register(StatNorm(), "aten.layer_norm")
register(NativeLayerNorm(), "aten.native_layer_norm")
register(RmsNorm(), "aten.rms_norm")
register(FusedRmsNorm(), "aten._fused_rms_norm")
register(GroupNorm(), "aten.group_norm")
register(NativeGroupNorm(), "aten.native_group_norm")
