"""Which sets to give up when not all of them can be consecutive: greedy + branch and bound.

The problem: sets ``0..m-1`` over atoms ``0..size-1`` with weights ``>= 0`` (the cost of
gathering them) and mandatory directed pairs. Find a subset to *drop*, of minimum total weight,
such that the remaining sets (with the pairs) can all be consecutive in one order. This is a
minimum-weight hitting set of the *conflicts* (subfamilies that cannot all be consecutive):
every conflict must lose at least one member. :func:`greedy` gives a first solution;
:class:`_BranchAndBound` improves on it and proves a lower bound, within a work budget and a
deadline; each step's method docstring says how and why it is sound.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from .c1p import ConstrainedFamily

_MAX_DEPTH = 400  # sets dropped along one branch; deeper would near Python's recursion limit
_SEED_MAX_ITEMS = 40  # seed_triples: at most 9,880 triples of a few integer operations each

# Venn regions of three sets A, B, C, in the order of seed_triples' pattern: the sets each
# region lies in
_REGIONS = ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))


@functools.cache
def _triple_fits(pattern: tuple[bool, ...]) -> bool:
    """Whether three sets whose non-empty Venn regions are ``pattern`` can all be consecutive:
    the PQ-tree test on one element per non-empty region (128 patterns, each decided once)."""
    regions = [r for r, nonempty in zip(_REGIONS, pattern, strict=True) if nonempty]
    family = ConstrainedFamily(len(regions))
    return all(family.add([k for k, r in enumerate(regions) if s in r]) for s in range(3))


class _Timeout(Exception):
    """Raised inside the search when the deadline (or the depth cap) has been reached."""


@dataclass(frozen=True)
class Selection:
    """The sets kept (must be consecutive) and dropped, in greedy rank order, and the proof.

    ``cost`` is the weight of the dropped sets; ``lower_bound <= optimum <= cost``.
    ``method``: "c1p" (nothing dropped), "exact" (proven optimal), "heuristic" (timeout).
    """

    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    cost: float
    lower_bound: float
    optimal: bool
    method: str


def greedy_rank(sets: Sequence[Sequence[int]], weights: Sequence[float]) -> list[int]:
    """Sets by decreasing weight, then decreasing size, then index."""
    return sorted(range(len(sets)), key=lambda i: (-weights[i], -len(sets[i]), i))


def greedy(
    size: int, pairs: Sequence[tuple[int, int]], sets: Sequence[Sequence[int]], rank: list[int]
) -> tuple[list[int], list[int]]:
    """Keep each set of ``rank`` in turn if the family stays feasible: (kept, dropped).

    Always run before the search: its cost is the first upper bound."""
    family = ConstrainedFamily(size, pairs)
    kept, dropped = [], []
    for i in rank:
        (kept if family.add(sets[i]) else dropped).append(i)
    return kept, dropped


def select_family(
    size: int,
    pairs: Sequence[tuple[int, int]],
    sets: Sequence[Sequence[int]],
    weights: Sequence[float],
    deadline: float,
    max_work: int | None = None,
) -> Selection:
    """Choose the sets to keep: greedy, then branch and bound until ``deadline`` (perf_counter)
    or ``max_work`` (PQ-tree operations x atoms, a proxy for time), whichever comes first. A
    work budget, unlike the clock, gives the same result on a busy machine."""
    rank = greedy_rank(sets, weights)
    kept, dropped = greedy(size, pairs, sets, rank)
    if not dropped:
        return Selection(tuple(kept), (), 0.0, 0.0, True, "c1p")
    search = _BranchAndBound(size, pairs, sets, weights, rank, deadline, max_work)
    search.offer([i for i in dropped if weights[i] > 0], sum(weights[i] for i in dropped))
    finished = search.run()
    best = search.best_cost
    bound = best if finished else min(search.root_bound, best)
    optimal = finished or bound >= best - _tolerance(best)
    gone = set(search.best_drop)
    return Selection(
        kept=tuple(i for i in rank if weights[i] > 0 and i not in gone),
        dropped=tuple(i for i in rank if weights[i] <= 0 or i in gone),
        cost=best,
        lower_bound=best if optimal else bound,
        optimal=optimal,
        method="exact" if optimal else "heuristic",
    )


def _tolerance(value: float) -> float:
    """Costs closer than this are equal (sums of float weights in different orders)."""
    return 1e-9 * max(1.0, abs(value)) if math.isfinite(value) else 0.0


class _BranchAndBound:
    """Minimum-weight drop set by depth-first branch and bound.

    :meth:`reduce` and :meth:`seed_triples` run first, then :meth:`explore` searches. Every
    conflict found joins a pool, and so does every family found feasible: a node's bound first
    uses pooled conflicts that lie within it and skips the test of a family inside a pooled
    feasible one, so nodes below the root cost little PQ-tree work
    (tests/solver/test_solver_search.py checks the saving). The work budget and the clock are
    checked before each PQ-tree operation; on timeout the best solution so far is returned with
    the root bound (or the part of it computed in time).
    """

    def __init__(
        self,
        size: int,
        pairs: Sequence[tuple[int, int]],
        sets: Sequence[Sequence[int]],
        weights: Sequence[float],
        rank: list[int],
        deadline: float,
        max_work: int | None = None,
    ) -> None:
        self.size, self.pairs, self.sets, self.weights = size, pairs, sets, weights
        self.items = [i for i in rank if weights[i] > 0]  # weightless sets drop for free
        self.place = {i: k for k, i in enumerate(self.items)}
        self.deadline, self.work_left = deadline, max_work
        self.best_cost = math.inf
        self.best_drop: tuple[int, ...] = ()
        self.root_bound = 0.0
        self._root_done = False
        self._partial = 0.0  # bound accumulated so far by the running bound() call
        self._base = 0.0  # weight of the drops every optimal solution makes (reduce)
        self._base_count = 0
        self._conflicts: list[tuple[int, list[int]]] = []  # (bit mask, members), found so far
        self._feasible: list[int] = []  # bit masks of families found feasible

    def run(self) -> bool:
        """Search until done (True) or out of time (False)."""
        try:
            core, certain = self.reduce()
            gone = set(certain)
            self.seed_triples([i for i in self.items if i not in gone])
            self.explore(certain, core, self._base)
        except _Timeout:
            if not self._root_done:  # the root bound was cut short: use its part
                self.root_bound = self._base + self._partial
            return False
        return True

    def reduce(self) -> tuple[frozenset[int], list[int]]:
        """(core, certain drops), before the search.

        A set heavier than the greedy solution's whole cost is kept by every optimal solution
        (dropping it alone costs more), so these *core* sets are forced; any other set that does
        not fit with the core alone is dropped by every optimal solution, so its full weight is
        certain. A concatenation's block sets are such a core, and a DenseNet layer reading part
        of three or more of its inputs such a certain drop: the search and its bound then work
        on what is left, which is small. Sound because an optimal solution costs at most the
        greedy one, so it never drops a set weighing more than that. Not counted against
        ``max_work``: like greedy it is one pass over the sets."""
        limit = self.best_cost + _tolerance(self.best_cost)  # a tie may be dropped: not core
        core = [i for i in self.items if self.weights[i] > limit]
        if not core:
            return frozenset(), []
        family = self._family()  # unbudgeted, like greedy: one PQ-tree operation per set
        for i in core:
            fits = family.add(self.sets[i])
            assert fits, "the greedy solution keeps every core set, so they fit together"
        certain = [i for i in self.items if i not in core and not family.fits(self.sets[i])]
        self._base = sum(self.weights[i] for i in certain)
        self._base_count = len(certain)
        return frozenset(core), certain

    def offer(self, drop: Sequence[int], cost: float) -> None:
        """Record a feasible drop set if it is cheaper than the best one."""
        if cost < self.best_cost - _tolerance(self.best_cost):
            self.best_cost = cost
            self.best_drop = tuple(drop)

    def explore(self, dropped: list[int], forced: frozenset[int], cost: float) -> None:
        """Search below the node that drops ``dropped`` and must keep ``forced``.

        Branches on the bound's conflict with the fewest free members: branch i drops its i-th
        free member and keeps (forces) members 1..i-1, so no drop set is visited twice; a node
        is pruned when cost so far + bound >= best. A branch dropping more than ``_MAX_DEPTH``
        sets stops the search like a timeout (Python's recursion limit)."""
        self._tick()
        if len(dropped) - self._base_count > _MAX_DEPTH:
            raise _Timeout  # give up as if out of time: the result is then a heuristic one
        gone = set(dropped)
        remaining = [i for i in self.items if i in forced]
        remaining += [i for i in self.items if i not in forced and i not in gone]
        bound, first, spare = self.bound(remaining, forced)
        if not self._root_done:
            self.root_bound, self._root_done = cost + bound, True
        if first is None:
            self.offer(dropped, cost)
            return
        if spare is not None:
            self.offer(dropped + spare, cost + sum(self.weights[i] for i in spare))
        if cost + bound >= self.best_cost - _tolerance(self.best_cost):
            return
        free = sorted((i for i in first if i not in forced), key=self._cheap_first)
        keep = set(forced)
        for i in free:
            step = cost + self.weights[i]
            if step < self.best_cost - _tolerance(self.best_cost):
                self.explore([*dropped, i], frozenset(keep), step)
            keep.add(i)

    def _cheap_first(self, i: int) -> tuple[float, int]:
        return self.weights[i], self.place[i]

    def bound(
        self, remaining: list[int], forced: frozenset[int]
    ) -> tuple[float, list[int] | None, list[int] | None]:
        """Local-ratio bound on what ``remaining`` must still drop.

        Find a conflict, charge its smallest residual weight ``d`` to the bound and subtract
        ``d`` from all its members, remove members whose residual hit zero and look for the next
        conflict among the rest, until the rest is feasible. Any feasible drop set must hit
        every conflict found, and each member's charges never exceed its weight, so the sum of
        the ``d`` is a lower bound. The removed sets are also a feasible drop set, which often
        improves the upper bound. Forced sets count as infinitely heavy.

        Returns (bound, first conflict or None if ``remaining`` is feasible, a feasible drop
        set among the non-forced sets or None if there is none).
        """
        residual = {i: math.inf if i in forced else self.weights[i] for i in remaining}
        active, total, first = list(remaining), 0.0, None
        self._partial = 0.0
        while (found := self.known_conflict(active)) is not None:
            if first is None or self._free(found, forced) < self._free(first, forced):
                first = found  # branch on the conflict with the fewest free members
            step = min(residual[i] for i in found)
            if step == math.inf:
                return math.inf, first, None
            total += step
            self._partial = total
            for i in found:
                residual[i] -= step
            active = [i for i in active if residual[i] > 0]
        kept = set(active)
        return total, first, [i for i in remaining if i not in kept]

    def seed_triples(self, items: list[int]) -> None:
        """Pool every conflict of three of ``items`` up front, without PQ-tree work.

        Whether three sets can all be consecutive depends only on which of their seven Venn
        regions are non-empty (elements of one region are interchangeable, elements in none go
        anywhere), so each triple is decided from integer masks by :func:`_triple_fits`. Two
        sets always fit together, so a conflicting triple is minimal. Skipped with fixed pairs
        (they add conflicts this test cannot see) and above ``_SEED_MAX_ITEMS`` sets. Not
        counted against ``max_work``: a few integer operations per triple, bounded by the cap.
        The conflicts of the zoo's hard segments are mostly triples, so the search then rarely
        needs the PQ-tree to find one.
        """
        if self.pairs or len(items) > _SEED_MAX_ITEMS:
            return
        bits = {i: sum(1 << a for a in set(self.sets[i])) for i in items}
        for x, y, z in combinations(items, 3):
            a, b, c = bits[x], bits[y], bits[z]
            ab, ac, bc = a & b, a & c, b & c
            abc = ab & c
            pattern = (
                (a & ~(b | c)) != 0,
                (b & ~(a | c)) != 0,
                (c & ~(a | b)) != 0,
                (ab & ~c) != 0,
                (ac & ~b) != 0,
                (bc & ~a) != 0,
                abc != 0,
            )
            if not _triple_fits(pattern):
                found = [x, y, z]
                self._conflicts.append((self._mask(found), found))

    def known_conflict(self, active: list[int]) -> list[int] | None:
        """A minimal conflict within ``active``: one found before if any (no PQ-tree work),
        else :meth:`conflict`'s, which joins the pool; None if ``active`` is feasible.

        A conflict stays a conflict in every node of the search, and a subfamily of a feasible
        family is feasible, so both pools are exact; they save most of the PQ-tree work below
        the root, whose nodes differ from their parent by one or two sets."""
        mask = self._mask(active)
        for bits, found in self._conflicts:
            if bits & mask == bits:
                return found
        if any(mask & bits == mask for bits in self._feasible):
            return None
        found = self.conflict(active)
        if found is None:
            self._feasible.append(mask)
        else:
            self._conflicts.append((self._mask(found), found))
        return found

    def _mask(self, members: Sequence[int]) -> int:
        bits = 0
        for i in members:
            bits |= 1 << self.place[i]
        return bits

    @staticmethod
    def _free(found: list[int], forced: frozenset[int]) -> int:
        return sum(i not in forced for i in found)

    def conflict(self, active: list[int]) -> list[int] | None:
        """A minimal infeasible subfamily of ``active`` (with the pairs), None if feasible.

        Add sets one by one until the family fails: the failing set is in a conflict. Then
        repeatedly rebuild from the conflict found so far and re-add the earlier sets; the first
        one that fails joins the conflict, until no earlier set is left or the conflict alone
        fails. Every member of the result is needed."""
        family = self._family()
        for k, i in enumerate(active):
            if not self._fits(family, i):
                found, candidates = [i], active[:k]
                break
        else:
            return None
        while True:  # invariant: found + candidates is infeasible, each of found is needed
            if not candidates:
                return found
            family = self._family()
            if not all(self._fits(family, i) for i in found):
                return found
            for k, i in enumerate(candidates):
                if not self._fits(family, i):
                    found.append(i)
                    candidates = candidates[:k]
                    break
            else:
                raise AssertionError("a conflict's prefix became feasible")

    def _family(self) -> ConstrainedFamily:
        return ConstrainedFamily(self.size, self.pairs)

    def _fits(self, family: ConstrainedFamily, i: int) -> bool:
        self._tick()
        return family.add(self.sets[i])

    def _tick(self) -> None:
        if self.work_left is not None:  # an operation costs about one unit per atom
            self.work_left -= max(self.size, 1)
            if self.work_left < 0:
                raise _Timeout
        if time.perf_counter() > self.deadline:
            raise _Timeout
