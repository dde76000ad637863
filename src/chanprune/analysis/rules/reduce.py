"""Reductions: over other dimensions they keep the channel axis (``channelwise.Reduce``); over
the channel axis they are the statistics of norms written out as element-wise ops.

Hugging Face's ``LlamaRMSNorm`` and ``T5LayerNorm`` (``x * rsqrt(x.pow(2).mean(-1, keepdim=True)
+ eps)``), hand-written LayerNorms (``x - x.mean(-1, keepdim=True)``, ``x.var(-1)``) and
ConvNeXt's channels-first LayerNorm written out (``x.mean(1, keepdim=True)`` of an NCHW map)
reduce over the channels. The result has no channel axis, and it must equal the masked model's
statistic, taken over the original width. As for ``aten.layer_norm`` (``norm.py``), the
reduction demands every non-zero channel of its input, so the only channels missing from the
pruned tensor are exactly zero in the masked model, and its channels are *not* pinned:

- a sum over the channels does not change when zeros are left out: it runs on the pruned tensor;
- a mean is that sum over the original count: the pruned tensor's mean times ``k / C`` (``k`` of
  the ``C`` channels present);
- any other reduction (``amax``, ``var``, a vector norm ...) sees its input at full width, the
  removed channels padded back as the zeros they are.

Centering (``x - mean``) is no concern of this rule: the subtraction's rule (``elementwise.py``)
knows a zero channel minus a broadcast statistic is live, so its channels stay (padded in) and
the variance taken over them is the masked model's.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import fx

from ..types import FlowState
from .base import Rule
from .channelwise import Reduce, one_at_least
from .registry import register

aten = torch.ops.aten

STAT = "channel-stat"  # kinds[] mark: a reduction over the channel axis


class ChannelReduce(Reduce):
    """mean / sum / amax / amin over a list of dims, the channel axis among them or not.

    ``how``: how a reduction over the channels is emitted on the pruned tensor ("sum", "mean")
    or at full width ("full")."""

    how = "full"

    def _over_channels(self, node: fx.Node, st: FlowState) -> bool:
        x = node.args[0]
        ax = st.axis(x)
        if ax is None or any(st.axis(a) is not None for a in node.all_input_nodes if a is not x):
            return False
        return ax.dim in self._dims(node)[0]

    def flow(self, node: fx.Node, st: FlowState) -> None:
        if not self._over_channels(node, st):
            return super().flow(node, st)
        st.kinds[node.name] = STAT
        st.axes[node.name] = None  # the statistic has no channel axis

    def _stat(self, node: fx.Node, an) -> bool:
        return an.kinds.get(node.name) == STAT

    def zeros(self, node: fx.Node, lv) -> None:
        if not self._stat(node, lv.analysis):
            return super().zeros(node, lv)
        lv.zero[node.name] = None

    def demand(self, node: fx.Node, lv) -> None:
        if not self._stat(node, lv.analysis):
            return super().demand(node, lv)
        lv.require_all(node.args[0])  # every non-zero channel counts in the statistic

    def emit(self, node: fx.Node, rw) -> None:
        if not self._stat(node, rw.analysis):
            return super().emit(node, rw)
        x = node.args[0]
        xn, lx = rw.value(x)
        if self.how == "full" or not isinstance(lx, np.ndarray):
            return rw.verbatim(node)  # full width: removed channels come back as zeros
        n = len(rw.axis(x))
        target = one_at_least(lx, lx)  # a mean over no channels is NaN: one zero instead
        xn = rw.align(xn, rw.axis(x).dim, lx, target, x)
        out = rw.call(node.target, (xn, *rw.map_arg(node.args[1:])), dict(node.kwargs))
        if self.how == "mean" and len(target) != n:
            out = rw.call(aten.mul.Tensor, (out, len(target) / n))
        rw.set(node, out, None)


class SumReduce(ChannelReduce):
    how = "sum"


class MeanReduce(ChannelReduce):
    how = "mean"


class VectorNorm(ChannelReduce):
    """linalg_vector_norm(x, ord, dim, keepdim)."""

    dims_arg = 2
    keepdim_arg = 3


class Variance(ChannelReduce):
    """var / std, ``.dim`` overloads: ``(x, dim, unbiased=True, keepdim=False)``.

    Over other dimensions a zero channel has variance 0, unless the count does not exceed the
    correction (``0 / 0``): then the channel is NaN, so it is not treated as zero."""

    keepdim_arg = 3

    def correction(self, node: fx.Node) -> float:
        unbiased = node.args[2] if len(node.args) > 2 else node.kwargs.get("unbiased", True)
        return 1 if unbiased else 0

    def preserves_zero(self, node: fx.Node) -> bool:
        correction = self.correction(node)
        if correction == 0:
            return True
        sizes = node.args[0].meta["val"].shape
        dims = self._dims(node)[0]
        if 0 in dims or not all(isinstance(sizes[d], int) for d in dims):
            return False  # the batch, or a size that varies: it may be too small at run time
        return math.prod(sizes[d] for d in dims) > correction


class VarianceCorrection(Variance):
    """var / std, ``.correction`` overloads: ``(x, dim, *, correction=1, keepdim=False)``."""

    keepdim_arg = 99  # keepdim is keyword-only: never positional

    def correction(self, node: fx.Node) -> float:
        c = node.kwargs.get("correction")
        return 1 if c is None else c


class Assertion(Rule):
    """``_assert_tensor_metadata(x, size, stride, dtype, device=, layout=)``: a check with no
    output (Hugging Face's ``x.to(torch.float32)`` on a float32 tensor traces as one). It reads
    no channel, so it is no barrier; on a pruned tensor the size and stride it names are the
    original ones, so the rewrite keeps the dtype, device and layout checks only."""

    def flow(self, node: fx.Node, st: FlowState) -> None:
        st.axes[node.name] = None

    def zeros(self, node: fx.Node, lv) -> None:
        lv.zero[node.name] = None

    def demand(self, node: fx.Node, lv) -> None:
        pass  # metadata only: no channel of the input is needed

    def emit(self, node: fx.Node, rw) -> None:
        x = node.args[0]
        if rw.axis(x) is None:
            return rw.verbatim(node)
        args = [rw.value(x)[0], None, None, *rw.map_arg(node.args[3:])]
        rw.set(node, rw.call(node.target, tuple(args), dict(node.kwargs)), None)


register(ChannelReduce(), "aten.amax", "aten.amin")
register(SumReduce(), "aten.sum.dim_IntList", "aten.sum.default")
register(MeanReduce(), "aten.mean.dim", "aten.mean.default")
register(VectorNorm(), "aten.linalg_vector_norm")
register(Variance(), "aten.var.dim", "aten.std.dim")
register(VarianceCorrection(), "aten.var.correction", "aten.std.correction")
register(Assertion(), "aten._assert_tensor_metadata")
