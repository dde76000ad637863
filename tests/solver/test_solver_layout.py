"""solve_layout: optimality against brute force, plan invariants, fixed chains, validation."""

from __future__ import annotations

import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanprune.layout.solver import LayoutProblem, solve_layout
from solver_brute import brute_optimum, check_plan, close, honours_fixed


def _problem(channels, consumers, weights=None, fixed=()):
    return LayoutProblem(
        channels=tuple(channels),
        consumers=tuple(frozenset(s) for s in consumers),
        weights=None if weights is None else tuple(weights),
        fixed=tuple(tuple(f) for f in fixed),
    )


@st.composite
def problems(draw, max_channels=7, max_consumers=6, max_fixed=0, heavy=False):
    n = draw(st.integers(0, max_channels))
    channels = draw(st.lists(st.integers(-20, 40), min_size=n, max_size=n, unique=True))
    m = draw(st.integers(0, max_consumers))
    if channels:
        member = st.sampled_from(channels)
        consumers = draw(st.lists(st.frozensets(member), min_size=m, max_size=m))
        fixed = draw(st.lists(st.lists(member, unique=True, max_size=4), max_size=max_fixed))
    else:
        consumers, fixed = [frozenset()] * m, []
    weight = st.floats(0, 10, allow_nan=False) | st.integers(0, 4) | st.just(1.0)
    if heavy:  # some sets outweigh any whole solution (the reduction's core), others not
        weight = st.sampled_from([0.5, 1.0, 2.0, 500.0])
    weights = draw(st.none() | st.lists(weight, min_size=m, max_size=m))
    return _problem(channels, consumers, weights, fixed)


def _check_against_brute_force(problem: LayoutProblem) -> None:
    best = brute_optimum(problem)
    if best is None:  # no order honours the fixed sequences
        with pytest.raises(ValueError, match="fixed"):
            solve_layout(problem, time_limit=5.0)
        return
    plan = solve_layout(problem, time_limit=5.0)
    check_plan(problem, plan)
    assert plan.optimal  # tiny instances always finish
    assert close(plan.cost, best), (plan, best)
    assert plan.lower_bound <= best + 1e-9


@settings(max_examples=300, deadline=None)
@given(problems())
def test_small_instances_are_solved_optimally(problem):
    _check_against_brute_force(problem)


@settings(max_examples=300, deadline=None)
@given(problems(max_channels=6, max_consumers=5, max_fixed=3))
def test_small_instances_with_fixed_sequences(problem):
    _check_against_brute_force(problem)


@settings(max_examples=300, deadline=None)
@given(problems(max_channels=7, max_consumers=7, heavy=True))
def test_small_instances_with_sets_heavier_than_any_solution(problem):
    _check_against_brute_force(problem)


def _dense_block(rng, width, layers, read):
    """A DenseNet block as layout/policy.py poses it: input i's ``width`` channels, the cat's block
    sets (each input, each prefix of inputs) as heavy consumers, and layer ``k`` reading
    ``read`` random channels of each of its ``k`` inputs."""
    inputs = [list(range(i * width, (i + 1) * width)) for i in range(layers)]
    readers = [
        {c for block in inputs[:k] for c in rng.sample(block, read)} for k in range(1, layers + 1)
    ]
    blocks = [set(b) for b in inputs] + [
        {c for b in inputs[:k] for c in b} for k in range(2, layers)
    ]
    heavy = 1.0 + width * layers * len(readers)
    channels = [c for b in inputs for c in b]
    rng.shuffle(channels)
    weights = [1.0] * len(readers) + [heavy] * len(blocks)
    return _problem(channels, readers + blocks, weights), len(readers)


def test_a_dense_block_is_proven_optimal_without_search():
    """A layer reading part of three or more of the cat's inputs can never be a slice: the
    reduction drops those for certain and proves the plan, within the work budget exports use
    (the search alone ran out of it and reported a loose bound)."""
    problem, n = _dense_block(random.Random(3), width=16, layers=12, read=12)
    plan = solve_layout(problem, time_limit=60.0, max_work=80_000)
    check_plan(problem, plan)
    assert plan.optimal and close(plan.lower_bound, plan.cost)
    kinds = [r.kind for r in plan.reads[:n]]
    assert kinds[:2] == ["view", "view"] and set(kinds[2:]) == {"gather"}
    assert all(r.copied == 0 for r in plan.reads[n:])  # every block stays contiguous
    assert close(plan.cost, sum(12 * k for k in range(3, 13)))


@settings(max_examples=150, deadline=None)
@given(problems(max_channels=7, max_consumers=8), st.integers(0, 2**32 - 1))
def test_time_capped_heuristic_keeps_its_promises(problem, seed):
    """With no time for the search: still a valid plan with a sound bound."""
    plan = solve_layout(problem, time_limit=0.0)
    check_plan(problem, plan)
    best = brute_optimum(problem)
    assert plan.lower_bound <= best + 1e-9 <= plan.cost + 2e-9
    if plan.optimal:
        assert close(plan.cost, best)


