"""The export entry point: capture -> channel analysis -> liveness -> layout policy -> rewrite ->
verification, one stage subpackage each (masking, beside the pipeline, is in ``masking``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from .analysis.propagate import analyze
from .capture.submodules import for_each_part, replace
from .capture.trace import as_input_tuple, capture, gc_paused, run_model
from .errors import ExportError, InputError
from .layout.policy import NaturalOrder, SolvedOrder
from .liveness.flow import liveness
from .liveness.rounding import round_depthwise
from .rewrite.fixed_batch import guard as guard_fixed_batch
from .rewrite.rewriter import GROUP_QUANTUM, rewrite
from .rewrite.verify import compare, verify

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
    submodules: Sequence[str] | None = None,
) -> torch.nn.Module:
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

    ``submodules=["backbone", ...]``: for a model torch.export cannot capture whole (a
    detector's post-processing), export each named submodule on the inputs it receives in one
    eager run and return a deep copy of ``model`` with those submodules replaced, checked end
    to end on ``example_inputs`` (mask with the same ``submodules``).
    """
    check_method(method)
    check_group_quantum(group_quantum)
    if submodules is not None:
        return _export_parts(
            model, example_inputs, submodules, method, check, dynamic_batch, group_quantum
        )
    inputs = as_input_tuple(example_inputs)
    reference = run_model(model, inputs)
    # a capture traced at a marker batch (capture/batch.py) is vouched for by the check
    # below, which runs at another batch; unchecked exports take the symbolic trace
    cap = capture(model, inputs, dynamic_batch=dynamic_batch, marked=check)
    try:
        result = _build(cap, method, group_quantum, inputs, reference if check else None)
    except Exception:  # any failure of a marker capture (a wrong split: IndexError) recaptures
        if cap.marker is None:
            raise
        cap = capture(model, inputs, dynamic_batch=dynamic_batch, marked=False)
        result = _build(cap, method, group_quantum, inputs, reference)
    module = result.module
    guard_fixed_batch(module, cap, type(model).__name__)
    module.chanprune_copies = result.copies
    module.chanprune_method = method
    module.chanprune_group_quantum = group_quantum
    return module


def _export_parts(
    model: torch.nn.Module,
    example_inputs: object,
    names: Sequence[str],
    method: str,
    check: bool,
    dynamic_batch: bool,
    quantum: int,
) -> torch.nn.Module:
    """A deep copy of ``model`` with each named submodule replaced by its export."""
    parts = for_each_part(
        model,
        example_inputs,
        names,
        lambda sub, xs: export(sub, xs, method, check, dynamic_batch, quantum),
    )
    pruned = copy.deepcopy(model)
    for name, part in parts.items():
        replace(pruned, name, part)
    if check:
        inputs = as_input_tuple(example_inputs)
        got = compare(run_model(model, inputs), run_model(pruned, inputs))
        if not got.ok:
            raise ExportError(
                f"{type(model).__name__} with its pruned {', '.join(parts)} differs from the "
                f"masked model: max |diff| {got.max_abs_diff:.3g} vs max |output| "
                f"{got.max_abs_ref:.3g}, although each part was checked on its own inputs: the "
                "code between the parts turns their rounding into other outputs"
            )
    return pruned
