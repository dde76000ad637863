"""Targets: find the ``amount`` whose export costs a given share of the unpruned model's MACs or
parameters.

``amount`` counts channels, while users budget compute, and what an amount buys depends on the
model, the side and whether masks are constrained (docs/guide/amount.md). ``mask(target_macs=t)``
therefore searches the amount with the user's heuristic, scope, side and constraint: each try
zeroes its masks, exports the model with :func:`chanprune.export`'s defaults but without the
output check (reusing mask's capture), counts the result, and puts the zeroed slices back, so
the model ends with one mask applied. The ratio falls as the amount grows (the
masks of a larger amount hold those of a smaller one), so the search brackets the target and
narrows the bracket, alternating interpolation and halving steps, over one amount per distinct
mask (masks change only where ``int(amount * n)`` does).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..api import export
from ..capture.trace import eval_mode
from ..errors import InputError
from ..evaluation.stats import count_params
from ..latency.measure import Measured
from ..latency.model import LatencyModel, Prediction, check_backend

_MODELS: dict[str, LatencyModel] = {}


def latency_model(backend: str) -> LatencyModel:
    """The latency model of ``backend`` (one per process, its table cached on disk)."""
    if backend not in _MODELS:
        _MODELS[backend] = LatencyModel(backend)
    return _MODELS[backend]


DEFAULT_AMOUNT = 0.3  # ``amount`` when neither it nor a target is given
TOLERANCE = 0.02  # a target is met when the export's ratio is within this (absolute)
CLOSE_ENOUGH = TOLERANCE / 4  # the search stops once a try is this close
MEASURES = {"target_macs": "MACs", "target_params": "parameters", "target_latency": "latency"}
LATENCY_TOLERANCE = 0.05  # a latency target is met when measured / target is within 1 +- this
REFINE_ROUNDS = 4  # measurements of the latency model's aim at most


@dataclass(frozen=True)
class Target:
    """A cost target: ``name`` is the parameter (``"target_macs"`` or ``"target_params"``),
    ``value`` the wanted ratio of the export to the unpruned model."""

    name: str
    value: float
    backend: str = "eager"  # where a latency target is predicted and measured

    @property
    def what(self) -> str:
        return MEASURES[self.name]

    @property
    def method(self) -> str:
        """The export method the target is predicted and measured with: the copy-free
        ``"dense"`` for a latency target on ONNX Runtime, which converts its blocked layout
        around every run-time channel copy (benchmarks/results/ort_graphs.md and frontier.md,
        "ONNX Runtime"); ``"reorder"`` (export's default) for everything else."""
        if self.name == "target_latency":
            return TARGET_METHODS.get(self.backend, "reorder")
        return "reorder"


TARGET_METHODS = {"ort": "dense"}  # latency backends whose fastest export is not reorder


@dataclass(frozen=True)
class Try:
    """One amount tried and the export's cost ratio it gave."""

    amount: float
    ratio: float


class TargetMasks(dict):
    """What :func:`chanprune.mask` returns for a target: the usual {weight name: channels}
    dict, plus ``target`` (its name and value), the ``amount`` found and the export's ``ratio``
    to the unpruned model it measured (``mask(amount=masks.amount)`` gives the same masks). For
    a latency target ``ratio`` is measured on the backend (``measured`` holds its interval),
    ``predicted`` what the latency model said, and ``attempts`` the (predicted, measured) ratio
    of every export measured on the way (:func:`refine`), which shows how far the latency
    model was off for this model. ``method`` is the export method the ratio holds for
    (:attr:`Target.method`): pass it to :func:`chanprune.export`."""

    def __init__(
        self,
        masks: dict[str, list[int]],
        target: Target,
        found: Try,
        measured: Measured | None = None,
        attempts: Sequence[tuple[float, float]] = (),
    ) -> None:
        super().__init__(masks)
        self.target = target
        self.amount = found.amount
        self.ratio = measured.ratio if measured is not None else found.ratio
        self.predicted = found.ratio  # a latency target: what the latency model predicted
        self.measured = measured  # a latency target: the paired measurement (interval, rounds)
        self.attempts = list(attempts)
        self.method = target.method


def resolve(
    amount: float | None,
    target_macs: float | None,
    target_params: float | None,
    target_latency: float | None = None,
    backend: str = "eager",
) -> tuple[float, Target | None]:
    """The amount to mask at (:data:`DEFAULT_AMOUNT` when nothing is given) and the target, if
    any. Refuses two targets, an amount beside a target, and targets outside (0, 1]."""
    check_backend(backend)
    given = {
        name: value
        for name, value in (
            ("target_macs", target_macs),
            ("target_params", target_params),
            ("target_latency", target_latency),
        )
        if value is not None
    }
    if len(given) > 1:
        raise InputError(
            f"{' and '.join(given)} were {'both' if len(given) == 2 else 'all'} given; pass "
            "one target (the other costs follow from the masks)"
        )
    if not given:
        return (DEFAULT_AMOUNT if amount is None else amount), None
    name, value = given.popitem()
    if amount is not None:
        raise InputError(
            f"amount={amount!r} and {name}={value!r} were both given; pass one: the target "
            "chooses the amount (leave amount out)"
        )
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or not 0.0 < float(value) <= 1.0
    ):
        raise InputError(
            f"{name} must be a fraction of the unpruned model's {MEASURES[name]} in (0, 1], "
            f"got {value!r}"
        )
    return 0.0, Target(name, float(value), backend)


