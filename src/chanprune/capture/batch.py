"""Batch generalisation: a graph traced at one static batch size -> a graph for any batch size.

Why: a symbolic batch makes torch.export slower and symbolic sizes slow every later stage
(benchmarks/studies/results/capture_marker.md). So capture traces at a static *marker* batch (a
prime) and this pass rewrites the batch-sized integers baked into size arguments; where it cannot
place one it returns False and capture traces with a symbolic batch. A wrong rewrite cannot
survive: export checks the result at the user's batch, which is never the marker, and
recaptures with a symbolic batch on a mismatch (``api.export``; docs/design.md, "Marker batch").
"""

from __future__ import annotations

import math
import operator

import sympy
import torch
from torch import fx

aten = torch.ops.aten

MARKERS = (97, 89)  # the first one that differs from the user's batch
MAX_MARKER_BYTES = 1 << 30  # marker inputs are allocated (never touched); beyond this, skip

# op -> index of its size-list argument
SIZE_ARG = {
    aten.view.default: 1,
    aten.reshape.default: 1,
    aten._unsafe_view.default: 1,
    aten.expand.default: 1,
    aten.new_zeros.default: 1,
    aten.new_ones.default: 1,
    aten.new_empty.default: 1,
    aten.new_full.default: 1,
    aten.zeros.default: 0,
    aten.ones.default: 0,
    aten.full.default: 0,
    aten.empty.memory_format: 0,
}
INFERABLE = frozenset({aten.view.default, aten.reshape.default, aten._unsafe_view.default})

# ops that pick positions along one dimension: op -> index of its ``dim`` argument
PICKING = {
    aten.slice.Tensor: 1,
    aten.split.Tensor: 2,
    aten.split_with_sizes.default: 2,
    aten.unbind.int: 1,
    aten.select.int: 1,
    aten.narrow.default: 1,
}


def marker_inputs(inputs: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], int] | None:
    """Uninitialised stand-ins for ``inputs`` with the marker batch (tracing reads only their
    metadata), and the marker; None where the inputs do not share one batch size."""
    sizes = {x.shape[0] for x in inputs if x.dim() > 0}
    if len(sizes) != 1:
        return None
    batch = sizes.pop()
    marker = next(m for m in MARKERS if m != batch)
    per_sample = sum(x[:1].nbytes for x in inputs if x.dim() > 0)
    if batch == 0 or per_sample * marker > MAX_MARKER_BYTES:
        return None
    stand_ins = tuple(
        torch.empty((marker, *x.shape[1:]), dtype=x.dtype, device=x.device) if x.dim() > 0 else x
        for x in inputs
    )
    return stand_ins, marker


def per_sample(size: object, marker: int | None) -> int:
    """A non-batch dimension's size per sample: a symbolic size or a multiple of the marker
    holds the batch (times k), counted once; anything else as it is."""
    if isinstance(size, torch.SymInt):
        return 1
    size = int(size)
    return size // marker if marker and size and size % marker == 0 else size


