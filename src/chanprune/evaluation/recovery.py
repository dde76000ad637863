"""Recovering accuracy after masking: BatchNorm recalibration and fine-tuning the masked model.

Both work on the *masked* model, before :func:`chanprune.export`, so the export stays exact by
construction: it is checked against the masked model as it is after recovery.

- :func:`recalibrate` recomputes BatchNorm running statistics on a few calibration batches.
  Masking changes the distribution every later layer sees, so the statistics of the unpruned
  model no longer fit; recomputing them is cheap (no gradients) and recovers most of the loss.
- :func:`finetune` trains the masked model in training semantics and holds the pruned channels
  at zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch.utils.data import Dataset

from ..capture.trace import as_input_tuple
from ..errors import InputError
from ..masking.masks import apply_masks
from ..masking.norms import norms_of, recompute_running_stats
from .training import train


def recalibrate(model: torch.nn.Module, batches: Iterable[object]) -> list[str]:
    """Recompute the running statistics of ``model``'s BatchNorm layers on ``batches``, in place;
    return the names of the layers recalibrated.

    Each batch is what the model is called with: a tensor, or a tuple of tensors for a model
    with several inputs (from a loader of (image, label) pairs pass ``(x for x, _ in loader)``);
    it is moved to the model's device. The statistics are reset and averaged over all batches
    with equal weight (``momentum=None``), with only the normalisation layers in training mode
    (dropout stays off) and without gradients. Every module's training flag and momentum are
    restored afterwards; on any error (no batch at all, a batch the model refuses) the old
    statistics are put back too.

    Call it on the masked model before exporting: a channel the mask zeroed enters its
    BatchNorm as zeros, gets mean 0 and variance 0, and stays zero because the mask also zeroed
    that BatchNorm's weight and bias; the export then reads the new statistics and stays exact.
    Layers with no running statistics (``track_running_stats=False``, frozen BatchNorm) are left
    alone; a model without any gets a warning and is not changed.
    """
    norms = norms_of(model)
    if not norms:
        warnings.warn(
            f"chanprune.recalibrate: {type(model).__name__} has no BatchNorm layer with running "
            "statistics; nothing to recalibrate",
            stacklevel=2,
        )
        return []
    device = _device(model)
    if recompute_running_stats(model, lambda: _run_all(model, batches, device)) == 0:
        raise InputError("recalibrate got no batches; pass at least one batch of model inputs")
    return [name for name, _ in norms]


def finetune(
    model: torch.nn.Module,
    dataset: Dataset,
    epochs: int,
    example_inputs: object,
    masks: Mapping[str, Iterable[int]],
    side: str = "output",
    **train_options: object,
) -> list[float]:
    """Fine-tune the masked ``model`` in place in training semantics, keeping what ``masks``
    pruned at zero; return the mean loss of each epoch. Export it afterwards.

    ``masks`` and ``side`` are what :func:`chanprune.mask` returned and was given (or what
    :func:`chanprune.apply_masks` was given); the entries they zero (filter rows, biases and the
    BatchNorm weights and biases after them, or consumer columns) are zeroed again after every
    optimizer step. ``train_options`` go to :func:`chanprune.evaluation.training.train` (``lr``,
    ``batch_size``, ``seed``, ...); under ``torchrun`` the training is data-parallel.

    Why the masked model and not the export: the export is captured in inference semantics
    (BatchNorm reads constant running statistics, dropout is gone), so training it never updates
    its statistics, and a training-mode export would need a second capture and rewrite whose
    BatchNorm, over the kept channels only, must match the full-width one. The masked model
    has real training semantics for free: BatchNorm uses batch statistics and updates its running
    statistics, dropout is active. A pruned channel stays zero through BatchNorm in training
    mode (weight and bias are held at zero), so the model stays a masked model of the same
    channels, and one export at the end is exact by construction (export checks it). The cost
    is training at full width.
    """
    keep_zero = held_zeros(model, example_inputs, masks, side)
    return train(model, dataset, epochs, keep_zero=keep_zero, **train_options)


def held_zeros(
    model: torch.nn.Module,
    example_inputs: object,
    masks: Mapping[str, Iterable[int]],
    side: str = "output",
) -> dict[str, torch.Tensor]:
    """{parameter name: boolean mask} of the entries ``apply_masks(model, example_inputs,
    masks, side)`` zeroes, which it zeroes (again) in ``model``.

    Found by giving every zero parameter entry a tiny nonzero value for the call: afterwards the
    zero entries are exactly the ones it zeroed. The tiny values are put back to zero, so the
    model's other entries, and its zeros, are as before. Entries that are merely zero (a fresh
    BatchNorm's bias) are not held.
    """
    params = dict(model.named_parameters())
    zeros = {n: p == 0 for n, p in params.items() if p.is_floating_point()}
    held: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for n, z in zeros.items():
                params[n].masked_fill_(z, torch.finfo(params[n].dtype).tiny)
        apply_masks(model, example_inputs, dict(masks), side=side)
        held = {n: params[n] == 0 for n in zeros}
    finally:
        with torch.no_grad():
            for n, z in zeros.items():
                params[n].masked_fill_(z, 0)
    return {n: m for n, m in held.items() if m.any()}


def sample_batches(dataset: Dataset, count: int, batch_size: int, seed: int = 0) -> Iterator:
    """``count`` batches of the images of ``dataset`` ((image, label) items), drawn at random
    without repeats (seeded): a calibration sample that is not, say, the first classes of a
    sorted ImageFolder tree. Fewer batches if the data set is smaller."""
    if count < 1 or batch_size < 1:
        raise InputError(f"calibration needs count and batch_size >= 1, got {count}, {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen)[: count * batch_size].tolist()
    for start in range(0, len(order), batch_size):
        yield torch.stack([dataset[i][0] for i in order[start : start + batch_size]])


def _device(model: torch.nn.Module) -> torch.device:
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers())
    return t.device


def _run_all(model: torch.nn.Module, batches: Iterable[object], device: torch.device) -> int:
    count = 0
    for batch in batches:
        inputs = tuple(x.to(device) for x in as_input_tuple(batch))
        try:
            model(*inputs)
        except Exception as e:
            shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
            raise InputError(
                f"recalibrate: {type(model).__name__} failed on batch {count} (inputs {shapes}): "
                f"{e}. Each batch is the model's inputs, a tensor or a tuple of tensors; from a "
                "loader of (image, label) pairs pass (x for x, _ in loader)"
            ) from e
        count += 1
    return count
