"""Measured latency ratio of a pruned module to the unpruned one on a backend, paired per round.

A target's promise is about the model the user runs, so the final word is a measurement: both
modules run back to back in every round (in a shuffled order), and the ratio is the median of
the per-round ratios with its 95% interval (:func:`chanprune.evaluation.timing.paired_ratio`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..capture.trace import as_input_tuple, eval_mode
from ..errors import InputError
from ..evaluation.timing import paired_ratio, round_order
from .model import check_backend


@dataclass(frozen=True)
class Measured:
    """A paired measurement: median ratio, its 95% interval (None if too few rounds), rounds."""

    ratio: float
    interval: tuple[float, float] | None
    rounds: int


def runner(
    module: torch.nn.Module, inputs: tuple, kwargs: dict, backend: str
) -> Callable[[], object]:
    """A no-argument call that runs ``module`` once on the inputs on ``backend``."""
    check_backend(backend)
    if backend == "ort":
        if kwargs:
            raise InputError(
                "backend 'ort' runs positional inputs only, and example_kwargs were given; "
                "measure with backend='eager' or fold the keyword inputs into the model"
            )
        from ..deploy.onnx import ort_runner

        run = ort_runner(module, inputs)
        return lambda: run(*inputs)
    if backend == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                "backend 'cuda' asked for, but torch sees no CUDA GPU here; use 'eager' or 'ort'"
            )
        module = copy.deepcopy(module).cuda().eval()
        xs = tuple(x.cuda() if isinstance(x, torch.Tensor) else x for x in inputs)
        kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}

        def run_cuda() -> object:
            out = module(*xs, **kw)
            torch.cuda.synchronize()
            return out

        return run_cuda
    return lambda: module(*inputs, **kwargs)


def measure_ratio(
    pruned: torch.nn.Module,
    unpruned: torch.nn.Module,
    example_inputs: object,
    example_kwargs: dict | None = None,
    backend: str = "eager",
    rounds: int = 15,
    warmup: int = 3,
) -> Measured:
    """The measured time of ``pruned`` over ``unpruned`` on ``backend``: paired per round, both
    run in a shuffled order each round, after ``warmup`` untimed calls each."""
    inputs, kwargs = as_input_tuple(example_inputs), dict(example_kwargs or {})
    with eval_mode(pruned), eval_mode(unpruned):
        return measure_calls(
            runner(pruned, inputs, kwargs, backend),
            runner(unpruned, inputs, kwargs, backend),
            rounds,
            warmup,
        )


def measure_calls(
    pruned: Callable[[], object],
    unpruned: Callable[[], object],
    rounds: int = 15,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> Measured:
    """:func:`measure_ratio` for two prepared calls (:func:`runner`), so that a search measuring
    several exports prepares the unpruned model's runner once."""
    calls = {"pruned": pruned, "unpruned": unpruned}
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for call in calls.values():
            for _ in range(warmup):
                call()
        for r in range(rounds):
            for name in round_order([list(calls)], r):
                t0 = clock()
                calls[name]()
                times[name].append(clock() - t0)
    ratio, interval = paired_ratio(times["pruned"], times["unpruned"])
    return Measured(ratio, interval, rounds)
