"""The report's accuracy view: top-1 against measured latency at latency targets, for a user's
own model and data; the frontier study (``benchmarks/frontier.py``) in small.

At each target two contenders are masked from the original weights: chanprune's default for a
target (mixed masks with Taylor scores, scored on the calibration batches) and constrained masks
of the report's heuristic (the classic scheme). Each measures its export against the unpruned
model (``chanprune.mask(target_latency=...)``), is recalibrated on the same calibration batches
(``chanprune.recalibrate``) and scored on the evaluation images. Plain data out; ``report.html``
draws it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from ..errors import MaskError
from ..evaluation.accuracy import evaluate
from ..evaluation.recovery import recalibrate
from ..masking.masks import mask
from .state import restore_state


@dataclass(frozen=True)
class Point:
    """One contender at one latency target: the measured latency ratio of its export and its
    top-1 after recalibration (both None when the target was out of reach: ``note`` says why;
    it also holds what masking warned)."""

    contender: str
    target: float
    ratio: float | None
    top1: float | None
    note: str = ""


@dataclass
class AccuracyView:
    """What the view shows: the data, the unpruned model's top-1 and one point per contender
    and target."""

    dataset: str
    images: int
    calibration_images: int
    unpruned_top1: float
    backend: str
    points: list[Point] = field(default_factory=list)


def contenders(heuristic: str) -> dict[str, dict[str, object]]:
    """{label: chanprune.mask arguments}: the default for a target, then constrained masks."""
    return {
        "default (mixed, taylor)": {"heuristic": "taylor", "constrained": None},
        f"constrained ({heuristic})": {"heuristic": heuristic, "constrained": True},
    }


def accuracy_view(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets: Sequence[float],
    calibration: list[torch.Tensor],
    test_set: Dataset,
    dataset: str,
    heuristic: str = "l1",
    backend: str = "eager",
    batch_size: int = 256,
    step: Callable[[str], object] | None = None,
) -> AccuracyView:
    """Mask ``model`` at each latency target per contender (:func:`contenders`), recalibrate
    on ``calibration`` and score on ``test_set``; ``model`` ends with its original weights and
    statistics. ``step(label)`` is a context-manager factory for progress display."""
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    view = AccuracyView(
        dataset,
        len(test_set),
        sum(len(b) for b in calibration),
        evaluate(model, test_set, batch_size=batch_size).top1,
        backend,
    )
    try:
        for t in targets:
            for label, kw in contenders(heuristic).items():
                restore_state(model, original)
                with step(f"target {t:g}: {label}") if step else contextlib.nullcontext():
                    view.points.append(
                        _point(model, x, t, label, kw, calibration, test_set, backend, batch_size)
                    )
    finally:
        restore_state(model, original)
    return view


def _point(model, x, t, label, kw, calibration, test_set, backend, batch_size) -> Point:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = mask(model, x, target_latency=t, backend=backend, calibration=calibration, **kw)
        except MaskError as e:
            return Point(label, t, None, None, str(e))
    recalibrate(model, calibration)
    top1 = evaluate(model, test_set, batch_size=batch_size).top1
    note = "; ".join(sorted({str(w.message) for w in caught}))
    return Point(label, t, float(m.ratio), top1, note)