def cost(module: torch.nn.Module, inputs: tuple, kwargs: dict, target: Target) -> float:
    """``module``'s parameter elements, MACs of one forward on the inputs (half of torch's
    FLOP count, as :func:`chanprune.count_macs`; keyword inputs passed along), or its latency
    on the target's backend as the latency model predicts it (seconds)."""
    if target.name == "target_params":
        return count_params(module)
    if target.name == "target_latency":
        return latency_model(target.backend).predict(module, inputs, kwargs).seconds
    with eval_mode(module), torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    return counter.get_total_flops() // 2


def unpruned_cost(
    model: torch.nn.Module, inputs: tuple, kwargs: dict, dynamic_shapes: object, target: Target
) -> float:
    """The cost the target's ratios divide by: :func:`cost` of the model, or for a latency
    target :func:`unpruned_prediction`'s seconds."""
    if target.name != "target_latency":
        return cost(model, inputs, kwargs, target)
    return unpruned_prediction(model, inputs, kwargs, dynamic_shapes, target.backend).seconds


def unpruned_prediction(
    model: torch.nn.Module, inputs: tuple, kwargs: dict, dynamic_shapes: object, backend: str
) -> Prediction:
    """The latency model's prediction for the model exported with nothing masked (and no width
    rounding): it runs the same ATen ops as the pruned exports it is compared with (the eager
    model runs composite ones, such as ``batch_norm``)."""
    full = export(
        model,
        inputs,
        check=False,
        example_kwargs=kwargs,
        dynamic_shapes=dynamic_shapes,
        width_quantum=1,
    )
    return latency_model(backend).predict(full, inputs, kwargs)


def target_export(
    model: torch.nn.Module, inputs: tuple, kwargs: dict, dynamic_shapes: object, target: Target
) -> torch.nn.Module:
    """What :func:`chanprune.export` (its defaults, with the target's :attr:`Target.method`)
    makes of ``model`` as it is masked now. Unchecked: the search tries many masks and keeps
    one, which the user's export checks; an unchecked export takes the symbolic capture, the
    one ``mask`` made for it."""
    return export(
        model,
        inputs,
        method=target.method,
        check=False,
        example_kwargs=kwargs,
        dynamic_shapes=dynamic_shapes,
    )


def export_cost(
    model: torch.nn.Module, inputs: tuple, kwargs: dict, dynamic_shapes: object, target: Target
) -> int:
    """The cost of :func:`target_export`'s module."""
    return cost(
        target_export(model, inputs, kwargs, dynamic_shapes, target), inputs, kwargs, target
    )


