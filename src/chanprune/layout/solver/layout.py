"""``solve_layout``: order a tensor's channels so that most consumers read a slice, not a gather.

It validates the problem, shrinks it to atoms (:mod:`.c1p`), chooses which consumer sets to keep
consecutive (:mod:`.search`) and reads the order and every consumer's read off the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from itertools import pairwise

from ...errors import InputError
from .c1p import Compressed, ConstrainedFamily, compress
from .problem import ConsumerRead, LayoutPlan, LayoutProblem
from .search import Selection, select_family


def solve_layout(
    problem: LayoutProblem, time_limit: float = 0.5, max_work: int | None = None
) -> LayoutPlan:
    """The cheapest order found for ``problem`` (see :class:`LayoutPlan` for the guarantees).

    ``time_limit`` (seconds, counted from the call) bounds the exact search; the greedy
    solution and the final assembly always run, so a call takes a little longer on big
    instances. ``max_work`` also bounds it (PQ-tree operations x atoms). Deterministic: equal
    problems give equal plans when the search finishes or stops on ``max_work`` (not the clock).

    The steps:

    1. validate the problem and merge the ``fixed`` sequences into disjoint chains (raising
       :class:`~chanprune.errors.InputError`, a ``ValueError``, if they contradict each other);
       if the given channel order already honours them and makes every consumer a view, return
       it unchanged (no channel needs to move);
    2. deduplicate the consumer sets and shrink the channels to atoms (:func:`.c1p.compress`);
       sets of at most one atom or of all atoms are always consecutive and are left out;
    3. choose which sets to keep consecutive (:func:`.search.select_family`: the PQ-tree test,
       then greedy and branch and bound when not every set fits);
    4. rebuild the PQ-tree from the kept sets, add back greedily any dropped set that still
       fits, read an order off its frontier (fixed chains in their direction) and expand the
       atoms;
    5. read every consumer off the final order: a view when its channels are contiguous (even
       if it was dropped), a gather otherwise.
    """
    deadline = time.perf_counter() + time_limit
    channels = tuple(problem.channels)
    index = _index(channels)
    consumers = _consumers(problem.consumers, index)
    weights = _weights(problem.weights, len(consumers))
    chains = _chains(problem.fixed, index)
    if _works_as_is(channels, consumers, chains, index):
        return _plan(channels, _reads(channels, consumers), 0.0, 0.0, True)
    comp = compress(
        len(channels), [[index[c] for c in s] for s in dict.fromkeys(consumers)], chains
    )
    items, item_weights = _items(comp, consumers, weights)
    choice = select_family(len(comp.blocks), comp.pairs, items, item_weights, deadline, max_work)
    atom_order = _arrange(comp, items, choice)
    order = tuple(channels[e] for a in atom_order for e in comp.blocks[a])
    reads = _reads(order, consumers)
    cost = math.fsum(w * r.copied for w, r in zip(weights, reads, strict=True))
    return _plan(order, reads, cost, choice.lower_bound, choice.optimal)


def _items(
    comp: Compressed, consumers: list[frozenset[int]], weights: list[float]
) -> tuple[list[tuple[int, ...]], list[float]]:
    """The sets worth searching over (as atoms) and their gather costs.

    Equal consumer sets are one item (``comp.sets`` follows ``dict.fromkeys(consumers)``);
    its cost is the sum of weight * size over those consumers. Sets of at most one atom or of
    every atom are consecutive in any order and are left out.
    """
    n_atoms = len(comp.blocks)
    item_of: dict[frozenset[int], int] = {}
    items = []
    for members, atoms in zip(dict.fromkeys(consumers), comp.sets, strict=True):
        if 1 < len(atoms) < n_atoms:
            item_of[members] = len(items)
            items.append(atoms)
    costs = [0.0] * len(items)
    for members, weight in zip(consumers, weights, strict=True):
        if members in item_of:
            costs[item_of[members]] += weight * len(members)
    return items, costs


def _arrange(comp: Compressed, items: list[tuple[int, ...]], choice: Selection) -> list[int]:
    """An atom order keeping the chosen sets consecutive (and any dropped set that fits)."""
    family = ConstrainedFamily(len(comp.blocks), comp.pairs)
    for i in choice.kept:
        fits = family.add(items[i])
        assert fits, "a kept set no longer fits"
    for i in choice.dropped:
        family.add(items[i])  # free improvement: a dropped set may still fit
    return family.order()


def _works_as_is(
    channels: tuple[int, ...],
    consumers: list[frozenset[int]],
    chains: list[list[int]],
    index: dict[int, int],
) -> bool:
    """True when the given order already honours the chains and makes every consumer a view.

    Then it is returned unchanged: no channel needs to move.
    """
    if any(b != a + 1 for chain in chains for a, b in pairwise(chain)):
        return False
    for members in consumers:
        if len(members) > 1:
            places = [index[c] for c in members]
            if max(places) - min(places) + 1 != len(places):
                return False
    return True


def _plan(
    order: tuple[int, ...],
    reads: tuple[ConsumerRead, ...],
    cost: float,
    bound: float,
    optimal: bool,
) -> LayoutPlan:
    """Assemble the plan; the method says how strong the guarantee is."""
    if all(r.kind == "view" for r in reads):
        method, optimal = "c1p", True
    else:
        optimal = optimal or cost <= bound
        method = "exact" if optimal else "heuristic"
    bound = cost if optimal else min(bound, cost)
    return LayoutPlan(order, reads, cost, bound, optimal, method)


def _reads(order: tuple[int, ...], consumers: list[frozenset[int]]) -> tuple[ConsumerRead, ...]:
    """View or gather for each consumer; equal sets share one read."""
    position = {c: i for i, c in enumerate(order)}
    cache: dict[frozenset[int], ConsumerRead] = {}
    out = []
    for members in consumers:
        read = cache.get(members)
        if read is None:
            read = cache[members] = _read(position, members)
        out.append(read)
    return tuple(out)


def _read(position: dict[int, int], members: frozenset[int]) -> ConsumerRead:
    """How one consumer reads: a slice if its positions are contiguous, else a gather."""
    if not members:
        return ConsumerRead("view", 0, 0, (), 0)
    places = [position[c] for c in members]
    lo, hi = min(places), max(places)
    if hi - lo + 1 == len(places):
        return ConsumerRead("view", lo, hi + 1, tuple(range(lo, hi + 1)), 0)
    return ConsumerRead("gather", -1, -1, tuple(sorted(places)), len(places))


# ---------------------------------------------------------------------- validation
def _index(channels: tuple[int, ...]) -> dict[int, int]:
    """Channel id -> position in ``channels``; ids must be distinct."""
    index: dict[int, int] = {}
    for i, c in enumerate(channels):
        if index.setdefault(c, i) != i:
            raise InputError(f"LayoutProblem.channels repeats channel {c!r}")
    return index


def _consumers(consumers: Sequence[frozenset[int]], index: dict[int, int]) -> list[frozenset]:
    """The consumer sets as frozensets, each checked to be a subset of the channels."""
    out = []
    for k, members in enumerate(consumers):
        members = frozenset(members)
        missing = sorted((c for c in members if c not in index), key=repr)
        if missing:
            raise InputError(f"consumer {k} reads channels {missing[:8]!r} not in channels")
        out.append(members)
    return out


def _weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Per-consumer weights (1.0 by default); finite and >= 0."""
    if weights is None:
        return [1.0] * count
    weights = list(weights)
    if len(weights) != count:
        raise InputError(f"{len(weights)} weights given for {count} consumers")
    for k, w in enumerate(weights):
        if not (math.isfinite(w) and w >= 0):
            raise InputError(f"weight of consumer {k} must be finite and >= 0, got {w!r}")
    return [float(w) for w in weights]


