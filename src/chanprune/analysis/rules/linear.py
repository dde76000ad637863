"""Convolutions and linear layers: the producers and consumers of channels.

A dense conv/linear (groups == 1) reads its input channels through weight columns (consumer) and
creates fresh output channels (producer). Transposed convs, and ``addmm(bias, x, W)`` with a
parameter ``W`` of shape (in, out) (GPT-2's ``Conv1D``), are dense layers whose weight holds the
channels as (in, out, ...); a grouped transposed conv that is not depthwise is a barrier. A
depthwise conv maps channel c to channel c, so it is channel-preserving with per-channel
weights. Other grouped convs need equal channel counts per
group: each group is padded to the largest kept count with zero-weight slots (see Grouped).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..types import Consumer, FlowState, Producer, node_shape
from .base import Rule, op_name, same_calls
from .channelwise import ChannelwiseParams
from .registry import register

CONV = ("aten.conv1d", "aten.conv2d", "aten.conv3d")


TRANSPOSED = ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def _is_conv(node: fx.Node) -> bool:
    return op_name(node).split(".")[0] in ("conv1d", "conv2d", "conv3d", *TRANSPOSED)


def _is_transposed(node: fx.Node) -> bool:
    return op_name(node).split(".")[0] in TRANSPOSED


def conv_groups(node: fx.Node) -> int:
    if not _is_conv(node):
        return 1
    g = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    return int(g)


def _is_addmm(node: fx.Node) -> bool:
    return op_name(node).split(".")[0] == "addmm"


def _x(node: fx.Node) -> object:
    return node.args[1] if _is_addmm(node) else node.args[0]


def _w(node: fx.Node) -> object:
    return node.args[2] if _is_addmm(node) else node.args[1]


def _bias(node: fx.Node) -> object:
    if _is_addmm(node):
        return node.args[0]
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")


def weight_dims(node: fx.Node) -> tuple[int, int]:
    """(output-channel, input-channel) dimension of the layer's weight: transposed convs and
    addmm store it (in, out, ...)."""
    return (1, 0) if _is_addmm(node) or _is_transposed(node) else (0, 1)


def _with(node: fx.Node, x: object, w: object, b: object) -> tuple:
    """The layer's positional arguments with input, weight and bias replaced."""
    args = list(node.args)
    if _is_addmm(node):
        args[0], args[1], args[2] = b, x, w
    else:
        args[0], args[1] = x, w
        if b is not None:
            args[2] = b
    return tuple(args)