def _multiple(v: object, marker: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v != 0 and v % marker == 0


def _mentions(arg: object, marker: int) -> bool:
    if isinstance(arg, list | tuple):
        return any(_mentions(a, marker) for a in arg)
    if isinstance(arg, dict):
        return any(_mentions(a, marker) for a in arg.values())
    return _multiple(arg, marker) and abs(arg) < 1 << 62  # not the "to the end" sentinel


def _picks_from_batch(node: fx.Node, marker: int) -> bool:
    """``node`` picks positions along a batch-sized dimension (a multiple of the marker) other
    than all of them: two views split off the batch (``chunk(x, 2, 0)`` traces as a split of
    size 49), ``x[: n // 2]``. Such bounds and sizes are functions of the batch that are no
    multiple of the marker, and nothing tells them from constants, so the pass cannot place
    them; a whole-range slice or a one-piece split is the same at every batch."""
    at = PICKING.get(node.target)
    x = node.args[0] if node.args else None
    val = x.meta.get("val") if isinstance(x, fx.Node) else None
    if at is None or not isinstance(val, torch.Tensor) or val.dim() == 0:
        return False
    dim = node.args[at] if len(node.args) > at else node.kwargs.get("dim", 0)
    size = val.shape[dim % val.dim()]
    if not _multiple(size, marker):
        return False
    if node.target == aten.slice.Tensor:
        start, end, step = [*node.args[2:], None, None, None][:3]
        return not (start in (None, 0) and (end is None or end >= size) and step in (None, 1))
    if node.target == aten.split.Tensor:
        return not (isinstance(node.args[1], int) and node.args[1] >= size)
    if node.target == aten.split_with_sizes.default:
        return len(node.args[1]) != 1
    return True


def generalise(graph: fx.Graph, marker: int, batch_input: fx.Node) -> bool:
    """Make ``graph`` (traced at batch ``marker``) batch-agnostic in place; False (graph
    untouched) where it holds a batch-sized integer this pass cannot place.

    In the size argument of view / reshape / expand and of factory ops a multiple ``k * marker``
    is the batch times ``k``: it becomes ``-1`` (a reshape with exactly one such size) or
    ``sym_size(batch_input, 0) * k``. A multiple of the marker anywhere else (an ``arange``, a
    slice bound, ...) is one this pass cannot place, and so is a slice, split, unbind or select
    of a batch-sized dimension (:func:`_picks_from_batch`)."""
    edits: list[tuple[fx.Node, int, list]] = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if _picks_from_batch(node, marker):
            return False
        at = SIZE_ARG.get(node.target)
        for i, arg in enumerate(node.args):
            if i == at and isinstance(arg, list | tuple) and all(type(v) is int for v in arg):
                hits = [j for j, v in enumerate(arg) if _multiple(v, marker)]
                if hits:
                    edits.append((node, i, hits))
            elif _mentions(arg, marker):
                return False
        if _mentions(node.kwargs, marker):
            return False
    if not edits:
        return True
    first = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first):
        size = graph.call_function(aten.sym_size.int, (batch_input, 0))
    size.meta["val"] = marker
    for node, i, hits in edits:
        sizes = list(node.args[i])
        if node.target in INFERABLE and len(hits) == 1 and -1 not in sizes:
            sizes[hits[0]] = -1
        else:
            for j in hits:
                k = sizes[j] // marker
                if k == 1:
                    sizes[j] = size
                else:
                    with graph.inserting_before(node):
                        sizes[j] = graph.call_function(operator.mul, (size, k))
                    sizes[j].meta["val"] = k * marker
        node.args = (*node.args[:i], sizes, *node.args[i + 1 :])
    return True


Allowed = int | tuple[int, tuple[int, ...]] | None  # see allowed_batches


def allowed_batches(size: object) -> Allowed:
    """The batch sizes a symbolic trace holds for, from its batch ``size`` and the guards
    torch.export recorded on it (the graph capture reads carries none of them):

    * None: any batch (guards that only keep sizes away from 0 and 1 hold for larger batches);
    * ``(m, residues)``: batches ``n`` with ``n % m`` in ``residues``, where a decomposition fixed
      the batch modulo ``m`` (``tensor_split(x, 2, 0)`` becomes slices at ``n // 2`` that hold
      for an even batch and drop a sample at an odd one);
    * an int: that batch only, where the batch itself or a size computed from it was fixed (each
      of two views one sample: ``chunk(x, 2, 0)`` at batch 2 guards ``n // 2 == 1``).

    Decided by evaluating the batch's guards at batch sizes from 64 on, one per residue."""
    try:
        sym, env, hint = size.node.expr, size.node.shape_env, size.node.hint
        guards = [g.expr for g in env.guards if g.expr.free_symbols == {sym}]
    except AttributeError:  # a plain int, or a torch without these internals
        return int(size)
    if not isinstance(sym, sympy.Symbol):  # pinned to a number, or an expression of others
        return int(hint)
    moduli = [
        int(a.args[1])
        for g in guards
        for a in sympy.preorder_traversal(g)
        if _is_mod(a) and a.args[1].is_Integer
    ]
    m = math.lcm(*moduli) if moduli else 1
    base = -(-64 // m) * m  # clear of the sizes the 0/1 rule guards (n // 2 != 1), yet small
    residues = tuple(n % m for n in range(base, base + m) if all(_holds(g, sym, n) for g in guards))
    if not residues:
        return int(hint)
    return None if len(residues) == m else (m, residues)


def _holds(guard: sympy.Basic, sym: sympy.Symbol, n: int) -> bool:
    """``guard`` at batch ``n``; a guard sympy cannot decide counts as holding (as before
    guards were read at all)."""
    try:
        return bool(guard.subs(sym, n))
    except TypeError:
        return True


def _is_mod(expr: object) -> bool:
    """sympy's Mod or torch's own (``torch.utils._sympy.functions``: Mod, PythonMod)."""
    return isinstance(expr, sympy.Mod) or type(expr).__name__ in ("Mod", "PythonMod")
