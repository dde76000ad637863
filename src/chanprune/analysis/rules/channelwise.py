"""Channel-preserving ops: activations, BatchNorm, pooling, reductions over other dimensions.

They keep the channel axis (and its ids). An op that maps 0 to 0 keeps zero channels zero; one
that does not (sigmoid, hardsigmoid, + constant) makes every channel live, so the rewriter pads
absent channels back in before it. Per-channel parameters (BN, depthwise weights) are sliced to
the layout; BN scale/shift decide which channels stay zero.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..types import Axis, Companion, FlowState, node_shape
from .base import Rule, op_name, same_calls
from .registry import register


class Channelwise(Rule):
    """out[c] depends on in[c] only (first argument); no channel-sized parameters."""

    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        """Where the channel axis lands, or None when the op touches it (then: barrier)."""
        return ax.dim

    def preserves_zero(self, node: fx.Node) -> bool:
        return True

    def flow(self, node: fx.Node, st: FlowState) -> None:
        x = node.args[0]
        ax = st.axis(x)
        others = [a for a in node.all_input_nodes if a is not x]
        if ax is None or any(st.axis(a) is not None for a in others):
            return Rule.flow(self, node, st)
        dim = self.axis_out(node, ax)
        if dim is None:
            return st.barrier(node, f"{op_name(node)} mixes channels")
        origin = ax.origin
        if not self.preserves_zero(node):
            st.dependent_raw.append(ax.origin)
            origin = np.full(len(ax), -1, dtype=np.int64)
        st.axes[node.name] = Axis(dim, ax.ids, origin)

    def _tracked(self, node: fx.Node, lv) -> bool:
        return isinstance(lv.analysis.axes.get(node.name), Axis)

    def zeros(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv):
            return Rule.zeros(self, node, lv)
        zin = lv.zero_of(node.args[0])
        lv.zero[node.name] = zin.copy() if self.preserves_zero(node) else np.zeros_like(zin)

    def demand(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv):
            return Rule.demand(self, node, lv)
        lv.want(node.args[0], lv.out_demand(node))
        lv.revive_input(node, node.args[0])

    def emit(self, node: fx.Node, rw) -> None:
        if not self._tracked(node, rw.live):
            return rw.verbatim(node)
        x = node.args[0]
        xn, lx = rw.value(x)
        target = one_at_least(rw.cover(node, lx, rw.live.kept(node)), lx)
        xn = rw.align(xn, rw.axis(x).dim, lx, target, x)
        args = (xn, *(rw.map_arg(a) for a in node.args[1:]))
        rw.set(node, rw.call(node.target, args, dict(node.kwargs)), target)


def one_at_least(target: np.ndarray, layout: np.ndarray) -> np.ndarray:
    """Keep one channel where none is kept: ops such as max_pool2d and a depthwise conv
    (groups=0) refuse a tensor with no channels. The input's first one, or a zero pad."""
    if len(target):
        return target
    return layout[:1] if len(layout) else np.array([0], dtype=np.int64)


_ZERO_CACHE: dict[tuple, bool] = {}


class Unary(Channelwise):
    """Element-wise ops with scalar arguments; whether f(0) == 0 is found by evaluating f(0)."""

    def preserves_zero(self, node: fx.Node) -> bool:
        key = (str(node.target), repr(node.args[1:]), repr(sorted(node.kwargs.items())))
        if key not in _ZERO_CACHE:
            val = node.args[0].meta.get("val")
            dtype = val.dtype if isinstance(val, torch.Tensor) else torch.float32
            try:
                out = node.target(torch.zeros(1, dtype=dtype), *node.args[1:], **node.kwargs)
                _ZERO_CACHE[key] = bool((out == 0).all())
            except Exception:
                _ZERO_CACHE[key] = False
        return _ZERO_CACHE[key]


class Pool(Channelwise):
    """Pooling over the trailing spatial dims: the channel axis must not be one of them."""

    spatial = 2

    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        rank = len(node_shape(node.args[0]))
        return ax.dim if ax.dim < rank - self.spatial else None


