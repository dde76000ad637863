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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..api import export
from ..capture.trace import eval_mode
from ..errors import InputError
from ..evaluation.stats import count_params

DEFAULT_AMOUNT = 0.3  # ``amount`` when neither it nor a target is given
TOLERANCE = 0.02  # a target is met when the export's ratio is within this (absolute)
CLOSE_ENOUGH = TOLERANCE / 4  # the search stops once a try is this close
MEASURES = {"target_macs": "MACs", "target_params": "parameters"}


@dataclass(frozen=True)
class Target:
    """A cost target: ``name`` is the parameter (``"target_macs"`` or ``"target_params"``),
    ``value`` the wanted ratio of the export to the unpruned model."""

    name: str
    value: float

    @property
    def what(self) -> str:
        return MEASURES[self.name]


@dataclass(frozen=True)
class Try:
    """One amount tried and the export's cost ratio it gave."""

    amount: float
    ratio: float


class TargetMasks(dict):
    """What :func:`chanprune.mask` returns for a target: the usual {weight name: channels}
    dict, plus ``target`` (its name and value), the ``amount`` found and the export's ``ratio``
    to the unpruned model it measured (``mask(amount=masks.amount)`` gives the same masks)."""

    def __init__(self, masks: dict[str, list[int]], target: Target, found: Try) -> None:
        super().__init__(masks)
        self.target = target
        self.amount = found.amount
        self.ratio = found.ratio


def resolve(
    amount: float | None, target_macs: float | None, target_params: float | None
) -> tuple[float, Target | None]:
    """The amount to mask at (:data:`DEFAULT_AMOUNT` when nothing is given) and the target, if
    any. Refuses two targets, an amount beside a target, and targets outside (0, 1]."""
    given = {
        name: value
        for name, value in (("target_macs", target_macs), ("target_params", target_params))
        if value is not None
    }
    if len(given) > 1:
        raise InputError(
            "target_macs and target_params were both given; pass one target (the other cost "
            "follows from the masks)"
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
    return 0.0, Target(name, float(value))


def cost(module: torch.nn.Module, inputs: tuple, kwargs: dict, target: Target) -> int:
    """``module``'s parameter elements, or MACs of one forward on the inputs (half of torch's
    FLOP count, as :func:`chanprune.count_macs`; keyword inputs passed along)."""
    if target.name == "target_params":
        return count_params(module)
    with eval_mode(module), torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    return counter.get_total_flops() // 2


def export_cost(
    model: torch.nn.Module, inputs: tuple, kwargs: dict, dynamic_shapes: object, target: Target
) -> int:
    """The cost of what :func:`chanprune.export` (its defaults) makes of ``model`` as it is
    masked now. Unchecked: the search tries many masks and keeps one, which the user's export
    checks; an unchecked export takes the symbolic capture, the one ``mask`` made for it."""
    pruned = export(
        model, inputs, check=False, example_kwargs=kwargs, dynamic_shapes=dynamic_shapes
    )
    return cost(pruned, inputs, kwargs, target)


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


def verdict(found: Try, lowest: Try, target: Target, reach: str) -> tuple[bool, str] | None:
    """None when ``found`` meets the target within :data:`TOLERANCE`; else (fatal, text): fatal
    when the target lies below the ``lowest`` ratio the search reached (``reach`` says why: the
    prunable share and what pins the rest), a warning when the closest export found is the
    best there is (nothing to mask at all, or a step of whole channels across the target)."""
    name, value, what = target.name, target.value, target.what
    if abs(found.ratio - value) <= TOLERANCE:
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
    return False, (
        f"chanprune: {name}={value:g} missed by more than {TOLERANCE:g}: the closest export "
        f"found has {found.ratio:.3f} of the unpruned model's {what} (amount {found.amount:.4f}); "
        "the cost falls in steps of whole channels, and the step across the target is larger "
        "than that (scope='global' masks in finer steps)"
    )