class Dense(Rule):
    """conv (groups == 1) and linear: consumer of the input axis, producer of the output axis."""

    def _in_dim(self, node: fx.Node) -> int:
        return 1 if _is_conv(node) else len(node_shape(_x(node))) - 1

    def flow(self, node: fx.Node, st: FlowState) -> None:
        x, w, b = _x(node), _w(node), _bias(node)
        wname, bname = st.param(w), st.param(b)
        shared = wname is not None and (st.shared(wname) or (bname and st.shared(bname)))
        if shared and same_calls(node, [w, b]) and conv_groups(node) == 1:
            st.tie_of[node.name] = wname
        elif wname is None or shared or (b is not None and bname is None):
            why = "weight/bias is computed or shared with another op"
            return st.barrier(node, f"{op_name(node)} {why}")
        if _is_addmm(node) and (
            node.kwargs.get("beta", 1) != 1
            or node.kwargs.get("alpha", 1) != 1
            or len(node_shape(b) or ()) != 1
        ):
            return st.barrier(node, f"{op_name(node)} scales its terms or broadcasts a 2-D bias")
        groups = conv_groups(node)
        if groups != 1 and _is_transposed(node) and not DEPTHWISE.matches(node, st):
            return st.barrier(node, f"{op_name(node)} with {groups} groups (not depthwise)")
        if groups != 1:
            return GROUPED.flow(node, st)
        ax = st.axis(x)
        if ax is not None and ax.dim != self._in_dim(node):
            st.pin(ax.ids, f"{st.where(node)} reads channels along another dimension")
            ax = None
        where = st.where(node)
        w_out, w_in = weight_dims(node)
        out_dim = 1 if _is_conv(node) else len(node_shape(node)) - 1
        first = st.tied.get(wname)
        if first is not None:  # a later call of a shared layer: the same output channels
            st.axes[node.name] = first.moved(out_dim)
            return
        if ax is not None:
            st.consumers.append(Consumer(node.name, wname, ax.ids, where, w_in))
        w_shape = st.capture.tensors[wname].shape
        out = st.new_axis(out_dim, int(w_shape[w_out]))
        first = st.n_producer_channels
        out.origin = np.arange(first, first + len(out), dtype=np.int64)
        st.n_producer_channels += len(out)
        st.producers.append(Producer(node.name, wname, bname, out.ids, first, where, w_out))
        st.axes[node.name] = out
        if node.name in st.tie_of:
            st.tied[wname] = out

    def _nonzero(self, node: fx.Node, lv) -> np.ndarray:
        """(out, in) mask of weight entries that are not all zero."""
        key = ("nz", node.name)
        if key not in lv.cache:
            w = lv.t(_w(node))
            w = w.transpose(0, 1) if weight_dims(node)[0] == 1 else w  # (out, in, ...)
            w = w.reshape(w.shape[0], w.shape[1], -1)
            # a 1x1 kernel or a linear needs no reduction over the kernel (a pass saved)
            nz = w[..., 0].ne(0) if w.shape[2] == 1 else w.abs().amax(-1).ne(0)
            lv.cache[key] = nz.numpy()
        return lv.cache[key]

    def zeros(self, node: fx.Node, lv) -> None:
        if lv.analysis.axes.get(node.name) is None:
            return Rule.zeros(self, node, lv)
        if conv_groups(node) != 1:
            return GROUPED.zeros(node, lv)
        nz = self._nonzero(node, lv)
        zin = lv.zero_of(_x(node)) if lv.axis(_x(node)) is not None else None
        live = nz if zin is None else nz & ~zin  # columns of zero inputs do not count
        zero = ~live.any(1)
        b = lv.t(_bias(node))
        if b is not None:
            zero &= (b == 0).numpy()
        lv.zero[node.name] = zero

    def demand(self, node: fx.Node, lv) -> None:
        if lv.analysis.axes.get(node.name) is None:
            return Rule.demand(self, node, lv)
        if conv_groups(node) != 1:
            return GROUPED.demand(node, lv)
        if lv.axis(_x(node)) is not None:
            dout = lv.out_demand(node)
            lv.want(_x(node), self._nonzero(node, lv)[dout].any(0))

    def emit(self, node: fx.Node, rw) -> None:
        if rw.analysis.axes.get(node.name) is None:
            return rw.verbatim(node)
        if conv_groups(node) != 1:
            return GROUPED.emit(node, rw)
        tie = rw.analysis.tie_of.get(node.name)
        if tie is not None:
            return self._emit_tied(node, rw, tie)
        lv = rw.live
        x, w_arg, b_arg = _x(node), _w(node), _bias(node)
        w_out, w_in = weight_dims(node)
        out = output_rows(node, lv, rw.policy)
        w = lv.t(w_arg).index_select(w_out, torch.from_numpy(out))
        xn, lx = rw.value(x)
        ax = rw.axis(x)
        if ax is not None:
            keep = lx[input_reads(node, lv, out)[lx]]
            if len(keep) == 0:
                keep = lx[:1] if len(lx) else np.array([0], dtype=np.int64)
            xn = rw.align(xn, ax.dim, lx, keep, x)
            w = w.index_select(w_in, torch.from_numpy(keep))
        wn, bn = _put_sliced(rw, w_arg, w, b_arg, out)
        args = _with(node, xn, wn, bn)
        rw.set(node, rw.call(node.target, args, dict(node.kwargs)), out)

    def _emit_tied(self, node: fx.Node, rw, kind: str) -> None:
        """A call of a layer called several times: every call uses one pruned weight, whose
        rows are what any call keeps (liveness ties them) and whose columns are what any call
        reads; each call's input is aligned to those columns (absent ones are zero or meet
        zero weights for the rows that call's readers need)."""
        cache = rw.tied
        lv, x = rw.live, _x(node)
        w_arg, b_arg = _w(node), _bias(node)
        w_out, w_in = weight_dims(node)
        n_in = lv.t(w_arg).shape[w_in]
        if kind not in cache:
            calls = [
                n for n in rw.analysis.capture.graph.nodes if rw.analysis.tie_of.get(n.name) == kind
            ]
            out = output_rows(node, lv, rw.policy)
            if any(rw.axis(_x(c)) is None for c in calls):  # an untracked input: all, in order
                cols = np.arange(n_in, dtype=np.int64)
            else:
                reads = np.zeros(n_in, dtype=bool)
                for c in calls:
                    reads |= input_reads(c, lv, out)
                lx = rw.value(x)[1]
                first = lx[reads[lx]]
                cols = np.concatenate([first, np.setdiff1d(np.flatnonzero(reads), first)])
                cols = cols if len(cols) else np.array([0], dtype=np.int64)
            w = lv.t(w_arg).index_select(w_out, torch.from_numpy(out))
            w = w.index_select(w_in, torch.from_numpy(cols))
            cache[kind] = (*_put_sliced(rw, w_arg, w, b_arg, out), out, cols)
        wn, bn, out, cols = cache[kind]
        xn, lx = rw.value(x)
        ax = rw.axis(x)
        if ax is not None:
            xn = rw.align(xn, ax.dim, lx, cols, x)
        rw.set(node, rw.call(node.target, _with(node, xn, wn, bn), dict(node.kwargs)), out)