class TuplePool(Pool):
    """Pools returning (values, indices), e.g. adaptive_max_pool2d: both keep the channels."""

    def flow(self, node: fx.Node, st: FlowState) -> None:
        super().flow(node, st)
        ax = st.axes.get(node.name)
        if isinstance(ax, Axis):
            st.axes[node.name] = [ax, Axis(ax.dim, ax.ids, np.full(len(ax), -1, dtype=np.int64))]

    def _tracked(self, node: fx.Node, lv) -> bool:
        v = lv.analysis.axes.get(node.name)
        return isinstance(v, list) and isinstance(v[0], Axis)

    def zeros(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv):
            return Rule.zeros(self, node, lv)
        zin = lv.zero_of(node.args[0])
        lv.zero[node.name] = [zin.copy(), np.zeros_like(zin)]

    def _need(self, node: fx.Node, lv) -> np.ndarray:
        (z, _), (dv, di) = lv.zero[node.name], lv.demand[node.name]
        return (~z & dv) | di

    def demand(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv):
            return Rule.demand(self, node, lv)
        lv.want(node.args[0], self._need(node, lv))

    def emit(self, node: fx.Node, rw) -> None:
        if not self._tracked(node, rw.live):
            return rw.verbatim(node)
        x = node.args[0]
        xn, lx = rw.value(x)
        target = rw.cover(node, lx, np.flatnonzero(self._need(node, rw.live)))
        xn = rw.align(xn, rw.axis(x).dim, lx, target, x)
        args = (xn, *(rw.map_arg(a) for a in node.args[1:]))
        rw.set(node, rw.call(node.target, args, dict(node.kwargs)), [target, target])


class Pool1d(Pool):
    spatial = 1


class Pool3d(Pool):
    spatial = 3


class Reduce(Channelwise):
    """mean/sum/amax/norm over a list of dims other than the channel axis (registered, with
    reductions over the channels, in ``reduce.py``)."""

    dims_arg = 1
    keepdim_arg = 2

    def _dims(self, node: fx.Node) -> tuple[list[int], bool]:
        rank = len(node_shape(node.args[0]))
        dims = (
            node.args[self.dims_arg] if len(node.args) > self.dims_arg else node.kwargs.get("dim")
        )
        keep = node.args[self.keepdim_arg] if len(node.args) > self.keepdim_arg else None
        keep = bool(node.kwargs.get("keepdim", False) if keep is None else keep)
        if dims is None or dims == []:
            return list(range(rank)), keep
        dims = [dims] if isinstance(dims, int) else list(dims)
        return [d % rank for d in dims], keep

    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        dims, keep = self._dims(node)
        if ax.dim in dims:
            return None
        return ax.dim if keep else ax.dim - sum(d < ax.dim for d in dims)


class Pad(Channelwise):
    """pad(x, pad, mode, value) / constant_pad_nd(x, pad, value): pads the trailing dims.

    Keeps the channels when their own dimension is not padded; zero stays zero unless a
    constant pad value is non-zero (reflect/replicate/circular copy the channel's values)."""

    def axis_out(self, node: fx.Node, ax: Axis) -> int | None:
        pad, rank = list(node.args[1]), len(node_shape(node.args[0]))
        k = rank - 1 - ax.dim  # pad[2k], pad[2k + 1] pad the channel dimension
        return ax.dim if 2 * k + 1 >= len(pad) or pad[2 * k] == pad[2 * k + 1] == 0 else None

    def preserves_zero(self, node: fx.Node) -> bool:
        if "constant_pad_nd" in str(node.target):
            value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
            return not value
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        return mode != "constant" or not value


