"""Run-order and median-interval helpers of the latency benchmarks (no models, no torch ops)."""

from __future__ import annotations

import math
import random

from chanprune.evaluation.timing import median_ci, round_order


def test_a_round_keeps_every_group_adjacent_and_shuffles_both_levels():
    groups = [("a", "b", "c"), ("d",), ("e", "f")]
    seen_first, seen_inside = set(), set()
    for seed in range(40):
        order = round_order(groups, seed)
        assert sorted(order) == list("abcdef")
        for g in groups:
            pos = sorted(order.index(n) for n in g)
            assert pos == list(range(pos[0], pos[0] + len(g))), (seed, order)
        seen_first.add(order[0])
        seen_inside.add(tuple(n for n in order if n in "abc"))
    assert len(seen_inside) == 6  # every order inside a group occurs
    assert seen_first >= {"d"} and len(seen_first) >= 4  # groups move too
    assert round_order(groups, 7) == round_order(groups, 7)


def test_the_median_interval_matches_the_binomial_order_statistics():
    # n = 20 at 95%: ranks 6 and 15 (coverage 0.9586; ranks 7 and 14 give 0.8847)
    xs = list(range(100, 120))
    random.Random(0).shuffle(xs)
    assert median_ci(xs) == (105, 114)
    assert median_ci(range(5)) is None  # 2 / 32 outside already: no 95% interval
    assert median_ci(range(6)) == (0, 5)


def test_the_median_interval_covers_the_median_as_often_as_it_claims():
    rng = random.Random(1)
    n, trials, hits = 15, 2000, 0
    for _ in range(trials):
        lo, hi = median_ci([rng.expovariate(1.0) for _ in range(n)])
        hits += lo <= math.log(2) <= hi  # the true median of Exp(1)
    assert hits / trials >= 0.94
    # and it is not trivially wide: the bounds are inner order statistics
    lo, hi = median_ci(list(range(15)))
    assert (lo, hi) == (3, 11)


def test_a_paired_ratio_is_the_median_of_the_per_round_ratios():
    from chanprune.evaluation.timing import paired_ratio

    # a slow spell in rounds 3-4 doubles both times: the per-round ratio stays 1.5
    a = [3.0, 3.0, 6.0, 6.0, 3.0, 3.0, 3.0, 3.0]
    b = [2.0, 2.0, 4.0, 4.0, 2.0, 2.0, 2.0, 2.0]
    assert paired_ratio(a, b) == (1.5, (1.5, 1.5))
    assert paired_ratio([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) == (2.0, None)  # too few for 95%
