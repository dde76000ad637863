"""Checks on the values chanprune reasons about, before any stage relies on them.

Liveness assumes that a zeroed weight makes its channel zero (``0 * x == 0``). That fails for
non-finite values (``0 * inf`` is NaN), so a parameter or example input holding NaN/inf would
make the masked and the pruned model differ; and tensors on the ``meta`` device hold no values
to score, zero or compare. Both are refused up front with the tensor named.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .inputs import named_tensors


def check_values(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], kwargs: dict | None = None
) -> None:
    """Raise :class:`InputError` naming the first parameter, buffer or input (positional or
    keyword) that is on the meta device or (parameters and inputs: NaN or inf; buffers: NaN)
    non-finite."""
    named = [(f"parameter {k}", v, True) for k, v in model.named_parameters()]
    named += [(f"buffer {k}", v, False) for k, v in model.named_buffers()]
    named += [(k, x, True) for k, x in named_tensors(inputs, kwargs or {})]
    for what, t, strict in named:
        if t.is_meta:
            raise InputError(
                f"{what} is on the meta device: chanprune needs real values to score, zero and "
                "compare channels (load the weights, or move model and inputs to a real device)"
            )
        if not t.is_floating_point() or t.numel() == 0:
            continue
        with torch.no_grad():
            if bool(torch.isfinite(t.sum())):  # one cheap pass: NaN/inf would reach the sum
                continue
            bad = ~torch.isfinite(t) if strict else torch.isnan(t)  # or the sum overflowed
        if bool(bad.any()):
            n = int(bad.sum())
            raise InputError(
                f"{what} holds {n} non-finite value(s) (NaN or inf): pruning relies on a zeroed "
                "weight gives a zero channel, which 0 * inf = NaN breaks; fix or replace them first"
            )
