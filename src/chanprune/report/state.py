"""A model's state put back after the report masked it: the report masks the user's model in
place, many times, and leaves it as it came."""

from __future__ import annotations

import torch


def restore_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (a cloned state dict) back into ``model``: its original weights and
    statistics after masking."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])
