"""Short supervised training: the accuracy benchmark's base models and fine-tuning after pruning.

One-cycle AdamW over a fixed number of epochs with a fixed seed: a few epochs reach a useful
accuracy on small data. The loop runs the model in training mode (BatchNorm normalises with batch
statistics and updates its running statistics, dropout is active) and, when a process group is
initialised (``torchrun``), as ``DistributedDataParallel``: gradients are averaged over the
processes and a ``DistributedSampler`` gives each one its share of every global batch.
``keep_zero`` holds chosen entries at zero after every step: that is how
:func:`chanprune.evaluation.recovery.finetune` keeps a masked model's pruned channels pruned.
``on_epoch`` hands the caller the training state after every epoch and ``resume`` takes it back,
so a long run can be checkpointed and resumed where it was killed (benchmarks/frontier.py).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import InputError


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
    keep_zero: Mapping[str, torch.Tensor] | None = None,
    distributed: bool | None = None,
    on_epoch: Callable[[int, float, dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> list[float]:
    """Train ``model`` in place with cross-entropy; return the mean loss of each epoch.

    ``batch_size`` is the global batch: under ``distributed`` (default: whenever a process group
    is initialised) each of the W processes takes ``batch_size / W`` samples of it, and the
    gradients are averaged, so W processes take the steps one process takes on the same data (up
    to float rounding; BatchNorm's batch statistics are each process' own, as in any DDP run).
    Every process ends with the same parameters and with rank 0's buffers. The sample order
    depends on ``seed`` and the epoch only, dropout on ``seed`` and the rank; the caller's
    random state is left as it was. ``keep_zero`` maps parameter names to boolean masks of the
    entries to hold at zero (set to zero before training and after every step). Every module's
    training flag is restored afterwards.

    ``on_epoch(epoch, loss, state)`` is called after each epoch (``epoch`` counts from 1) with
    the state that ``resume`` takes: ``epoch``, the optimizer's, the scheduler's and the random
    generators' states (plain tensors and numbers, loadable with ``weights_only``). It runs with
    the random state forked, so evaluating there changes nothing that follows. Passing that state
    as ``resume`` (with the model's weights from the same moment and the same arguments) continues
    with the next epoch and takes the steps the uninterrupted run would have taken; the returned
    losses are those of the epochs run in this call.
    """
    if epochs < 0 or batch_size < 1:
        raise InputError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if epochs == 0:
        return []
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError(f"{type(model).__name__} has no trainable parameters")
    held = _held(model, keep_zero or {})
    rank, world = _rank_and_world(distributed)
    if batch_size % world:
        raise InputError(
            f"batch_size {batch_size} is the global batch and must be divisible by the "
            f"{world} processes; pass a multiple of {world}"
        )
    device = params[0].device
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, drop_last=True)
    if len(loader) == 0:
        raise InputError(f"dataset of {len(dataset)} items is smaller than batch_size {batch_size}")
    net = _ddp(model, device) if world > 1 else model
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(loader))
    losses = []
    devices = [device] if device.type == "cuda" else []
    with kept_modes(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + rank)
        start = _resume(resume, opt, sched, epochs, devices)
        _zero(held)
        for epoch in range(start, epochs):
            model.train()  # again each epoch: an ``on_epoch`` evaluation may have left eval mode
            sampler.set_epoch(epoch)
            total = torch.zeros(2, dtype=torch.float64)
            for x, y in _bar(loader, progress, f"{desc} epoch {epoch + 1}/{epochs}"):
                loss = torch.nn.functional.cross_entropy(net(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                _zero(held)
                total += torch.tensor([loss.item() * len(y), len(y)], dtype=torch.float64)
            if world > 1:
                dist.all_reduce(total)
            losses.append(float(total[0] / total[1]))
            if on_epoch is not None:
                state = _state(epoch + 1, opt, sched, devices)
                with torch.random.fork_rng(devices=devices):
                    on_epoch(epoch + 1, losses[-1], state)
        if world > 1:
            _broadcast_buffers(model)
    return losses


def _state(
    epoch: int, opt: torch.optim.Optimizer, sched: Any, devices: list[torch.device]
) -> dict[str, Any]:
    """What :func:`train` needs to continue after ``epoch`` epochs (the model's weights aside),
    copied: the optimizer updates its moment tensors in place as training goes on."""
    return {
        "epoch": epoch,
        "optimizer": copy.deepcopy(opt.state_dict()),
        "scheduler": copy.deepcopy(sched.state_dict()),
        "rng": torch.get_rng_state(),
        "cuda_rng": [torch.cuda.get_rng_state(d) for d in devices],
    }


def _resume(
    state: Mapping[str, Any] | None,
    opt: torch.optim.Optimizer,
    sched: Any,
    epochs: int,
    devices: list[torch.device],
) -> int:
    """Load ``state`` (from ``on_epoch``) into the optimizer, scheduler and random generators;
    return the epoch to start at (0 without a state)."""
    if state is None:
        return 0
    missing = {"epoch", "optimizer", "scheduler", "rng"} - set(state)
    if missing or not 0 <= int(state["epoch"]) <= epochs:
        raise InputError(
            f"resume must be the state train() handed to on_epoch, at an epoch in 0..{epochs}; "
            f"got keys {sorted(state)} (missing {sorted(missing)})"
        )
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    for d, s in zip(devices, state.get("cuda_rng", []), strict=False):
        torch.cuda.set_rng_state(s, d)
    return int(state["epoch"])


@contextlib.contextmanager
def kept_modes(model: torch.nn.Module) -> Iterator[None]:
    """Give every submodule its own training flag back on leaving (``model.train(flag)`` would
    set one flag for all of them, losing a frozen BatchNorm or a dropout left in eval mode)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _held(
    model: torch.nn.Module, keep_zero: Mapping[str, torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, mask) pairs of ``keep_zero``, checked against the model's parameters."""
    params = dict(model.named_parameters())
    held = []
    for name, m in keep_zero.items():
        if name not in params or params[name].shape != m.shape:
            raise InputError(
                f"keep_zero names {name!r} with shape {tuple(m.shape)}, which is not a "
                f"parameter of {type(model).__name__} of that shape"
            )
        if m.any():
            held.append((params[name], m.to(device=params[name].device, dtype=torch.bool)))
    return held


def _zero(held: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for p, m in held:
            p.masked_fill_(m, 0)


def _rank_and_world(distributed: bool | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if distributed and not initialised:
        raise InputError("distributed training needs an initialised process group (torchrun)")
    if distributed is False or not initialised:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped for data-parallel training (it starts from rank 0's parameters)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers on every process: DDP hands them out before each forward, but each
    process' last forward updated its own running statistics."""
    for b in model.buffers():
        dist.broadcast(b.data, 0)


def _bar(it, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)