def _put_sliced(rw, w_arg: fx.Node, w: torch.Tensor, b_arg: object, rows: np.ndarray) -> tuple:
    """The pruned weight ``w`` and the bias's ``rows`` as get_attr nodes (bias: None if none)."""
    wn = rw.put(rw.capture.state_names[w_arg.name], w, fresh=True)
    if b_arg is None:
        return wn, None
    bias = rw.live.t(b_arg).index_select(0, torch.from_numpy(rows))
    return wn, rw.put(rw.capture.state_names[b_arg.name], bias, fresh=True)


def output_rows(node: fx.Node, lv, policy) -> np.ndarray:
    """The rows a dense layer emits, in the policy's order (one zero row if none is kept)."""
    out = policy.order(node, lv.kept(node))
    return out if len(out) else np.array([0], dtype=np.int64)


def input_reads(node: fx.Node, lv, rows: np.ndarray) -> np.ndarray:
    """Per input position: does the layer read it (a weight for a kept row, a live input)?

    A layer that reads every channel its input keeps but the ones kept only to round a width
    (``liveness.rounding.round_depthwise``) reads those too, with its zero weights: usually the
    whole tensor instead of a slice, and an input width that is a multiple of the quantum. Under
    dense segments (``liveness.dense``) a layer reads all its input keeps."""
    x = _x(node)
    reads = DENSE._nonzero(node, lv)[rows].any(0) & ~lv.zero_of(x)
    dense = lv.dense_roots
    if dense is not None and isinstance(x, fx.Node) and lv.axis(x) is not None:
        k = lv.kept(x)  # channels of dense segments (liveness.dense): all of them, no slice
        whole = dense[lv.analysis.root[lv.axis(x).ids[k]]]
        reads[k[whole]] = True
        if whole.all():
            return reads
    pad = lv.padding.get(x.name) if isinstance(x, fx.Node) else None
    if pad is not None and len(pad) == len(reads):
        others = np.zeros(len(reads), dtype=bool)
        others[lv.kept(x)] = True
        others &= ~pad
        if (reads | ~others).all():
            reads = reads | pad
    return reads