class ChannelwiseParams(Channelwise):
    """out[c] = f(in[c]; params[c]) along dim 1, e.g. BatchNorm and depthwise conv."""

    outputs: int | None = None  # number of outputs when the op returns a tuple
    zero_args: tuple[int, ...] = (1, 2)  # arguments to zero with a pruned producer channel

    def params(self, node: fx.Node) -> list[tuple[int, int]]:
        raise NotImplementedError

    def scale_shift(self, node: fx.Node, lv) -> tuple[np.ndarray, np.ndarray]:
        """Per channel: does the output depend on the input (scale), is it offset (shift)?"""
        raise NotImplementedError

    def rebuild(self, node: fx.Node, args: list, kwargs: dict, n: int) -> tuple[list, dict]:
        return args, kwargs

    def _arg(self, node: fx.Node, i: int) -> object:
        return node.args[i] if len(node.args) > i else None

    def flow(self, node: fx.Node, st: FlowState) -> None:
        ax = st.axis(node.args[0])
        names = [st.param(self._arg(node, i)) for i, _ in self.params(node)]
        given = [self._arg(node, i) is not None for i, _ in self.params(node)]
        if ax is None or ax.dim != 1:
            return Rule.flow(self, node, st)
        if any(g and n is None for g, n in zip(given, names, strict=True)):
            return st.barrier(node, f"{op_name(node)} has computed or shared parameters")
        if any(n is not None and st.shared(n) for n in names):
            params = [self._arg(node, i) for i, _ in self.params(node)]
            if not same_calls(node, params):
                return st.barrier(node, f"{op_name(node)} has computed or shared parameters")
            st.tie_of[node.name] = next(n for n in names if n is not None)
        for (i, d), name in zip(self.params(node), names, strict=True):
            if name is not None and i in self.zero_args:
                st.companions.append(Companion(name, d, np.arange(len(ax)), ax.origin))
        st.kinds[node.name] = "channelwise"
        out = Axis(1, ax.ids, ax.origin)
        st.axes[node.name] = [out] + [None] * (self.outputs - 1) if self.outputs else out

    def _tracked(self, node: fx.Node, lv) -> bool:
        return lv.analysis.kinds.get(node.name) == "channelwise"

    def zeros(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv):
            return Rule.zeros(self, node, lv)
        scale, shift = self.scale_shift(node, lv)
        zero = (lv.zero_of(node.args[0]) | ~scale) & ~shift
        lv.zero[node.name] = [zero] + [None] * (self.outputs - 1) if self.outputs else zero

    def demand(self, node: fx.Node, lv) -> None:
        if not self._tracked(node, lv):
            return Rule.demand(self, node, lv)
        d = lv.demand[node.name]
        d = d[0] if isinstance(d, list) else d
        lv.want(node.args[0], d & self.scale_shift(node, lv)[0])
        lv.revive_input(node, node.args[0])

    def emit(self, node: fx.Node, rw) -> None:
        if not self._tracked(node, rw.live):
            return rw.verbatim(node)
        lv = rw.live
        x = node.args[0]
        xn, lx = rw.value(x)
        z, d = lv.zero[node.name], lv.demand[node.name]
        z, d = (z[0], d[0]) if isinstance(z, list) else (z, d)
        tie = rw.analysis.tie_of.get(node.name)
        tied = rw.tied.get(tie)  # a call of a layer called several times: one slice
        if tied is None:
            target = one_at_least(rw.cover(node, lx, np.flatnonzero(~z & d)), lx)
        else:
            target = tied[0]
        args = list(node.args)
        args[0] = rw.align(xn, 1, lx, target, x)
        idx = torch.from_numpy(target)
        for k, (i, dim) in enumerate(self.params(node)):
            a = self._arg(node, i)
            if a is not None and tied is not None:
                args[i] = tied[1][k]
            elif a is not None:
                args[i] = rw.put(rw.capture.state_names[a.name], lv.t(a).index_select(dim, idx))
        if tie is not None and tied is None:
            rw.tied[tie] = (target, {k: args[i] for k, (i, _) in enumerate(self.params(node))})
        for i in range(1, len(args)):
            if isinstance(args[i], fx.Node) and args[i].graph is not rw.graph:
                args[i] = rw.map_arg(args[i])
        args, kwargs = self.rebuild(node, args, dict(node.kwargs), len(target))
        out = rw.call(node.target, tuple(args), kwargs)
        rw.set(node, out, [target] + [None] * (self.outputs - 1) if self.outputs else target)


