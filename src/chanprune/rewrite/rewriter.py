"""Rewriting: build the physically pruned module from the graph, the liveness and a layout policy.

Each tensor of the new graph carries a *layout*: the positions of the original channel axis it
holds, in physical order. The invariant every rule keeps: a channel present in a layout has
exactly the masked model's value; a channel absent from it is zero or needed by nobody. Where two
layouts must meet (a residual add, a consumer reading a subset) :meth:`Rewriter.align` emits the
cheapest exact bridge: nothing, a slice (a view), a gather (``index_select``, or ``gather``
along the last dimension), or a zero pad.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import guard_or_false

from ..analysis.rules import rule_for
from ..analysis.types import ABSORBED, Axis, ChannelAnalysis
from ..capture.batch import per_sample
from ..liveness.flow import Liveness
from .inplace import inplace_activations
from .inputs import codegen
from .writers import WRITE, add_slice, inplace_writes, spread

aten = torch.ops.aten
READ_VIEW = "chanprune_read_view"  # node.meta key marking the slices align() emits
ROWS_MIN_BYTES = 128 * 1024  # per sample: where gather_rows starts to pay (see _rows_pay)
# grouped convs: per-group counts round up to a multiple of this (docs/design.md); 1: none
GROUP_QUANTUM = 8


#: copy kinds whose bytes no channel order changes (what a layout can change: "gather" and
#: "write", an indexed in-place write, which a contiguous run turns into a slice add)
FIXED_KINDS = frozenset({"pad", "base", "scatter"})


@dataclass
class Copy:
    """One run-time channel copy the exported model performs.

    Kinds: ``gather`` (a read of a subset), ``pad`` (a read padded with zero channels),
    ``base`` (a residual stream's new buffer, its first operand padded in), ``scatter`` (a
    narrower operand added out of place: the whole stream is copied) and ``write`` (one added
    in place through an index: its own channels)."""

    node: str  # the new graph's node
    source: str  # the original node whose channels are copied
    kind: str  # see above
    channels: int  # channels written per spatial element (a pad: its padded source, then `to`)
    elements: int  # elements written per sample (channels x spatial size)
    positions: tuple[int, ...] = ()  # the source's original channel positions copied (-1: pad)


@dataclass
class RewriteResult:
    module: fx.GraphModule
    layouts: dict[str, object]  # original node name -> layout (np.ndarray) / list / None
    node_map: dict[str, str]  # original node name -> new node name
    axes: dict[str, object] = field(default_factory=dict)  # original node name -> Axis (analysis)
    copies: list[Copy] = field(default_factory=list)
    demand: dict[str, object] = field(default_factory=dict)  # original node -> demanded channels
    selections: dict[str, list] = field(default_factory=dict)  # see Rewriter.selections


class OwnedGraph(fx.Graph):
    """An fx graph that refers to its GraphModule weakly.

    fx's graph holds its module strongly, so every GraphModule sits in a reference cycle and its
    weights outlive ``del`` until a full garbage collection, which may come many exports later.
    A weak back-reference frees a dropped pruned model at once."""

    @property
    def owning_module(self):  # type: ignore[override]
        ref = self._owning_module
        return ref() if isinstance(ref, weakref.ref) else ref

    @owning_module.setter
    def owning_module(self, mod) -> None:
        self._owning_module = None if mod is None else weakref.ref(mod)


class Rewriter:
    def __init__(
        self, analysis: ChannelAnalysis, live: Liveness, policy, group_quantum: int
    ) -> None:
        self.analysis = analysis
        self.group_quantum = group_quantum
        self.capture = analysis.capture
        self.live = live
        self.policy = policy
        self.graph = OwnedGraph()
        self.env: dict[str, object] = {}
        self.lay: dict[str, object] = {}
        self.state: dict[str, torch.Tensor] = {}
        self._attrs: dict[str, fx.Node] = {}
        # a layer called several times (analysis.tie_of): its one pruned slice, per parameter
        self.tied: dict[str, tuple] = {}
        self._index: dict[bytes, fx.Node] = {}
        self.copies: list[Copy] = []
        # qualified name -> its spec entry (deploy/spec.py) for tensors a rule builds that are no
        # plain index selection of the original: grouped convs' per-group inputs and zero fillers
        self.selections: dict[str, list] = {}
        # parameter-expression group -> its layout and emitted nodes (analysis/rules/paramexpr.py)
        self.exprs: dict[str, dict] = {}
        self._current: fx.Node | None = None

    # values ---------------------------------------------------------------------------------
    def value(self, arg: fx.Node) -> tuple[object, object]:
        if arg.name in self.capture.state_names:
            return self.param_node(arg), None
        return self.env[arg.name], self.lay.get(arg.name)

    def axis(self, arg: object) -> Axis | None:
        return self.live.axis(arg)

    def set(self, node: fx.Node, new: object, layout: object) -> None:
        self.env[node.name] = new
        self.lay[node.name] = layout

    def map_arg(self, a: object, full: bool = True) -> object:
        """Map an original argument into the new graph; tracked tensors at full width."""
        if isinstance(a, fx.Node):
            return self.full(a) if full else self.value(a)[0]
        if isinstance(a, list | tuple):
            return type(a)(self.map_arg(x, full) for x in a)
        return a

    def full(self, arg: fx.Node) -> object:
        """``arg`` with every original channel present, in the original order."""
        new, layout = self.value(arg)
        ax = self.axis(arg)
        if ax is None or not isinstance(layout, np.ndarray):
            return new
        return self.align(new, ax.dim, layout, np.arange(len(ax), dtype=np.int64), arg)

    # emission helpers -------------------------------------------------------------------------
    def call(self, target: object, args: tuple, kwargs: dict | None = None) -> fx.Node:
        return self.graph.call_function(target, tuple(args), kwargs or {})

    def put(self, qualified: str, tensor: torch.Tensor, fresh: bool = False) -> fx.Node:
        """A get_attr for a (possibly sliced) parameter, buffer or constant, under its own name.

        The tensor is copied so the result shares no memory with the model, unless the caller
        vouches that it is ``fresh`` (a contiguous tensor it just made, e.g. by index_select)."""
        if qualified in self._attrs:
            raise RuntimeError(f"parameter {qualified} emitted twice")
        tensor = tensor.detach()
        if not (fresh and tensor.is_contiguous() and tensor._base is None):
            tensor = tensor.clone().contiguous()
        if qualified in self.capture.parameter_names:
            tensor = torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point())
        self.state[qualified] = tensor
        node = self.graph.get_attr(qualified)
        self._attrs[qualified] = node
        return node

    def param_node(self, arg: fx.Node) -> fx.Node:
        """The original (unsliced) tensor behind a placeholder."""
        name = self.capture.state_names[arg.name]
        if name in self._attrs:
            return self._attrs[name]
        return self.put(name, self.capture.tensors[name])

    def index(self, idx: np.ndarray, rank: int = 1) -> fx.Node:
        """A buffer of gather indices (shaped ``1 x ... x k`` for a last-dimension ``gather``)."""
        key = np.asarray(idx, dtype=np.int64).tobytes() + bytes([rank])
        if key not in self._index:
            name = f"chanprune_index.i{len(self._index)}"
            t = torch.from_numpy(np.asarray(idx, dtype=np.int64).copy())
            self.state[name] = t.view(*([1] * (rank - 1)), -1)
            self._index[key] = self.graph.get_attr(name)
        return self._index[key]

    def _record(
        self, node: fx.Node, source: fx.Node | None, kind: str, to: np.ndarray, idx: np.ndarray
    ) -> None:
        self.copies.append(self._copy(node, source, kind, to, idx))

    def _copy(
        self,
        node: fx.Node,
        source: fx.Node | None,
        kind: str,
        to: np.ndarray,
        idx: np.ndarray,
        extra: int = 0,
    ) -> Copy:
        """The copy of channels ``to`` (``idx``: where each is in the source, -1: none), plus
        ``extra`` channels an earlier step of the same copy writes (a pad's padded source)."""
        channels = len(to) + extra
        src = source if source is not None else self._current
        spatial = self._spatial(src)
        return Copy(
            node.name,
            src.name if src is not None else "?",
            kind,
            channels,
            channels * spatial,
            tuple(np.where(idx >= 0, to, -1).tolist()),
        )

    def _spatial(self, src: fx.Node | None) -> int:
        """Elements per sample and channel of an original node's value (1 where unknown)."""
        spatial = 1
        val = src.meta.get("val") if src is not None else None
        ax = self.axis(src) if src is not None else None
        if isinstance(val, torch.Tensor) and ax is not None:
            marker = self.analysis.capture.marker
            for d, s in enumerate(val.shape[1:], start=1):
                if d != ax.dim:
                    spatial *= per_sample(s, marker)
        return spatial

    def align(
        self, new: object, dim: int, frm: np.ndarray, to: np.ndarray, source: fx.Node | None = None
    ) -> object:
        """Turn a tensor holding layout ``frm`` into one holding ``to`` (absent channels = 0)."""
        frm, to = np.asarray(frm, dtype=np.int64), np.asarray(to, dtype=np.int64)
        if np.array_equal(frm, to):
            return new
        # position of each wanted channel in ``frm`` (-1: absent), by a lookup table
        lo = min(frm.min(initial=0), to.min(initial=0))
        where = np.full(max(frm.max(initial=0), to.max(initial=0)) - lo + 1, -1, dtype=np.int64)
        where[frm - lo] = np.arange(len(frm), dtype=np.int64)
        idx = where[to - lo]
        if (idx >= 0).all():
            if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
                view = self.call(aten.slice.Tensor, (new, dim, int(idx[0]), int(idx[0] + len(idx))))
                view.meta[READ_VIEW] = True  # for ideal(): a read of a subset, not a model op
                return view
            out = self.gather(new, dim, idx, source)
            self._record(out, source, "gather", to, idx)
            return out
        rank = _rank(source)
        if rank is None:
            raise RuntimeError("cannot pad a tensor of unknown rank")
        pad = [0, 0] * (rank - 1 - dim) + [0, 1]
        padded = self.call(aten.constant_pad_nd.default, (new, pad, 0.0))
        missing = idx < 0
        idx[missing] = len(frm)
        out = self.gather(padded, dim, idx, source)
        # two copies: the source with a zero channel appended, then the gather of ``to`` from it
        copy = self._copy(out, source, "pad", to, np.where(missing, -1, idx), extra=len(frm) + 1)
        self.copies.append(copy)
        return out

    def base(
        self, new: object, dim: int, frm: np.ndarray, to: np.ndarray, source: fx.Node
    ) -> fx.Node:
        """A new buffer of layout ``to`` holding ``new`` (layout ``frm``, a subset of ``to``) and
        zeros: where a residual stream starts and no operand holds all its channels. One op
        either way (``constant_pad_nd`` where ``frm`` is a run of ``to``, else :func:`spread`),
        so it copies ``len(to)`` channels whatever the order."""
        idx = _positions(frm, to)
        run = _run(idx)
        if run is not None:
            rank = _rank(source)
            pad = [0, 0] * (rank - 1 - dim) + [run[0], len(to) - run[1]]
            out = self.call(aten.constant_pad_nd.default, (new, pad, 0.0))
        else:
            out = self.call(spread, (new, dim, self.index(idx), len(to)))
        self._record(out, source, "base", to, np.arange(len(to)))
        return out

    def write(
        self,
        big: object,
        small: object,
        dim: int,
        frm: np.ndarray,
        to: np.ndarray,
        alpha: float,
        source: fx.Node,
    ) -> fx.Node:
        """``big`` (layout ``to``) plus ``alpha * small`` (layout ``frm``, a subset of ``to``):
        a slice add where ``frm`` is a run of ``to``, else an ``index_add``. Emitted out of place
        (recorded as a ``scatter``, a copy of the whole of ``big``); :func:`inplace_writes` makes
        it in place where that is safe, and it then copies nothing (a slice) or ``frm``'s
        channels (an indexed ``write``), as ``node.meta[WRITE]`` says."""
        idx = _positions(frm, to)
        run = _run(idx)
        if run is not None:
            out = self.call(add_slice, (big, small, dim, run[0], run[1], alpha))
            out.meta[WRITE] = None
        else:
            kwargs = {"alpha": alpha} if alpha != 1 else {}
            args = (big, dim, self.index(idx), small)
            out = self.call(aten.index_add.default, args, kwargs)
            out.meta[WRITE] = self._copy(out, source, "write", frm, np.arange(len(frm)))
        self._record(out, source, "scatter", to, np.arange(len(to)))
        return out

    def gather(self, new: object, dim: int, idx: np.ndarray, source: fx.Node | None) -> fx.Node:
        """Channels ``idx`` of ``new`` along ``dim``, copied once.

        ``index_select`` copies whole runs of the inner dimensions, but along the last dimension
        (the features of a Linear, channels-last tensors) it copies element by element, much
        slower than ``gather`` with a broadcast index, which copies the same elements
        (``benchmarks/studies/results/gather.md``). Inner runs longer than one element keep
        ``index_select``, which is faster there."""
        rank = _rank(source)
        if rank is not None and rank > 2 and dim == 1 and self._rows_pay(source, len(idx)):
            return self.call(gather_rows, (new, self.index(idx)))
        if rank is None or dim != rank - 1:
            return self.call(aten.index_select.default, (new, dim, self.index(idx)))
        shaped = self.index(idx, rank)
        sizes = [self.call(aten.sym_size.int, (new, d)) for d in range(dim)] + [len(idx)]
        index = self.call(aten.expand.default, (shaped, sizes))
        return self.call(aten.gather.default, (new, dim, index))

    def _rows_pay(self, source: fx.Node | None, channels: int) -> bool:
        """Whether :func:`gather_rows` beats ``index_select``: the source is contiguous and the
        read copies at least ``ROWS_MIN_BYTES`` per sample. Below that its extra small ops (the
        row index, the reshapes) cost about what the faster copy saves; the threshold sits
        between the read sizes where it gained and lost (``benchmarks/studies/results/gather.md``,
        column ``rows / index_select``)."""
        val = source.meta.get("val") if source is not None else None
        if not isinstance(val, torch.Tensor) or not val.is_contiguous():
            return False
        return channels * self._spatial(source) * val.element_size() >= ROWS_MIN_BYTES

    def cover(self, node: fx.Node, layout: np.ndarray, need: np.ndarray) -> np.ndarray:
        """A layout holding at least ``need``: ``layout`` itself when it already does."""
        if np.isin(need, layout).all():
            return layout
        return self.policy.merge(node, np.union1d(layout, need), [layout])

    def verbatim(self, node: fx.Node) -> None:
        """Copy an op unchanged, giving it its tracked inputs at full width."""
        new = self.graph.node_copy(node, lambda a: self.full(a))
        self.set(node, new, None)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Channels ``index`` of ``x`` along dim 1, copied as whole rows of ``x.flatten(0, 1)``.

    Why: ``index_select`` along dim 0 of a contiguous tensor copies each row in one block, in
    parallel, while along dim 1 it walks the batch in an inner loop; for large feature maps the
    rows form is faster, closer to a plain copy (``benchmarks/studies/results/gather.md``).
    Building the row index costs a few small ops, so the exporter uses it only for large reads,
    and at batch 1 the channel index is the row index. (``guard_or_false`` keeps that shortcut
    out of a ``torch.export`` trace, which must hold for every batch size.)"""
    n, c = x.shape[0], x.shape[1]
    if guard_or_false(n == 1):
        rows = index
    else:
        rows = torch.arange(0, n * c, c, device=index.device).view(-1, 1).add(index).view(-1)
    return x.reshape(n * c, -1).index_select(0, rows).view(n, -1, *x.shape[2:])


def _positions(frm: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Where each channel of ``frm`` sits in ``to`` (every one must be there)."""
    where = {int(p): i for i, p in enumerate(np.asarray(to).tolist())}
    return np.array([where[int(p)] for p in np.asarray(frm).tolist()], dtype=np.int64)


def _run(idx: np.ndarray) -> tuple[int, int] | None:
    """``(a, b)`` where ``idx`` is ``a, a + 1, ..., b - 1``, else None."""
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return int(idx[0]), int(idx[0] + len(idx))
    return None


def _rank(source: fx.Node | None) -> int | None:
    """The rank of an original node's value, where its capture recorded one."""
    val = source.meta.get("val") if source is not None else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def rewrite(
    analysis: ChannelAnalysis, live: Liveness, policy, group_quantum: int = GROUP_QUANTUM
) -> RewriteResult:
    """Build the pruned GraphModule (parameter names as in the original model).

    ``group_quantum``: a grouped conv's per-group channel counts round up to a multiple of it."""

    rw = Rewriter(analysis, live, policy, group_quantum)
    cap = analysis.capture
    for node in cap.graph.nodes:
        rw._current = node
        if node.op == "placeholder":
            if node.name not in cap.state_names:  # parameters become get_attrs on first use
                new = rw.graph.placeholder(node.name)
                new.meta = dict(node.meta)
                rw.set(node, new, None)
        elif node.op == "output":
            rw.graph.output(rw.map_arg(node.args[0]))
        elif analysis.kinds.get(node.name) == ABSORBED:
            rw.set(node, None, None)
        elif node.op == "call_function":
            rule_for(node).emit(node, rw)
        else:
            raise RuntimeError(f"unsupported node {node.format_node()}")
    rw.graph.eliminate_dead_code()
    inplace_activations(rw.graph, producers=(gather_rows, add_slice, spread))
    written = inplace_writes(rw.graph, fresh=(gather_rows,))
    rw.copies = _written(rw.copies, written)
    rw.graph._codegen = codegen(cap)
    gm = fx.GraphModule(rw.state, rw.graph, class_name="PrunedModule")
    gm.graph.lint()
    node_map = {
        k: v.name for k, v in rw.env.items() if isinstance(v, fx.Node) and v.op != "placeholder"
    }
    return RewriteResult(gm, rw.lay, node_map, analysis.axes, rw.copies, live.demand, rw.selections)


def _written(copies: list[Copy], written: list[fx.Node]) -> list[Copy]:
    """The copies once ``written`` are in place: each one's out-of-place ``scatter`` becomes
    what its in-place write copies (``node.meta[WRITE]``: an indexed write, or nothing)."""
    now = {n.name: n.meta[WRITE] for n in written}
    out = []
    for c in copies:
        if c.node not in now:
            out.append(c)
        elif now[c.node] is not None:
            out.append(now[c.node])
    return out


def getitem(rw: Rewriter, node: fx.Node) -> None:
    src, i = node.args
    new, layouts = rw.value(src)
    out = rw.call(operator.getitem, (new, i))
    rw.set(node, out, layouts[i] if isinstance(layouts, list) else None)
