"""Model statistics: parameters and multiply-accumulates, for before/after summaries."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..capture.trace import as_input_tuple, eval_mode


def count_params(model: torch.nn.Module) -> int:
    """Parameter elements of ``model`` (a shared parameter counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, example_inputs: object) -> int:
    """MACs of one forward pass on ``example_inputs`` (half of torch's FLOP count)."""
    inputs = as_input_tuple(example_inputs)
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() // 2