def _rounded(n: int, full: int, quantum: int) -> int:
    """``n`` rounded up to a multiple of ``quantum``, at most ``full`` (the group's size)."""
    return min(full, -(-n // quantum) * quantum)


class Grouped(Rule):
    """Grouped conv. Depthwise (one input channel per group, same count out) is channelwise.

    Any other grouping is a producer of its output rows, and its input channels stay prunable:
    the pruned conv keeps the group count and gives every group the largest per-group count
    of kept rows (and of read inputs), rounded up to a multiple of the rewriter's
    ``group_quantum``, filling the shorter groups with zero-weight slots. The
    filler rows are original rows of the same group that are zero (or needed by nobody), so
    every emitted channel is a real one; filler inputs are any channel, read with weight 0.
    """

    def flow(self, node: fx.Node, st: FlowState) -> None:
        wname = st.param(node.args[1])
        w = st.capture.tensors[wname]
        ax = st.axis(node.args[0])
        if DEPTHWISE.matches(node, st):
            return DEPTHWISE.flow(node, st)
        if ax is not None and ax.dim != 1:
            st.pin(ax.ids, f"{st.where(node)} reads channels along another dimension")
        out = st.new_axis(1, int(w.shape[0]))
        first = st.n_producer_channels
        out.origin = np.arange(first, first + len(out), dtype=np.int64)
        st.n_producer_channels += len(out)
        bname = st.param(_bias(node))
        st.producers.append(Producer(node.name, wname, bname, out.ids, first, st.where(node)))
        st.kinds[node.name] = "grouped"
        st.axes[node.name] = out

    def _is_dw(self, node: fx.Node, an) -> bool:
        return an.kinds.get(node.name) == "channelwise"

    def _reads(self, node: fx.Node, lv) -> tuple[np.ndarray, bool]:
        """(out, in-group) mask of non-zero weight entries, and whether the input is tracked."""
        return DENSE._nonzero(node, lv), lv.axis(node.args[0]) is not None

    def _input_zero(self, node: fx.Node, lv, groups: int, per_in: int) -> np.ndarray:
        """(groups, per_in): is input channel j of group g provably zero?"""
        z = lv.zero_of(node.args[0]) if lv.axis(node.args[0]) is not None else None
        if z is None:
            return np.zeros((groups, per_in), dtype=bool)
        return z.reshape(groups, per_in)

    def zeros(self, node: fx.Node, lv) -> None:
        if self._is_dw(node, lv.analysis):
            return DEPTHWISE.zeros(node, lv)
        nz = DENSE._nonzero(node, lv)  # (out, per_in)
        groups = conv_groups(node)
        per_out = nz.shape[0] // groups
        zin = self._input_zero(node, lv, groups, nz.shape[1])
        zin_rows = np.repeat(zin, per_out, axis=0)  # (out, per_in)
        zero = ~(nz & ~zin_rows).any(1)
        b = lv.t(_bias(node))
        if b is not None:
            zero &= (b == 0).numpy()
        lv.zero[node.name] = zero

    def demand(self, node: fx.Node, lv) -> None:
        if self._is_dw(node, lv.analysis):
            return DEPTHWISE.demand(node, lv)
        if lv.axis(node.args[0]) is None:
            return
        nz = DENSE._nonzero(node, lv)
        groups = conv_groups(node)
        per_out = nz.shape[0] // groups
        d = lv.out_demand(node).reshape(groups, per_out)
        need = (nz.reshape(groups, per_out, -1) & d[:, :, None]).any(1)  # (groups, per_in)
        lv.want(node.args[0], need.reshape(-1))

    def emit(self, node: fx.Node, rw) -> None:
        if self._is_dw(node, rw.analysis):
            return DEPTHWISE.emit(node, rw)
        lv = rw.live
        x, w_arg, b_arg = node.args[0], node.args[1], _bias(node)
        w = lv.t(w_arg)
        groups = conv_groups(node)
        per_out, per_in = w.shape[0] // groups, w.shape[1]
        nz = DENSE._nonzero(node, lv)
        kept = np.zeros(w.shape[0], dtype=bool)
        kept[lv.kept(node)] = True
        zero_out = lv.zero[node.name]
        zin = self._input_zero(node, lv, groups, per_in)
        xn, lx = rw.value(x)
        tracked = rw.axis(x) is not None
        present = np.zeros(groups * per_in, dtype=bool)
        if tracked:
            present[lx] = True
        else:
            present[:] = True
        rows, cols, real_rows, real_cols = [], [], [], []
        for g in range(groups):
            r = np.arange(g * per_out, (g + 1) * per_out)
            rows.append(r[kept[r]])
            reads = (nz[rows[-1]].any(0) if len(rows[-1]) else np.zeros(per_in, bool)) & ~zin[g]
            cols.append(np.flatnonzero(reads))
        q = rw.group_quantum
        n_rows = _rounded(max(1, max(len(r) for r in rows)), per_out, q)
        n_cols = _rounded(max(1, max(len(c) for c in cols)), per_in, q)
        for g in range(groups):
            base = np.arange(g * per_out, (g + 1) * per_out)
            spare = [i for i in np.argsort(~zero_out[base], kind="stable") if not kept[base[i]]]
            fill = base[spare[: n_rows - len(rows[g])]]
            real_rows.append(len(rows[g]))
            rows[g] = np.concatenate([rows[g], fill]).astype(np.int64)
            taken = set(cols[g].tolist())
            order_in = np.argsort(~present[g * per_in : (g + 1) * per_in], kind="stable")
            spare_in = [j for j in order_in.tolist() if j not in taken]
            real_cols.append(len(cols[g]))
            cols[g] = np.concatenate([cols[g], spare_in[: n_cols - len(cols[g])]]).astype(np.int64)
        new_w = torch.zeros((groups * n_rows, n_cols, *w.shape[2:]), dtype=w.dtype)
        for g in range(groups):
            rr = torch.from_numpy(rows[g][: real_rows[g]])
            cc = torch.from_numpy(cols[g][: real_cols[g]])
            block = w.index_select(0, rr).index_select(1, cc)
            new_w[g * n_rows : g * n_rows + real_rows[g], : real_cols[g]] = block
        out = np.concatenate(rows)
        to = np.concatenate([c + g * per_in for g, c in enumerate(cols)])
        if tracked:
            xn = rw.align(xn, 1, lx, to, x)
        else:
            full = np.arange(groups * per_in, dtype=np.int64)
            xn = rw.align(xn, 1, full, to, x) if not np.array_equal(to, full) else xn
        # the weight reads different inputs per group and holds zeros: the spec can't decode it
        wname = rw.capture.state_names[w_arg.name]
        groups_in = {"groups": [c.tolist() for c in cols]}
        rw.selections[wname] = [out.tolist(), groups_in] + [None] * (w.dim() - 2)
        args = list(node.args)
        args[0], args[1] = xn, rw.put(wname, new_w)
        if b_arg is not None:
            b = lv.t(b_arg)
            new_b = torch.zeros(len(out), dtype=b.dtype)
            for g in range(groups):
                k = real_rows[g]
                new_b[g * n_rows : g * n_rows + k] = b[torch.from_numpy(rows[g][:k])]
            bname = rw.capture.state_names[b_arg.name]
            rw.selections[bname] = [out.tolist()]
            args[2] = rw.put(bname, new_b)
        rw.set(node, rw.call(node.target, tuple(args), dict(node.kwargs)), out)


class Depthwise(ChannelwiseParams):
    """Depthwise conv, transposed or not: output channel c = conv(input channel c, weight[c])
    + bias[c]."""

    def matches(self, node: fx.Node, st: FlowState) -> bool:
        """One input and one output channel per group, on a tracked channel axis."""
        w = st.capture.tensors[st.param(node.args[1])]
        ax = st.axis(node.args[0])
        return (
            w.shape[1] == 1 and w.shape[0] == conv_groups(node) and ax is not None and ax.dim == 1
        )

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
DENSE = register(
    Dense(),
    *("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.linear", "aten.addmm.default"),
    *(f"aten.{op}" for op in TRANSPOSED),
)


class Embedding(Rule):
    """embedding(weight, ids): a producer of the weight's columns (a (vocab, C) table, so its
    output channels lie along dimension 1, as addmm's); the ids carry no channel. Where a
    transformer's residual stream starts, so the stream's first add is no barrier."""

    def flow(self, node: fx.Node, st: FlowState) -> None:
        wname = st.param(node.args[0])
        if wname is None or st.shared(wname) or st.axis(node.args[1]) is not None:
            return Rule.flow(self, node, st)  # a computed or shared table: not a producer
        out = st.new_axis(len(node_shape(node)) - 1, int(st.capture.tensors[wname].shape[1]))
        first = st.n_producer_channels
        out.origin = np.arange(first, first + len(out), dtype=np.int64)
        st.n_producer_channels += len(out)
        st.producers.append(Producer(node.name, wname, None, out.ids, first, st.where(node), 1))
        st.axes[node.name] = out

    def zeros(self, node: fx.Node, lv) -> None:
        if lv.analysis.axes.get(node.name) is None:
            return Rule.zeros(self, node, lv)
        lv.zero[node.name] = (lv.t(node.args[0]) == 0).all(0).numpy()

    def demand(self, node: fx.Node, lv) -> None:
        if lv.analysis.axes.get(node.name) is None:
            return Rule.demand(self, node, lv)

    def emit(self, node: fx.Node, rw) -> None:
        if rw.analysis.axes.get(node.name) is None:
            return rw.verbatim(node)
        out = output_rows(node, rw.live, rw.policy)
        w = rw.live.t(node.args[0]).index_select(1, torch.from_numpy(out))
        wn = rw.put(rw.capture.state_names[node.args[0].name], w, fresh=True)
        args = (wn, *(rw.map_arg(a) for a in node.args[1:]))
        rw.set(node, rw.call(node.target, args, dict(node.kwargs)), out)


register(Embedding(), "aten.embedding")
