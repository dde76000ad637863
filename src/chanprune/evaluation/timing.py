"""Latency measurement: contenders run side by side, interleaved, reported as medians.

Interleaving (a shuffled order every round) spreads machine noise over all contenders alike;
the median ignores the rounds a neighbour process spoiled. Contenders that a ratio compares run
next to each other in every round (:func:`round_order`): on a shared VM a slow spell lasts
seconds, so two runs seconds apart can land on different sides of it, two adjacent runs rarely.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import torch

from ..capture.trace import as_input_tuple


def measure_latency(
    contenders: dict[str, Callable[..., object]],
    example_inputs: object,
    runs: int = 10,
    warmup: int = 2,
    tick: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Median milliseconds per call of each contender on ``example_inputs``.

    ``tick`` is called once per round (progress bars)."""
    inputs = as_input_tuple(example_inputs)
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:
            for _ in range(warmup):
                contenders[n](*inputs)
        for r in range(max(runs, 1)):
            for n in round_order([[n] for n in names], r):
                t0 = time.perf_counter()
                contenders[n](*inputs)
                times[n].append((time.perf_counter() - t0) * 1e3)
            if tick is not None:
                tick()
    return {n: statistics.median(t) for n, t in times.items()}


def round_order(groups: Sequence[Sequence[str]], seed: int) -> list[str]:
    """One round's run order: the groups in a shuffled order, each group's names shuffled and
    kept adjacent, so the contenders a ratio pairs run within one group's span of each other.

    Deterministic in ``seed`` (the round number), so a run can be repeated exactly."""
    rng = random.Random(seed)
    blocks = [list(g) for g in groups if g]
    rng.shuffle(blocks)
    for b in blocks:
        rng.shuffle(b)
    return [n for b in blocks for n in b]


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median: the order statistics ``x(j)`` and
    ``x(n+1-j)`` with the largest ``j`` for which ``P(j <= Binomial(n, 1/2) <= n - j) >=
    confidence``. None when ``n`` is too small for that confidence (n < 6 at 95%).

    Why: on a shared machine a worst cell moves between runs of the same code, so a cell just
    past a target may be noise; the interval tells, and the report prints it next to the target
    (``benchmarks/results/latency.md``)."""
    xs = sorted(values)
    n = len(xs)
    best = None
    for j in range(1, n // 2 + 1):  # 1-based rank of the lower bound
        cover = sum(math.comb(n, i) for i in range(j, n - j + 1)) / 2**n
        if cover < confidence:
            break
        best = j
    return None if best is None else (xs[best - 1], xs[n - best])


def paired_ratio(
    a: Sequence[float], b: Sequence[float]
) -> tuple[float, tuple[float, float] | None]:
    """Median over rounds of ``a[i] / b[i]`` (two contenders' times in the same round) and its
    95% interval (:func:`median_ci`): a slow spell moves both times of a round alike."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(ratios), median_ci(ratios)


def fmt_ms(values: Iterable[float]) -> list[str]:
    return [f"{v:.1f}" if v >= 10 else f"{v:.2f}" for v in values]
