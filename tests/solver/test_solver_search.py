"""The search internals: the lower bound alone, and the conflicts it is built from."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanprune.layout.solver import LayoutProblem, has_consecutive_ones, solve_layout
from chanprune.layout.solver import search as search_mod
from chanprune.layout.solver.c1p import ConstrainedFamily
from chanprune.layout.solver.search import _BranchAndBound, greedy, greedy_rank, select_family
from solver_brute import brute_optimum, check_plan, valid_orders

instances = (
    st.integers(3, 7)
    .flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.sets(st.integers(0, n - 1), min_size=2, max_size=n - 1), max_size=7),
            st.lists(st.floats(0.1, 10), min_size=7, max_size=7),
        )
    )
    .map(lambda t: (t[0], t[1], t[2][: len(t[1])]))
)  # one weight per set


def _search(n, sets, weights):
    rank = greedy_rank(sets, weights)
    return _BranchAndBound(n, (), [sorted(s) for s in sets], weights, rank, math.inf)


def _optimum(n, sets, weights):
    problem = LayoutProblem(
        tuple(range(n)),
        tuple(frozenset(s) for s in sets),
        tuple(w / len(s) for w, s in zip(weights, sets, strict=False)),
    )
    return brute_optimum(problem)


@settings(max_examples=300, deadline=None)
@given(instances)
def test_root_bound_is_sound_and_conflicts_are_minimal(instance):
    n, sets, weights = instance
    search = _search(n, sets, weights)
    items = search.items
    bound, first, spare = search.bound(items, frozenset())
    best = _optimum(n, sets, weights)
    assert bound <= best + 1e-9
    if first is None:
        assert valid_orders(range(n), sets)
        return
    assert not valid_orders(range(n), [sets[i] for i in first])
    for drop in first:  # minimal: every member is needed
        assert valid_orders(range(n), [sets[i] for i in first if i != drop])
    rest = [sets[i] for i in items if i not in spare]
    assert valid_orders(range(n), rest)  # the spare drop set is feasible


@settings(max_examples=200, deadline=None)
@given(instances)
def test_greedy_keeps_a_feasible_maximal_family(instance):
    n, sets, weights = instance
    sorted_sets = [sorted(s) for s in sets]
    kept, dropped = greedy(n, (), sorted_sets, greedy_rank(sorted_sets, weights))
    assert valid_orders(range(n), [sets[i] for i in kept])
    for i in dropped:
        assert not valid_orders(range(n), [sets[j] for j in kept] + [sets[i]])
    choice = select_family(n, (), sorted_sets, weights, time.perf_counter() + 5)
    assert choice.optimal and math.isclose(choice.cost, _optimum(n, sets, weights), abs_tol=1e-9)


def test_family_rolls_back_a_set_that_breaks_a_direction():
    family = ConstrainedFamily(4, [(0, 1), (3, 2)])
    assert not family.add([1, 2])
    assert family.add([0, 1])
    assert family.order() == [0, 1, 3, 2]


@pytest.mark.parametrize("seed", range(30))
def test_exact_search_matches_subset_enumeration(seed):
    """Medium instances (too big to permute): the optimum over all kept subfamilies.

    The reference tries every subfamily with the (separately brute-force-checked) C1P test.
    """
    rng = random.Random(seed)
    n, m = rng.randint(8, 30), rng.randint(4, 10)
    channels = rng.sample(range(100), n)
    hidden = rng.sample(channels, n)
    consumers = []
    for _ in range(m):  # mostly intervals of a hidden order, some scattered sets
        if rng.random() < 0.7:
            a, b = sorted(rng.sample(range(n + 1), 2))
            consumers.append(frozenset(hidden[a:b]))
        else:
            consumers.append(frozenset(rng.sample(channels, rng.randint(2, n - 1))))
    weights = tuple(rng.choice([1.0, 2.0, rng.uniform(0.1, 3)]) for _ in range(m))
    problem = LayoutProblem(tuple(channels), tuple(consumers), weights)
    best = math.inf
    for mask in range(1 << m):
        kept = [consumers[i] for i in range(m) if mask >> i & 1]
        if has_consecutive_ones(kept, channels):
            dropped = (weights[i] * len(consumers[i]) for i in range(m) if not mask >> i & 1)
            best = min(best, math.fsum(dropped))
    plan = solve_layout(problem, time_limit=10.0)
    check_plan(problem, plan)
    assert plan.optimal and math.isclose(plan.cost, best, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(instances)
def test_the_search_pools_only_true_conflicts_and_feasible_families(instance):
    n, sets, weights = instance
    search = _search(n, sets, weights)
    search.offer(list(search.items), sum(weights))  # the trivial upper bound: drop everything
    assert search.run()
    assert math.isclose(search.best_cost, _optimum(n, sets, weights), abs_tol=1e-9)
    for bits, found in search._conflicts:
        assert bits == search._mask(found)
        assert not valid_orders(range(n), [sets[i] for i in found])
    for bits in search._feasible:
        members = [i for i in search.items if bits >> search.place[i] & 1]
        assert valid_orders(range(n), [sets[i] for i in members])


def _medium_instance(seed):
    rng = random.Random(seed)
    n, m = 24, 10
    hidden = rng.sample(range(n), n)
    sets = []
    for _ in range(m):
        if rng.random() < 0.6:
            a, b = sorted(rng.sample(range(n + 1), 2))
            sets.append(sorted(hidden[a : max(b, a + 2)]))
        else:
            sets.append(sorted(rng.sample(range(n), rng.randint(2, n - 2))))
    return n, sets, [rng.uniform(0.5, 3) for _ in range(m)]


def _solve_counting(n, sets, weights):
    """(optimum, PQ-tree additions) of a full search, started from the greedy solution."""
    search = _search(n, sets, weights)
    calls = []
    fits = search._fits
    search._fits = lambda family, i: calls.append(i) or fits(family, i)
    _, dropped = greedy(n, (), sets, search.items)
    search.offer(dropped, sum(weights[i] for i in dropped))
    assert search.run()
    return search.best_cost, len(calls)


def _assert_saves_work(monkeypatch, switch_off) -> None:
    """The medium instances cost the same with ``switch_off`` applied, and the search does
    less PQ-tree work without it."""
    on = [_solve_counting(*_medium_instance(seed)) for seed in range(12)]
    switch_off(monkeypatch)
    off = [_solve_counting(*_medium_instance(seed)) for seed in range(12)]
    assert [c for c, _ in on] == pytest.approx([c for c, _ in off])
    assert sum(w for _, w in on) < 0.8 * sum(w for _, w in off)


def test_known_conflicts_save_pq_tree_work_below_the_root(monkeypatch):
    """The pools change how much work the search does, never its answer."""
    monkeypatch.setattr(search_mod, "_SEED_MAX_ITEMS", 0)  # the pools alone
    unpooled = lambda self, active: self.conflict(active)  # noqa: E731
    _assert_saves_work(
        monkeypatch, lambda mp: mp.setattr(_BranchAndBound, "known_conflict", unpooled)
    )


def test_the_triple_table_matches_brute_force():
    """Three sets' fit depends only on which Venn regions are non-empty: all 128 patterns."""
    for pattern in itertools.product([False, True], repeat=7):
        regions = [r for r, on in zip(search_mod._REGIONS, pattern, strict=True) if on]
        sets = [[k for k, r in enumerate(regions) if s in r] for s in range(3)]
        assert search_mod._triple_fits(pattern) == bool(valid_orders(range(len(regions)), sets)), (
            pattern
        )


@settings(max_examples=150, deadline=None)
@given(instances)
def test_seeded_triples_are_exactly_the_triples_that_cannot_be_consecutive(instance):
    n, sets, weights = instance
    search = _search(n, sets, weights)
    search.seed_triples(search.items)
    pooled = {frozenset(found) for _, found in search._conflicts}
    for triple in itertools.combinations(search.items, 3):
        infeasible = not valid_orders(range(n), [sets[i] for i in triple])
        assert (frozenset(triple) in pooled) == infeasible, triple


def test_seeded_triples_save_pq_tree_work(monkeypatch):
    """Seeding changes how much work the search does, never its answer."""
    _assert_saves_work(monkeypatch, lambda mp: mp.setattr(search_mod, "_SEED_MAX_ITEMS", 0))
