"""The public entry points: mask, apply_masks, export.

export = capture -> channel analysis -> liveness -> layout policy -> rewrite -> verification.
"""

from __future__ import annotations

import torch

from .analysis import analyze
from .capture import as_input_tuple, capture, gc_paused, run_model
from .errors import ExportError, InputError
from .layout import NaturalOrder, SolvedOrder
from .liveness import liveness
from .rewrite import rewrite
from .verify import verify

METHODS = ("reorder", "baseline")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown export method {method!r}; choose one of {', '.join(METHODS)}")


def policy_for(method: str, analysis, live):
    check_method(method)
    return SolvedOrder(analysis, live) if method == "reorder" else NaturalOrder()


def _build(cap, method: str, inputs: tuple, reference: object | None):
    """analysis -> liveness -> layout policy -> rewrite, checked against ``reference``."""
    an = analyze(cap)
    live = liveness(an)
    result = rewrite(an, live, policy_for(method, an, live))
    if reference is not None:
        verify(cap, result, inputs, reference)
    return result


@gc_paused
def export(
    model: torch.nn.Module,
    example_inputs: object,
    method: str = "reorder",
    check: bool = True,
    dynamic_batch: bool = True,
) -> torch.fx.GraphModule:
    """A new, physically smaller module whose outputs equal ``model``'s (as masked).

    Channels that are provably zero, or needed by nobody, are removed. ``method="reorder"``
    orders each segment's channels so consumers read contiguous slices instead of gathering
    copies (UPSCALE); ``"baseline"`` keeps the original order and gathers. The result is checked
    against ``model`` on ``example_inputs`` (raising :class:`ExportError` naming the first
    diverging node). ``model`` is not modified. The result runs in inference semantics
    (BatchNorm uses running statistics); its parameters are trainable.
    """
    check_method(method)
    inputs = as_input_tuple(example_inputs)
    reference = run_model(model, inputs)
    # a capture traced at a marker batch (capture.py) is vouched for by the check below, which
    # runs at another batch; unchecked exports take the symbolic trace
    cap = capture(model, inputs, dynamic_batch=dynamic_batch, marked=check)
    try:
        result = _build(cap, method, inputs, reference if check else None)
    except (ExportError, RuntimeError):
        if cap.marker is None:
            raise
        cap = capture(model, inputs, dynamic_batch=dynamic_batch, marked=False)
        result = _build(cap, method, inputs, reference)
    module = result.module
    module.chanprune_copies = result.copies
    module.chanprune_method = method
    return module
