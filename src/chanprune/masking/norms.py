"""BatchNorm running statistics, recomputed on batches and put back: what recovery's
:func:`chanprune.recalibrate` does for good, and what Taylor scoring does for the length of one
scoring (a partly masked model is scored as it will run once recalibrated, not with the
statistics of the unpruned model, which no longer fit it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

_Norm = torch.nn.modules.batchnorm._NormBase  # BatchNorm*, SyncBatchNorm, InstanceNorm*


def has_running_stats(m: torch.nn.Module) -> bool:
    """Whether ``m`` is a normalisation layer that keeps running statistics."""
    return isinstance(m, _Norm) and m.track_running_stats and m.running_mean is not None


def norms_of(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every layer of ``model`` with running statistics."""
    return [(name, m) for name, m in model.named_modules() if has_running_stats(m)]


@contextmanager
def kept_running_stats(model: torch.nn.Module) -> Iterator[None]:
    """Put every running-statistics buffer of ``model`` back as it was on leaving."""
    saved = [(b, b.clone()) for _, m in norms_of(model) for b in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, old in saved:
                b.copy_(old)


def recompute_running_stats(model: torch.nn.Module, run: Callable[[], int]) -> int:
    """Reset the running statistics of ``model``'s normalisation layers and average them with
    equal weight (``momentum=None``) over the batches ``run()`` feeds the model, with only those
    layers in training mode (dropout stays off) and without gradients; return ``run``'s count of
    batches. Training flags and momenta are restored afterwards; on an error, or with no batch
    at all, the old statistics are put back too."""
    norms = norms_of(model)
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for _, m in norms]
    saved = [(b, b.clone()) for _, m in norms for b in m.buffers(recurse=False)]
    with torch.no_grad():
        try:
            model.eval()
            for _, m in norms:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            count = run()
        except BaseException:
            for b, old in saved:
                b.copy_(old)
            raise
        finally:
            for m, momentum in momenta:
                m.momentum = momentum
            for m, was in flags:
                m.training = was
        if count == 0:  # nothing to average over: the reset statistics mean nothing
            for b, old in saved:
                b.copy_(old)
    return count