class BatchNorm(ChannelwiseParams):
    """_native_batch_norm_legit_no_training(x, weight, bias, running_mean, running_var, m, eps)."""

    outputs = 3

    def params(self, node: fx.Node) -> list[tuple[int, int]]:
        return [(1, 0), (2, 0), (3, 0), (4, 0)]

    eps_arg = 6

    def scale_shift(self, node: fx.Node, lv) -> tuple[np.ndarray, np.ndarray]:
        """From the running statistics: scale = w / sqrt(var + eps), shift = b - mean * scale."""
        key = ("bn", node.name)
        if key not in lv.cache:
            w, b = lv.t(node.args[1]), lv.t(node.args[2])
            mean, var = lv.t(node.args[3]), lv.t(node.args[4])
            scale = torch.rsqrt(var + node.args[self.eps_arg]) * (1.0 if w is None else w)
            shift = (0.0 if b is None else b) - mean * scale
            lv.cache[key] = ((scale != 0).numpy(), (shift != 0).numpy())
        return lv.cache[key]


class InstanceNorm(BatchNorm):
    """instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, momentum,
    eps, cudnn_enabled): each channel normalised by its own statistics (RAFT's encoders, style
    transfer nets), so channelwise. With input statistics a zero channel stays zero before the
    affine (0 / sqrt(0 + eps)); with running ones it is BatchNorm's formula."""

    outputs = None
    eps_arg = 7

    def scale_shift(self, node: fx.Node, lv) -> tuple[np.ndarray, np.ndarray]:
        if not node.args[5] and node.args[3] is not None:  # running statistics
            return super().scale_shift(node, lv)
        n = len(lv.analysis.axes[node.name])
        w, b = lv.t(node.args[1]), lv.t(node.args[2])
        scale = np.ones(n, dtype=bool) if w is None else (w != 0).numpy()
        shift = np.zeros(n, dtype=bool) if b is None else (b != 0).numpy()
        return scale, shift


UNARY = (
    "relu",
    "relu6",
    "gelu",
    "silu",
    "sigmoid",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "tanh",
    "clamp",
    "clamp_min",
    "clamp_max",
    "exp",
    "clone",
    "alias",
    "detach",
    "_to_copy",
    "neg",
    "abs",
    "leaky_relu",
    "elu",
    "celu",
    "selu",
    "mish",
    "softplus",
    "erf",
    "sqrt",
    "rsqrt",
    "square",
    "pow",
    "log",
    "sin",
    "cos",
    "dropout",
    "native_dropout",
    "lift_fresh_copy",
    "contiguous",
    "gelu_",
    "threshold",
    "log_sigmoid",
    "logit",
    "sign",
    "reciprocal",
)
register(Unary(), *(f"aten.{n}" for n in UNARY))
register(Unary(), "aten.add.Scalar", "aten.sub.Scalar", "aten.mul.Scalar", "aten.div.Scalar")
register(Unary(), "aten.rsub.Scalar")  # 1 - z in a GRU: f(0) = 1, so not zero-preserving
register(
    TuplePool(),
    "aten.adaptive_max_pool2d",
    "aten.max_pool2d_with_indices",
)
register(
    Pool(),
    "aten.max_pool2d",
    "aten.avg_pool2d",
    "aten.adaptive_avg_pool2d",
    "aten.upsample_nearest2d",
    "aten.upsample_bilinear2d",
)
register(Pool1d(), "aten.max_pool1d", "aten.avg_pool1d", "aten.adaptive_avg_pool1d")
register(Pool3d(), "aten.max_pool3d", "aten.avg_pool3d", "aten.adaptive_avg_pool3d")
register(Pad(), "aten.pad", "aten.constant_pad_nd")
register(BatchNorm(), "aten._native_batch_norm_legit_no_training")
register(InstanceNorm(), "aten.instance_norm")