def _random_c1p(rng, n, m, n_fixed=0):
    """Random intervals of a hidden random order: a zero-copy order exists."""
    hidden = rng.sample(range(10 * n), n)
    consumers = []
    for _ in range(m):
        a, b = sorted(rng.sample(range(n + 1), 2))
        consumers.append(hidden[a:b])
    fixed = []
    for _ in range(n_fixed):
        a = rng.randrange(n)
        fixed.append(hidden[a : a + rng.randint(1, 6)])
    channels = rng.sample(hidden, n)  # the given order is scrambled
    weights = [rng.uniform(0.5, 3.0) for _ in range(m)]
    return _problem(channels, consumers, weights, fixed)


@pytest.mark.parametrize("seed", range(40))
def test_random_c1p_instances_get_a_zero_copy_order(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 300)
    problem = _random_c1p(rng, n, rng.randint(2, 40), n_fixed=seed % 3)
    plan = solve_layout(problem)
    check_plan(problem, plan)
    assert plan.method == "c1p"
    assert plan.cost == 0.0 and plan.optimal and plan.lower_bound == 0.0


def test_non_greedy_placement_is_found():
    """Growing a path from the heaviest set and appending the best-overlapping next set fails.

    Hidden order 1..8. The heaviest set {3,4,5,6} is extended by {1,2,3}; a greedy that then
    attaches {5,6,7} at the far end and {6,7,8}... must still place {2,3,4} across the seam.
    The PQ-tree considers all orders at once and finds one.
    """
    consumers = [{3, 4, 5, 6}, {1, 2, 3}, {2, 3, 4}, {5, 6, 7}, {6, 7, 8}, {4, 5}, {7, 8}]
    channels = [8, 3, 6, 1, 5, 2, 7, 4]
    problem = _problem(channels, consumers, [10, 5, 1, 4, 3, 2, 1])
    plan = solve_layout(problem)
    check_plan(problem, plan)
    assert plan.method == "c1p" and plan.cost == 0
    assert plan.order in ((1, 2, 3, 4, 5, 6, 7, 8), (8, 7, 6, 5, 4, 3, 2, 1))


def test_already_good_order_is_kept():
    problem = _problem(range(6), [{0, 1, 2}, {2, 3}, {4, 5}, {3, 4, 5}])
    assert solve_layout(problem).order == tuple(range(6))


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_cycle_must_gather_its_cheapest_member(k):
    """Tucker M_I(k): the pairs of a k-cycle cannot all be adjacent."""
    consumers = [{i, (i + 1) % k} for i in range(k)]
    weights = [3.0] * k
    weights[k // 2] = 1.0
    plan = solve_layout(_problem(range(k), consumers, weights))
    assert plan.method == "exact" and plan.optimal
    assert plan.cost == 2.0 and plan.lower_bound == 2.0
    assert [r.kind for r in plan.reads].count("gather") == 1
    assert plan.reads[k // 2].kind == "gather"


def test_triangle_and_repeated_sets():
    """{1,2},{2,3},{1,3}: one must go; a repeated set counts once as a constraint."""
    consumers = [{1, 2}, {2, 3}, {1, 3}, {1, 3}]
    plan = solve_layout(_problem([1, 2, 3], consumers, [1.0, 1.5, 1.0, 1.0]))
    check_plan(_problem([1, 2, 3], consumers, [1.0, 1.5, 1.0, 1.0]), plan)
    assert plan.cost == 2.0  # gather {1,2}, not both copies of {1,3}
    assert plan.reads[0].kind == "gather" and plan.reads[2] == plan.reads[3]
    assert plan.reads[2].kind == "view"


def test_tucker_iv_and_v():
    m4 = [{1, 2}, {3, 4}, {5, 6}, {2, 4, 6}]
    plan = solve_layout(_problem(range(1, 7), m4, [1, 1, 1, 5]))
    assert plan.cost == 2.0 and plan.optimal  # drop one pair, never the heavy triple
    assert plan.reads[3].kind == "view"
    m5 = [{1, 2}, {3, 4}, {1, 2, 3, 4}, {1, 4, 5}]
    problem = _problem(range(1, 6), m5)
    plan = solve_layout(problem)
    assert close(plan.cost, brute_optimum(problem)) and plan.cost == 2.0 and plan.optimal


def test_trivial_consumers_are_always_views():
    consumers = [set(), {7}, {1, 7, 3, 9}, {1, 3}, {3, 9}, {1, 9}]
    problem = _problem([1, 3, 7, 9], consumers)
    plan = solve_layout(problem)
    check_plan(problem, plan)
    assert [r.kind for r in plan.reads[:3]] == ["view"] * 3
    assert plan.reads[0] == plan.reads[0].__class__("view", 0, 0, (), 0)
    assert plan.reads[2].indices == (0, 1, 2, 3)


def test_empty_problem():
    plan = solve_layout(_problem([], [set(), set()]))
    assert plan.order == () and plan.cost == 0 and plan.method == "c1p"


def test_fixed_direction_is_honoured():
    """The PQ-tree alone would accept the reversed chain; the plan must not."""
    problem = _problem(range(6), [{0, 1}, {1, 2, 3}], fixed=[(3, 2, 1), (5, 4)])
    plan = solve_layout(problem)
    check_plan(problem, plan)
    assert plan.method == "c1p"
    assert honours_fixed(plan.order, problem.fixed)


def test_fixed_directions_can_force_a_gather():
    """1 before 2 and 4 before 3 leave no room for {2, 3} to be contiguous."""
    problem = _problem([1, 2, 3, 4], [{2, 3}], fixed=[(1, 2), (4, 3)])
    plan = solve_layout(problem)
    check_plan(problem, plan)
    assert plan.cost == 2.0 and plan.optimal and brute_optimum(problem) == 2.0
    flipped = _problem([1, 2, 3, 4], [{2, 3}], fixed=[(1, 2), (3, 4)])
    assert solve_layout(flipped).cost == 0.0


def test_overlapping_fixed_sequences_merge():
    problem = _problem(range(8), [{0, 7}], fixed=[(1, 2, 3), (3, 4), (2, 3, 4, 5)])
    plan = solve_layout(problem)
    check_plan(problem, plan)
    start = plan.order.index(1)
    assert plan.order[start : start + 5] == (1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    ("fixed", "message"),
    [
        ([(1, 2), (1, 3)], r"fixed\[0\]=\(1, 2\) and fixed\[1\]=\(1, 3\)"),
        ([(2, 1), (3, 1)], r"fixed\[0\].*fixed\[1\].*right before"),
        ([(1, 2, 3), (3, 1)], r"cycle: fixed\[0\]=\(1, 2, 3\), fixed\[1\]=\(3, 1\)"),
        ([(1, 2, 1)], r"fixed\[0\]=\(1, 2, 1\) repeats"),
        ([(1, 99)], r"fixed\[0\].*\[99\] not in channels"),
    ],
)
def test_contradictory_fixed_sequences_raise(fixed, message):
    with pytest.raises(ValueError, match=message):
        solve_layout(_problem([1, 2, 3, 4], [{1, 2}], fixed=fixed))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": [1, 2, 2]}, "repeats channel 2"),
        ({"consumers": [{1, 5}]}, r"consumer 0 reads channels \[5\]"),
        ({"weights": [1.0, 2.0]}, "2 weights given for 1 consumers"),
        ({"weights": [-1.0]}, "finite and >= 0"),
        ({"weights": [math.nan]}, "finite and >= 0"),
    ],
)
def test_invalid_problems_raise(kwargs, message):
    args = {"channels": [1, 2, 3], "consumers": [{1, 2}], **kwargs}
    with pytest.raises(ValueError, match=message):
        solve_layout(_problem(**args))