def _name(k: int, seq: Sequence[int]) -> str:
    """A fixed sequence for error messages."""
    shown = ", ".join(repr(c) for c in seq[:6]) + (", ..." if len(seq) > 6 else "")
    return f"fixed[{k}]=({shown})"


def _chains(fixed: Sequence[Sequence[int]], index: dict[int, int]) -> list[list[int]]:
    """Merge the fixed sequences into disjoint chains of channel positions.

    Each sequence asks "b right after a" for its consecutive pairs; merged, every channel
    must have at most one successor and one predecessor and no cycle may form. Otherwise the
    sequences contradict each other whatever the consumers are: InputError naming them.
    """
    after: dict[int, tuple[int, int]] = {}  # position -> (next position, sequence number)
    before: dict[int, tuple[int, int]] = {}
    for k, seq in enumerate(fixed):
        seq = tuple(seq)
        unknown = [c for c in seq if c not in index]
        if unknown:
            raise InputError(f"{_name(k, seq)} names channels {unknown[:8]!r} not in channels")
        if len(set(seq)) != len(seq):
            raise InputError(f"{_name(k, seq)} repeats a channel")
        for a, b in pairwise(seq):
            _link(after, index[a], index[b], k, fixed, f"right after channel {a!r}")
            _link(before, index[b], index[a], k, fixed, f"right before channel {b!r}")
    chains = []
    for start in sorted(after):
        if start in before:
            continue
        chain = [start]
        while chain[-1] in after:
            chain.append(after[chain[-1]][0])
        chains.append(chain)
    placed = {p for chain in chains for p in chain}
    if len(placed) - len(chains) != len(after):
        cycle = sorted({k for p, (_, k) in after.items() if p not in placed})
        names = ", ".join(_name(k, tuple(fixed[k])) for k in cycle)
        raise InputError(f"fixed sequences form a cycle: {names}")
    return chains


def _link(
    links: dict[int, tuple[int, int]],
    a: int,
    b: int,
    k: int,
    fixed: Sequence[Sequence[int]],
    where: str,
) -> None:
    """Record the link a -> b from sequence ``k``; a different earlier link is a conflict."""
    old = links.setdefault(a, (b, k))
    if old[0] != b:
        first, second = _name(old[1], tuple(fixed[old[1]])), _name(k, tuple(fixed[k]))
        raise InputError(f"fixed sequences {first} and {second} put different channels {where}")
