"""Short supervised training: the accuracy benchmark's base models and fine-tuning after pruning.

One-cycle AdamW over a fixed number of epochs with a fixed seed: a few epochs reach a useful
accuracy on small data, and the same loop fine-tunes an exported (pruned) module, whose
parameters are trainable (it keeps inference semantics: BatchNorm uses running statistics).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

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
) -> list[float]:
    """Train ``model`` in place with cross-entropy; return the mean loss of each epoch."""
    if epochs < 0 or batch_size < 1:
        raise InputError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if epochs == 0:
        return []
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError(f"{type(model).__name__} has no trainable parameters")
    device = params[0].device
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
    if len(loader) == 0:
        raise InputError(f"dataset of {len(dataset)} items is smaller than batch_size {batch_size}")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(loader))
    was_training = model.training
    model.train()
    losses = []
    try:
        for epoch in range(epochs):
            total, n = 0.0, 0
            for x, y in _bar(loader, progress, f"{desc} epoch {epoch + 1}/{epochs}"):
                loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total, n = total + loss.item() * len(y), n + len(y)
            losses.append(total / n)
    finally:
        model.train(was_training)
    return losses


def _bar(it, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)
