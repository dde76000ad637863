"""Top-1 evaluation, on one process or split over several with torch.distributed.

Under torchrun (or any initialised process group) each rank evaluates its shard of a
``DistributedSampler`` and the correct/total counts are summed with ``all_reduce``. The sampler
pads the last shard with repeated images to equal lengths; those repeats are not counted, so
the distributed top-1 equals the single-process one exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import InputError


@dataclass
class Evaluation:
    correct: int
    total: int
    predictions: torch.Tensor | None = None  # this process' predictions, in its sampler's order

    @property
    def top1(self) -> float:
        return 100.0 * self.correct / max(self.total, 1)


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    distributed: bool | None = None,
    keep_predictions: bool = False,
    progress: bool = False,
    desc: str = "eval",
) -> Evaluation:
    """Top-1 of ``model`` on ``dataset``. ``distributed=None`` splits the work when a process
    group is initialised; the result (correct, total) is the whole dataset's on every rank."""
    if len(dataset) == 0:
        raise InputError("cannot evaluate on an empty dataset")
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise InputError("distributed evaluation needs an initialised process group (torchrun)")
    sampler, limit = None, len(dataset)
    if distributed:
        rank, world = dist.get_rank(), dist.get_world_size()
        sampler = DistributedSampler(dataset, world, rank, shuffle=False, drop_last=False)
        limit = len(range(rank, len(dataset), world))  # this rank's real (unpadded) images
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    correct, seen, preds = 0, 0, []
    try:
        with torch.no_grad():
            for x, y in _bar(loader, progress, desc):
                p = model(x.to(device)).argmax(1).cpu()
                take = min(len(y), limit - seen)
                p, y = p[:take], y[:take]
                correct += int((p == y).sum())
                seen += take
                if keep_predictions:
                    preds.append(p)
    finally:
        model.train(was_training)
    total = seen
    if distributed:
        counts = torch.tensor([correct, total], dtype=torch.int64)
        dist.all_reduce(counts)
        correct, total = int(counts[0]), int(counts[1])
    return Evaluation(correct, total, torch.cat(preds) if keep_predictions else None)


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, nccl on GPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def _bar(it, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)