def amounts_between_cuts(sizes: Iterable[int]) -> list[float]:
    """One amount per distinct mask, in increasing order, 0 first. Masks take ``int(amount *
    n)`` channels of groups of ``n`` (layers, families of segment channels, or all candidates:
    ``sizes``), so they change only at the cuts ``k / n``; the midpoint of each pair of
    consecutive cuts (and of the last cut and 1) stands for all amounts between them, far from
    either cut for floating-point rounding to matter."""
    cuts = sorted({k / n for n in set(sizes) if n > 1 for k in range(1, n)})
    edges = [*cuts, 1.0]
    return [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(edges)]


def search(
    ratio_at: Callable[[float], float], target: float, amounts: list[float]
) -> tuple[Try, Try]:
    """Of ``amounts`` (increasing, 0 first), the try whose ratio is closest to ``target``
    (ties: the smaller amount), and the try with the lowest ratio (what the most masking
    reached). ``ratio_at`` is expected to fall as the amount grows; the search keeps a bracket
    of two amounts around the target, alternating a step where the ratio would cross it if it
    were linear with a halving step, and stops once a try is within :data:`CLOSE_ENOUGH` or
    the two amounts are neighbours."""
    lo = best = Try(amounts[0], ratio_at(amounts[0]))
    if lo.ratio <= target + CLOSE_ENOUGH or len(amounts) == 1:  # masking only lowers it
        return best, lo
    lo_i, hi_i = 0, len(amounts) - 1
    hi = Try(amounts[hi_i], ratio_at(amounts[hi_i]))
    best, lowest = _closer(best, hi, target), min(lo, hi, key=lambda t: t.ratio)
    step = 0
    while hi_i - lo_i > 1 and hi.ratio < target and abs(best.ratio - target) > CLOSE_ENOUGH:
        if step % 2:
            i = (lo_i + hi_i) // 2
        else:
            guess = lo.amount + _interpolate(lo, hi, target) * (hi.amount - lo.amount)
            i = min(max(bisect.bisect_left(amounts, guess), lo_i + 1), hi_i - 1)
        step += 1
        got = Try(amounts[i], ratio_at(amounts[i]))
        best, lowest = _closer(best, got, target), min(lowest, got, key=lambda t: t.ratio)
        if got.ratio > target:
            lo_i, lo = i, got
        else:
            hi_i, hi = i, got
    return best, lowest


def _interpolate(lo: Try, hi: Try, target: float) -> float:
    """Where the target lies between ``lo`` and ``hi`` if the ratio were linear in the amount,
    kept off the bracket's ends so that a curved ratio still narrows it."""
    share = (lo.ratio - target) / (lo.ratio - hi.ratio)
    return min(max(share, 0.1), 0.9)


def _closer(a: Try, b: Try, target: float) -> Try:
    da, db = abs(a.ratio - target), abs(b.ratio - target)
    return b if db < da or (db == da and b.amount < a.amount) else a


