"""Latency measurement: contenders run side by side, interleaved, reported as medians.

Interleaving (a shuffled order every round) spreads machine noise over all contenders alike;
the median ignores the rounds a neighbour process spoiled.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable

import torch

from .capture import as_input_tuple


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
            order = names[:]
            random.Random(r).shuffle(order)
            for n in order:
                t0 = time.perf_counter()
                contenders[n](*inputs)
                times[n].append((time.perf_counter() - t0) * 1e3)
            if tick is not None:
                tick()
    return {n: statistics.median(t) for n, t in times.items()}


def fmt_ms(values: Iterable[float]) -> list[str]:
    return [f"{v:.1f}" if v >= 10 else f"{v:.2f}" for v in values]