def _scrambled_copy(problem: LayoutProblem) -> LayoutProblem:
    """Same problem by value, sets built in a different insertion order."""
    consumers = tuple(frozenset(sorted(s, reverse=True)) for s in problem.consumers)
    return LayoutProblem(problem.channels, consumers, problem.weights, problem.fixed)


@pytest.mark.parametrize("seed", range(5))
def test_deterministic(seed):
    rng = random.Random(seed)
    channels = rng.sample(range(1000), 60)
    consumers = [set(rng.sample(channels, rng.randint(2, 30))) for _ in range(10)]
    problem = _problem(channels, consumers)
    first = solve_layout(problem, time_limit=0.2)
    assert solve_layout(_scrambled_copy(problem), time_limit=0.2).order == first.order
    if first.optimal:
        assert solve_layout(problem) == first


def test_time_limit_is_respected_on_a_hard_instance():
    """Random sets on 200 channels are far from C1P: the search must stop near the limit."""
    rng = random.Random(7)
    channels = list(range(200))
    consumers = [set(rng.sample(channels, rng.randint(2, 120))) for _ in range(30)]
    problem = _problem(channels, consumers, [rng.uniform(0.1, 2) for _ in consumers])
    start = time.perf_counter()
    plan = solve_layout(problem, time_limit=0.05)
    assert time.perf_counter() - start < 3.0  # generous: greedy + assembly are not capped
    check_plan(problem, plan)
    assert plan.method == "heuristic" and not plan.optimal
    assert 0.0 <= plan.lower_bound < plan.cost


def test_cost_counts_channels_not_consumers():
    """Gathering a pair (2 x 1.2) beats gathering the triple (3 x 1.0)."""
    m4 = [{1, 2}, {3, 4}, {5, 6}, {2, 4, 6}]
    plan = solve_layout(_problem(range(1, 7), m4, [1.2, 1.2, 1.2, 1.0]))
    assert close(plan.cost, 2.4) and plan.optimal and plan.reads[3].kind == "view"


def test_weightless_consumers_still_get_views_when_they_fit():
    """Zero-weight sets are left out of the search but added back if they still fit."""
    consumers = [{1, 2}, {2, 3}, {1, 3}, {5, 6}, {6, 4}]
    problem = _problem([5, 1, 2, 3, 4, 6], consumers, [1, 1, 1, 0, 0])
    plan = solve_layout(problem)
    check_plan(problem, plan)
    assert plan.cost == 2.0 and plan.optimal
    assert plan.reads[3].kind == plan.reads[4].kind == "view"
