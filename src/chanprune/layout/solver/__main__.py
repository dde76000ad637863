"""Time the layout solver on large random instances: ``python -m chanprune.layout.solver [seed]``.

Not a test: it prints timings for a person to look at.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable

from .c1p import has_consecutive_ones
from .layout import solve_layout
from .problem import LayoutPlan, LayoutProblem


def random_problem(
    rng: random.Random, channels: int, consumers: int, scattered: int = 0, fixed: int = 0
) -> LayoutProblem:
    """Intervals of a hidden random order (C1P), plus ``scattered`` random sets (likely not).

    The given channel order is scrambled, so the solver has to find the hidden one.
    """
    hidden = rng.sample(range(10 * channels), channels)
    sets = []
    for _ in range(consumers - scattered):
        a, b = sorted(rng.sample(range(channels + 1), 2))
        sets.append(frozenset(hidden[a:b]))
    for _ in range(scattered):
        sets.append(frozenset(rng.sample(hidden, rng.randint(2, channels // 2))))
    chains = []
    for _ in range(fixed):
        a = rng.randrange(channels)
        chains.append(tuple(hidden[a : a + rng.randint(2, 64)]))
    weights = tuple(rng.uniform(0.5, 4.0) for _ in sets)
    return LayoutProblem(tuple(rng.sample(hidden, channels)), tuple(sets), weights, tuple(chains))


def _time(run: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(min, median) wall time in ms over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(1000 * (time.perf_counter() - start))
    return min(times), statistics.median(times), result


def _report(label: str, problem: LayoutProblem, time_limit: float, repeats: int) -> None:
    best, median, plan = _time(lambda: solve_layout(problem, time_limit), repeats)
    assert isinstance(plan, LayoutPlan)
    print(
        f"{label:<50} min {best:7.1f} ms  median {median:7.1f} ms  "
        f"method={plan.method} cost={plan.cost:.1f} lower_bound={plan.lower_bound:.1f}"
    )


def main(seed: int = 0) -> None:
    rng = random.Random(seed)
    c1p = random_problem(rng, 2000, 40)
    _report("C1P, 2000 channels, 40 consumers", c1p, 0.5, 20)
    fixed = random_problem(rng, 2000, 40, fixed=8)
    _report("C1P + 8 fixed runs, 2000 ch, 40 cons.", fixed, 0.5, 20)
    for scattered in (1, 3, 10):
        hard = random_problem(rng, 2000, 40, scattered=scattered)
        _report(f"not C1P ({scattered} scattered sets), 2000 ch, 40 cons.", hard, 0.5, 3)
    pairs = [{i, i + 1} for i in range(1999)]
    intervals = [set(range(a, a + rng.randint(2, 50))) for a in rng.sample(range(1950), 500)]
    universe = rng.sample(range(2000), 2000)  # scrambled: the PQ-tree must find the order
    best, median, ok = _time(lambda: has_consecutive_ones(pairs + intervals, universe), 3)
    label = "raw PQ-tree: 2000 elements, 2499 sets (no twins)"
    print(f"{label:<50} min {best:7.1f} ms  median {median:7.1f} ms  c1p={ok}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
