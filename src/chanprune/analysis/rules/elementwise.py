"""Binary element-wise ops with broadcasting: residual add/sub, gates (mul), div.

Operands tracked on the same output dimension are the same channels: their ids are unified
(this is what makes a residual stage one segment). A parameter operand as wide as the channel
axis (layer scale, a bias) is sliced to the layout, and so is a per-channel vector computed
from parameters in forward (FrozenBatchNorm2d's scale and shift: ``paramexpr.py``); a
broadcast operand (size 1) passes; any other full-width operand pins the channels, since its
order cannot be changed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..types import Axis, Companion, FlowState, node_shape
from . import paramexpr, reduce
from .base import Rule
from .registry import register

aten = torch.ops.aten


def _operands(node: fx.Node) -> list[object]:
    return list(node.args[:2])


_VIEWS = ("view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "_to_copy", "clone", "alias")


def param_view(capture, a: object) -> str | None:
    """The parameter behind ``weight.view(1, -1, 1, 1)`` (a chain of pure view/cast ops, each
    used once, over a parameter with one non-trivial dimension), else None. Such an operand
    is sliced like the parameter itself (layer scale, EvoNorm/FRN weights)."""
    chain = a
    while isinstance(chain, fx.Node) and chain.name not in capture.state_names:
        name = getattr(chain.target, "__name__", "").split(".")[0]
        users = [u for u in chain.users if not str(u.target).startswith("aten._assert")]
        if chain.op != "call_function" or name not in _VIEWS or len(users) != 1:
            return None
        if name == "_to_copy" and set(chain.kwargs) - {"dtype"}:
            return None
        if any(isinstance(x, fx.Node) for x in (*chain.args[1:], *chain.kwargs.values())):
            return None
        chain = chain.args[0]
    if chain is a or not isinstance(chain, fx.Node):
        return None
    q = capture.state_names[chain.name]
    t = capture.tensors[q]
    if sum(s != 1 for s in t.shape) > 1:
        return None
    return q


def _operand_tensor(node: fx.Node, i: int, lv, info: dict) -> torch.Tensor | None:
    """A parameter operand's value: the placeholder, the parameter behind a view chain, or a
    vector computed from parameters (evaluated on the current weights)."""
    a = _operands(node)[i]
    if i in info.get("exprs", {}):
        return paramexpr.value(a, info["exprs"][i], lv)
    t = lv.t(a)
    if t is None and isinstance(a, fx.Node):
        q = param_view(lv.capture, a)
        if q is not None:
            t = lv.tensors[q].detach().reshape(node_shape(a))
    return t


def _centering(node: fx.Node, st: FlowState, others: list[tuple[int, fx.Node]]) -> bool:
    """``x - x.mean(dim, keepdim=True)`` over the channel axis: a LayerNorm written out. A zero
    channel of x does not stay zero, but as for ``aten.layer_norm`` (``norm.py``) that neither
    takes x's producers off the output-side candidates nor keeps their zero rows: the rows go,
    the centering pads its input back, and a residual stream read by the norm stays prunable."""
    if node.target is not aten.sub.Tensor or len(others) != 1 or others[0][0] != 1:
        return False
    stat = others[0][1]
    return st.kinds.get(stat.name) == reduce.STAT and stat.args[0] is node.args[0]


class Binary(Rule):
    kind = "add"  # "add" (sum-like), "mul" (product-like) or "div"

    def _layout(self, node: fx.Node, an) -> dict | None:
        return an.kinds.get(node.name)

    def flow(self, node: fx.Node, st: FlowState) -> None:
        out_shape = node_shape(node)
        if out_shape is None:
            return Rule.flow(self, node, st)
        rank = len(out_shape)
        tracked, consts, others = [], [], []
        for i, a in enumerate(_operands(node)):
            ax = st.axis(a)
            d = None if ax is None else ax.dim + rank - len(node_shape(a))
            if ax is not None and len(ax) == 1 and out_shape[d] != 1:
                # one channel broadcast over all of them (CBAM's spatial gate): read whole by
                # every output channel, so it stays, as an untracked broadcast operand
                st.pin(ax.ids, f"{st.where(node)} broadcasts it over the channels")
                others.append((i, a))
            elif ax is not None:
                tracked.append((i, d, ax))
            elif isinstance(a, fx.Node):
                others.append((i, a))
        if not tracked:
            st.axes[node.name] = None
            return
        dim = tracked[0][1]
        if any(d != dim for _, d, _ in tracked):
            return st.barrier(node, f"{node.target} combines channels of different dimensions")
        first = tracked[0][2]
        for _, _, ax in tracked[1:]:
            st.union(first.ids, ax.ids)
        pinned = revives = False
        exprs: dict[int, paramexpr.Expr] = {}
        for i, a in others:
            shape = node_shape(a) or ()
            d = dim - (rank - len(shape))
            if d < 0 or shape[d] == 1:
                continue  # broadcast along the channels
            name = st.param(a)
            pdim = d
            if name is None and (name := param_view(st.capture, a)) is not None:
                pdim = int(np.argmax(st.capture.tensors[name].shape))  # its one real dim
            if name is not None and not st.shared(name):
                consts.append((i, d))
                if self.kind == "add":  # a bias: zero it with the producer channel
                    comp = Companion(name, pdim, np.arange(len(first)), first.origin)
                    st.companions.append(comp)
                continue
            expr = paramexpr.find(st.capture, a) if name is None else None
            if expr is not None and expr.channels == len(first):
                consts.append((i, d))  # a per-channel vector computed from parameters
                exprs[i] = expr
                if self.kind == "add":  # a shift: zero its sources with the producer channel
                    sources = paramexpr.zeroing(st.capture, a, expr)
                    revives |= sources is None
                    for q, qdim in sources or ():
                        comp = Companion(q, qdim, np.arange(len(first)), first.origin)
                        st.companions.append(comp)
                continue
            st.pin(first.ids, f"{st.where(node)} combines them with a full-width untracked tensor")
            pinned = True
        origin = np.full(len(first), -1, dtype=np.int64)
        if self.kind == "mul" or (self.kind == "div" and tracked[0][0] == 0):
            origin = first.origin  # a zero factor zeroes the product
        scalars = [a for a in _operands(node) if isinstance(a, int | float) and a != 0]
        centering = len(tracked) == 1 and _centering(node, st, others)
        if self.kind == "add" and scalars:
            st.dependent_raw.append(first.origin)  # x + 3: a zero x does not stay zero
        elif len(tracked) == 1 and len(others) == len(consts) and not (pinned or revives):
            origin = first.origin  # x + bias: zeroing the bias keeps the channel zero
        elif len(tracked) == 1 and self.kind != "mul" and not centering:
            st.dependent_raw.append(first.origin)  # x + something: a zero x does not stay zero
        st.kinds[node.name] = {
            "dim": dim,
            "tracked": [t[0] for t in tracked],
            "consts": consts,
            "full": pinned,
            "exprs": exprs,  # const operand -> its parameter expression (paramexpr.py)
            "centering": centering,
        }
        st.axes[node.name] = Axis(dim, first.ids, origin)

    # liveness ---------------------------------------------------------------------------
    def _zero_of_operand(self, node: fx.Node, i: int, info: dict, lv, n: int) -> np.ndarray:
        a = _operands(node)[i]
        if i in info["tracked"]:
            return lv.zero_of(a)
        if isinstance(a, int | float | bool):
            return np.full(n, a == 0)
        t = _operand_tensor(node, i, lv, info)
        for j, d in info["consts"]:
            if j == i:
                return (t == 0).movedim(d, 0).reshape(n, -1).all(1).numpy()
        if t is not None and isinstance(t, torch.Tensor):
            return np.full(n, bool((t == 0).all()))
        return np.zeros(n, dtype=bool)

    def zeros(self, node: fx.Node, lv) -> None:
        info = self._layout(node, lv.analysis)
        if info is None:
            return Rule.zeros(self, node, lv)
        n = len(lv.analysis.axes[node.name])
        z = [self._zero_of_operand(node, i, info, lv, n) for i in range(len(_operands(node)))]
        if self.kind == "add":
            zero = np.logical_and.reduce(z)
        elif self.kind == "mul":
            zero = np.logical_or.reduce(z)
        else:  # x / y is zero where x is, unless y might be zero too (0/0)
            den = _operands(node)[1]
            safe = isinstance(den, int | float) and den != 0
            safe = safe or lv.analysis.kinds.get(getattr(den, "name", None)) == "group-merge"
            for j, d in info["consts"]:
                if j == 1:  # a parameter denominator: safe in the channels it has no zero in
                    t = _operand_tensor(node, 1, lv, info)
                    safe = (t != 0).movedim(d, 0).reshape(n, -1).all(1).numpy()
            zero = z[0] & safe
        lv.zero[node.name] = zero

    def demand(self, node: fx.Node, lv) -> None:
        info = self._layout(node, lv.analysis)
        if info is None:
            return Rule.demand(self, node, lv)
        dout = lv.out_demand(node)
        n = len(dout)
        ops = _operands(node)
        for i in info["tracked"]:
            d = dout
            if self.kind == "mul":
                for j in range(len(ops)):
                    if j != i:
                        d = d & ~self._zero_of_operand(node, j, info, lv, n)
            lv.want(ops[i], d)
        for i, a in enumerate(ops):
            if i not in info["tracked"] and lv.axis(a) is not None:
                lv.require_all(a)  # a one-channel operand broadcast over the channels
        if len(info["tracked"]) == 1 and not (info["full"] or info.get("centering")):
            lv.revive_input(node, ops[info["tracked"][0]])  # x + shift: keep the zero x
            # channels it revives (no pad); a norm's centering pads them as aten.layer_norm does

    # rewriting ---------------------------------------------------------------------------
    def emit(self, node: fx.Node, rw) -> None:
        info = self._layout(node, rw.analysis)
        if info is None:
            return rw.verbatim(node)
        ops = _operands(node)
        layouts = [rw.value(ops[i])[1] for i in info["tracked"]]
        n = len(rw.axis(node))
        need = rw.live.kept(node)
        writes = getattr(rw.policy, "writes", False) and writes_into(node, info)
        held = rw.policy.held(node, need) if writes else None
        if info["full"]:
            target = np.arange(n, dtype=np.int64)
        elif held is not None:  # a residual stream's buffer: it may hold later writers' channels
            target = held
        elif (
            all(np.array_equal(layouts[0], lay) for lay in layouts[1:])
            and np.isin(need, layouts[0]).all()
        ):
            target = layouts[0]
        else:
            target = rw.policy.merge(node, need, layouts)
        for i, expr in info.get("exprs", {}).items():  # within the vector's one layout
            lay = paramexpr.layout(rw, ops[i], expr, target)
            target = target[np.isin(target, lay)]
        if writes and self._write(node, rw, info, target):
            return
        args = list(node.args)
        out_rank = len(node_shape(node))
        for i in info["tracked"]:
            a = ops[i]
            new, lay = rw.value(a)
            args[i] = rw.align(new, info["dim"] - (out_rank - len(node_shape(a))), lay, target, a)
        for i, d in info["consts"]:
            idx = torch.from_numpy(target)
            if i in info.get("exprs", {}):
                args[i] = paramexpr.operand(rw, ops[i], info["exprs"][i], target)
                continue
            if ops[i].name in rw.capture.state_names:
                name = rw.capture.state_names[ops[i].name]
                args[i] = rw.put(name, rw.live.t(ops[i]).index_select(d, idx))
                continue
            name = param_view(rw.capture, ops[i])  # sliced in its own shape, then viewed
            t = rw.live.tensors[name].detach()
            pdim = int(np.argmax(t.shape))
            shape = list(node_shape(ops[i]))
            shape[d] = len(target)
            val = ops[i].meta["val"]
            sliced = paramexpr.reput(rw, name, t.index_select(pdim, idx))
            new = rw.call(aten.view.default, (sliced, shape))
            if val.dtype != t.dtype:
                new = rw.call(aten._to_copy.default, (new,), {"dtype": val.dtype})
            args[i] = new
        for i, a in enumerate(ops):
            if (
                isinstance(a, fx.Node)
                and i not in info["tracked"]
                and all(i != j for j, _ in info["consts"])
            ):
                args[i] = rw.map_arg(a)
        rw.set(node, rw.call(node.target, tuple(args), dict(node.kwargs)), target)

    def _write(self, node: fx.Node, rw, info: dict, target: np.ndarray) -> bool:
        """Reorder export: ``a + b`` where one operand holds fewer of the result's channels
        becomes a write of it into the other (or, where neither holds them all, into a new
        buffer: :meth:`Rewriter.base`): a slice add where its channels are a run of the
        result's layout, else an ``index_add``; the export's last pass makes it in place where
        safe (``rewrite/writers.py``). Instead of padding both to full width and adding."""
        ops = _operands(node)
        values = [rw.value(a) for a in ops]
        if not all(isinstance(lay, np.ndarray) for _, lay in values):
            return False
        dim = info["dim"]
        lays = [lay[np.isin(lay, target)] for _, lay in values]  # an operand may hold channels
        covers = [np.array_equal(lay, target) for lay in lays]  # the result drops: read its part
        if all(covers):
            return False  # a plain add
        news = [
            rw.align(new, dim, lay, part, a) if len(part) else None
            for a, (new, lay), part in zip(ops, values, lays, strict=True)
        ]
        coeffs = coefficients(node)
        b = choose_base(covers, [len(lay) for lay in lays], coeffs)
        w = 1 - b
        if not len(lays[b]):
            return False  # nothing to write into: pad (align)
        big = news[b]
        if not covers[b]:
            big = rw.base(big, dim, lays[b], target, node)
        if len(lays[w]):
            big = rw.write(big, news[w], dim, lays[w], target, coeffs[w], node)
        rw.set(node, big, target)
        return True


def writes_into(node: fx.Node, info: dict | None) -> bool:
    """Whether ``node`` is a residual add (or subtraction) of two same-shaped tracked tensors
    that the reorder export may emit as a write of one operand into the other."""
    return (
        isinstance(info, dict)
        and node.target in (aten.add.Tensor, aten.sub.Tensor)
        and len(info["tracked"]) == 2
        and not info["consts"]
        and not info["full"]
        and not info.get("exprs")
        and len({node_shape(a) for a in _operands(node)} | {node_shape(node)}) == 1
        and len({_dtype(a) for a in _operands(node)} | {_dtype(node)}) == 1
    )


def _dtype(node: object) -> object:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else None


def coefficients(node: fx.Node) -> tuple[float, float]:
    """``node``'s result is ``c0 * a + c1 * b``: (1, alpha) for add, (1, -alpha) for sub."""
    alpha = node.kwargs.get("alpha", 1)
    return (1, alpha) if node.target is aten.add.Tensor else (1, -alpha)


def choose_base(covers: list[bool], sizes: list[int], coeffs: tuple[float, float]) -> int:
    """Which operand the other is written into: one holding all the result's channels, else the
    one holding most (ties: the first); it must enter the sum with coefficient 1. The layout
    policy plans with the same choice."""
    able = [i for i in range(2) if coeffs[i] == 1]
    full = [i for i in able if covers[i]]
    if full:
        return full[0]
    return max(able, key=lambda i: (sizes[i], -i))


class Mul(Binary):
    kind = "mul"


class Div(Binary):
    kind = "div"


register(Binary(), "aten.add.Tensor", "aten.sub.Tensor")
register(Mul(), "aten.mul.Tensor")
register(Div(), "aten.div.Tensor")
