"""The public entry points: mask, apply_masks, export.

export = capture -> channel analysis -> liveness -> layout policy -> rewrite -> verification.
"""

from __future__ import annotations

import torch

from .analysis import analyze
from .capture import as_input_tuple, capture, run_model
from .errors import InputError
from .layout import NaturalOrder
from .liveness import liveness
from .rewrite import rewrite
from .verify import verify

METHODS = ("baseline",)


def policy_for(method: str):
    if method == "baseline":
        return NaturalOrder()
    raise InputError(f"unknown export method {method!r}; choose one of {', '.join(METHODS)}")


def export(
    model: torch.nn.Module,
    example_inputs: object,
    method: str = "baseline",
    check: bool = True,
    dynamic_batch: bool = True,
) -> torch.fx.GraphModule:
    """A new, physically smaller module whose outputs equal ``model``'s (as masked).

    Channels that are provably zero, or needed by nobody, are removed. The result is checked
    against ``model`` on ``example_inputs`` (raising :class:`ExportError` naming the first
    diverging node). ``model`` is not modified. The result runs in inference semantics
    (BatchNorm uses running statistics); its parameters are trainable.
    """
    policy = policy_for(method)
    inputs = as_input_tuple(example_inputs)
    reference = run_model(model, inputs)
    cap = capture(model, inputs, dynamic_batch=dynamic_batch)
    an = analyze(cap)
    result = rewrite(an, liveness(an), policy)
    if check:
        verify(cap, result, inputs, reference)
    module = result.module
    module.chanprune_copies = result.copies
    module.chanprune_method = method
    return module
