"""The export entry point: capture -> channel analysis -> liveness -> layout policy -> rewrite ->
verification, one stage subpackage each (masking, beside the pipeline, is in ``masking``).
"""

from __future__ import annotations

import torch

from .analysis.propagate import analyze
from .capture.trace import as_input_tuple, capture, gc_paused, run_model
from .errors import ExportError, InputError
from .layout.policy import NaturalOrder, SolvedOrder
from .liveness.flow import liveness
from .liveness.rounding import round_depthwise
from .rewrite.rewriter import GROUP_QUANTUM, rewrite
from .rewrite.verify import verify

METHODS = ("reorder", "baseline")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown export method {method!r}; choose one of {', '.join(METHODS)}")


def check_group_quantum(group_quantum: object) -> int:
    if isinstance(group_quantum, bool) or not isinstance(group_quantum, int) or group_quantum < 1:
        raise InputError(f"group_quantum must be a positive integer, got {group_quantum!r}")
    return group_quantum


def policy_for(method: str, analysis, live):
    check_method(method)
    return SolvedOrder(analysis, live) if method == "reorder" else NaturalOrder()


def _build(cap, method: str, quantum: int, inputs: tuple, reference: object | None):
    """analysis -> liveness -> layout policy -> rewrite, checked against ``reference``."""
    an = analyze(cap)
    live = liveness(an)
    round_depthwise(live, quantum)
    result = rewrite(an, live, policy_for(method, an, live), quantum)
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
    group_quantum: int = GROUP_QUANTUM,
) -> torch.fx.GraphModule:
    """A new, physically smaller module whose outputs equal ``model``'s (as masked).

    Channels that are provably zero, or needed by nobody, are removed. ``method="reorder"``
    orders each segment's channels so consumers read contiguous slices instead of gathering
    copies (UPSCALE); ``"baseline"`` keeps the original order and gathers. With ``check`` (the
    default) the result is checked against ``model`` on ``example_inputs`` (raising
    :class:`ExportError` naming the first diverging node). ``dynamic_batch`` makes the result
    accept any batch size where the model allows it. ``model`` is not modified. The result runs
    in inference semantics (BatchNorm uses running statistics); its parameters are trainable.

    ``group_quantum``: a grouped (not depthwise) conv keeps the same channel count in every
    group, rounded up to a multiple of this (zero-weight fillers, never above the group's size),
    because CPU grouped kernels run much faster at a multiple of 8 channels a group than at a
    few channels fewer (benchmarks/studies/results/group_quantum.md). A depthwise conv's channel
    count rounds up to a multiple of it too, with zero or unread original channels: ONNX Runtime
    runs it in blocked kernels only then (benchmarks/studies/results/depthwise_quantum.md). 1
    gives the fewest parameters.
    """
    check_method(method)
    check_group_quantum(group_quantum)
    inputs = as_input_tuple(example_inputs)
    reference = run_model(model, inputs)
    # a capture traced at a marker batch (capture/batch.py) is vouched for by the check
    # below, which runs at another batch; unchecked exports take the symbolic trace
    cap = capture(model, inputs, dynamic_batch=dynamic_batch, marked=check)
    try:
        result = _build(cap, method, group_quantum, inputs, reference if check else None)
    except (ExportError, RuntimeError):
        if cap.marker is None:
            raise
        cap = capture(model, inputs, dynamic_batch=dynamic_batch, marked=False)
        result = _build(cap, method, group_quantum, inputs, reference)
    module = result.module
    module.chanprune_copies = result.copies
    module.chanprune_method = method
    module.chanprune_group_quantum = group_quantum
    return module