def verdict(
    found: Try, lowest: Try, target: Target, reach: str, mixed: bool = False
) -> tuple[bool, str] | None:
    """None when ``found`` meets the target within :data:`TOLERANCE`; else (fatal, text): fatal
    when the target lies below the ``lowest`` ratio the search reached (``reach`` says why: the
    prunable share and what pins the rest), a warning when the closest export found is the
    best there is (nothing to mask at all, or a step of whole channels across the target)."""
    name, value, what = target.name, target.value, target.what
    if name == "target_latency":
        if abs(found.ratio / value - 1) <= LATENCY_TOLERANCE:
            return None
    elif abs(found.ratio - value) <= TOLERANCE:
        return None
    if lowest.ratio > value:
        return True, (
            f"{name}={value:g} is out of reach: masking every candidate channel this masking "
            f"allows (all but one per layer) leaves the export at {lowest.ratio:.3f} of the "
            f"unpruned model's {what}; {reach}. Ask for {math.ceil(lowest.ratio * 100) / 100:g} "
            "or more, or try the other side or unconstrained masks, which can free other "
            "channels"
        )
    if found.amount == 0.0:
        return False, (
            f"chanprune: {name}={value:g}: with nothing masked the export already has "
            f"{found.ratio:.3f} of the unpruned model's {what} (channels that are zero or "
            "read by nobody are removed); nothing was masked"
        )
    finer = (
        "mixed masks already step one channel or segment channel at a time: this is the "
        "closest step there is"
        if mixed
        else "scope='global' masks in finer steps"
    )
    if name == "target_latency":
        return False, (
            f"chanprune: {name}={value:g} missed by more than {_tolerance_text(target)}: the "
            f"closest export measured {found.ratio:.3f} of the unpruned model's latency "
            f"(amount {found.amount:.4f}) after up to {REFINE_ROUNDS} measured corrections of "
            "the latency model's aim; a loaded machine, or latency that falls in steps (widths "
            "the backend runs slowly), moves it. Measure again on a quiet machine, or use "
            "target_macs"
        )
    return False, (
        f"chanprune: {name}={value:g} missed by more than "
        f"{_tolerance_text(target)}: the closest export "
        f"found has {found.ratio:.3f} of the unpruned model's {what} (amount {found.amount:.4f}); "
        "the cost falls in steps of whole channels, and the step across the target is larger "
        f"than that ({finer})"
    )


def refine(
    search_for: Callable[[float], tuple[Try, Try]],
    measure_at: Callable[[float], Measured],
    target: float,
    rounds: int = REFINE_ROUNDS,
) -> tuple[Try, Try, Measured]:
    """Aim the latency model's search at ``target``, measure what it found, and correct the aim
    until the measured ratio is within :data:`LATENCY_TOLERANCE` of the target (at most
    ``rounds`` measurements). Returns the try measured closest to the target (its ``ratio`` the
    prediction), the lowest try of its search, and its measurement.

    Why: the model's ratios carry a bias (calls timed alone miss what the whole model shares).
    The first correction assumes it is a constant factor (aim at target x predicted /
    measured); from the second on, the two measurements closest to the target give a line from
    predicted to measured ratio (a secant), which also removes a constant offset, the bias of a
    model whose fixed per-call costs the table misses (mobilenet_v2:
    benchmarks/results/frontier.md)."""
    goal = target
    best: tuple[Try, Try, Measured] | None = None
    seen: dict[float, Measured] = {}
    points: list[tuple[float, float]] = []  # (predicted, measured)
    for _ in range(max(rounds, 1)):
        found, lowest = search_for(goal)
        if found.amount in seen:
            break
        got = seen[found.amount] = measure_at(found.amount)
        points.append((found.ratio, got.ratio))
        if best is None or abs(got.ratio - target) < abs(best[2].ratio - target):
            best = (found, lowest, got)
        if abs(got.ratio / target - 1) <= LATENCY_TOLERANCE or got.ratio <= 0:
            break
        goal = _next_aim(points, target)
    assert best is not None
    return best


def _next_aim(points: list[tuple[float, float]], target: float) -> float:
    """The predicted ratio to aim at next, from (predicted, measured) pairs: a secant through
    the two measured closest to ``target`` where it rises, else the constant-factor correction
    of the closest one."""
    near = sorted(points, key=lambda pm: abs(pm[1] - target))
    (p1, m1) = near[0]
    if len(near) > 1:
        (p2, m2) = near[1]
        if p2 != p1 and (m2 - m1) / (p2 - p1) > 0:
            aim = p1 + (target - m1) * (p2 - p1) / (m2 - m1)
            if aim > 0:
                return aim
    return target * p1 / m1


def _tolerance_text(target: Target) -> str:
    if target.name == "target_latency":
        return f"{LATENCY_TOLERANCE:.0%} (measured on {target.backend})"
    return f"{TOLERANCE:g}"
