"""Writers: a residual add of a narrower operand into a wider one, written in place.

Under output-side masks a residual stream holds every channel some producer writes, and a
producer writing fewer channels is a *writer*: its add becomes ``out[:, a:b] += small`` where
its channels are the run ``a:b`` of the stream's layout (:func:`add_slice`), else an
``index_add``. The rewriter emits both out of place; :func:`inplace_writes`, the export's last
pass (a graph in, the same graph edited), lets one write into the stream itself where nothing
can observe the difference: the stream is a fresh tensor of the export (no input, parameter,
buffer or view of one) that nothing reads after the add, through any alias. Autograd is kept
working by the in-place helpers themselves: they write in place only while no autograd graph is
being recorded (``torch.no_grad``, ``torch.inference_mode``) and add out of place otherwise,
since an op that read the stream before (a convolution) may have saved it for its backward.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
from torch import fx

aten = torch.ops.aten

#: ``node.meta`` key of a write the rewriter emitted; its value is the copy an in-place write
#: performs (an indexed write's channels), or None for a slice add, which copies nothing
WRITE = "chanprune_write"

#: ops that only read a tensor's metadata (a later one does not observe a write)
METADATA = frozenset(
    {
        aten.sym_size.int,
        aten.sym_stride.int,
        aten.sym_numel.default,
        aten.sym_storage_offset.default,
    }
)


def add_slice(
    big: torch.Tensor, small: torch.Tensor, dim: int, start: int, stop: int, alpha: float = 1
) -> torch.Tensor:
    """``big`` with ``alpha * small`` added into its channels ``start:stop`` along ``dim``, as a
    new tensor (the copy of ``big`` is what :func:`add_slice_` saves)."""
    out = big.clone()
    out.narrow(dim, start, stop - start).add_(small, alpha=alpha)
    return out


def add_slice_(
    big: torch.Tensor, small: torch.Tensor, dim: int, start: int, stop: int, alpha: float = 1
) -> torch.Tensor:
    """:func:`add_slice` into ``big`` itself where no autograd graph is being recorded."""
    if torch.is_grad_enabled():
        return add_slice(big, small, dim, start, stop, alpha)
    big.narrow(dim, start, stop - start).add_(small, alpha=alpha)
    return big


def add_index_(
    big: torch.Tensor, dim: int, index: torch.Tensor, small: torch.Tensor, alpha: float = 1
) -> torch.Tensor:
    """``big.index_add(dim, index, small, alpha=alpha)``, into ``big`` itself where no autograd
    graph is being recorded."""
    if torch.is_grad_enabled():
        return big.index_add(dim, index, small, alpha=alpha)
    return big.index_add_(dim, index, small, alpha=alpha)


def spread(x: torch.Tensor, dim: int, index: torch.Tensor, width: int) -> torch.Tensor:
    """A new tensor ``width`` channels wide along ``dim``, holding ``x``'s channels at
    ``index`` and zeros elsewhere: a stream's buffer where its first operand's channels are not
    one run of it (else ``constant_pad_nd`` does it in one op)."""
    shape = list(x.shape)
    shape[dim] = width
    return x.new_zeros(shape).index_copy_(dim, index, x)


#: the in-place twin of each out-of-place write (same arguments)
INPLACE_WRITES = {add_slice: add_slice_, aten.index_add.default: add_index_}


def _alias_sources(node: fx.Node, fresh: frozenset) -> list[fx.Node]:
    """The inputs whose memory ``node``'s result may share (a view, an in-place op's self)."""
    if node.op != "call_function" or node.target in fresh:
        return []
    t = node.target
    if t in (add_slice_, add_index_, operator.getitem):
        return [node.args[0]] if isinstance(node.args[0], fx.Node) else []
    if isinstance(t, torch._ops.OpOverload):
        schema = t._schema
        if not any(r.alias_info is not None for r in schema.returns):
            return []
        out = []
        for i, arg in enumerate(schema.arguments):
            a = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            if arg.alias_info is not None and isinstance(a, fx.Node):
                out.append(a)
        return out
    return list(node.all_input_nodes)  # an unknown function may return any input


def alias_group(big: fx.Node, at: fx.Node, fresh: Iterable[object] = ()) -> set[fx.Node]:
    """Every node whose value may share ``big``'s memory (views of it, what it is a view of, in
    place ops on either), apart from ``at``."""
    fresh = frozenset(fresh) | {add_slice, spread}
    group: set[fx.Node] = set()
    todo = [big]
    while todo:
        n = todo.pop()
        if n in group or n is at:
            continue
        group.add(n)
        todo.extend(_alias_sources(n, fresh))
        todo.extend(u for u in n.users if n in _alias_sources(u, fresh))
    return group


def writable(
    big: object, at: fx.Node, order: dict[fx.Node, int], fresh: Iterable[object] = ()
) -> bool:
    """Whether ``at`` may write into ``big`` in place: ``big`` and everything aliasing it are
    values computed by the graph (no placeholder: an input, parameter or buffer; no get_attr),
    ``at``'s other operands do not alias it, and every other reader of any of them (the graph's
    output included) comes before ``at`` in ``order``. ``fresh``: further functions known to
    return a new tensor (e.g. the exporter's ``gather_rows``)."""
    if not isinstance(big, fx.Node):
        return False
    group = alias_group(big, at, fresh)
    if any(g.op != "call_function" for g in group):
        return False
    if any(a in group for a in at.all_input_nodes if a is not big):
        return False
    for g in group:
        for u in g.users:
            if u is at or _metadata(u):
                continue
            if order[u] >= order[at]:
                return False
    return True


def _metadata(node: fx.Node) -> bool:
    return node.target in METADATA or str(node.target).startswith("aten._assert")


def inplace_writes(graph: fx.Graph, fresh: Iterable[object] = ()) -> list[fx.Node]:
    """Make each write the rewriter emitted (``node.meta[WRITE]``) in place where
    :func:`writable`; returns the nodes changed. Run it after the graph is complete: it reads
    the graph order."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    done = []
    for node in graph.nodes:
        twin = INPLACE_WRITES.get(node.target) if WRITE in node.meta else None
        if twin is not None and writable(node.args[0], node, order, fresh):
            node.target = twin
            done.append(node)
    return done
