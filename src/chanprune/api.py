"""The export entry point: capture -> channel analysis -> liveness -> layout policy -> rewrite ->
verification, one stage subpackage each (masking, beside the pipeline, is in ``masking``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from .analysis.propagate import analyze
from .capture.submodules import for_each_part, replace
from .capture.trace import as_example, capture, gc_paused, run_model
from .errors import ExportError, InputError
from .layout.policy import NaturalOrder, SolvedOrder
from .liveness import export_liveness
from .liveness.rounding import default_width_quantum
from .rewrite.fixed_batch import guard as guard_fixed_batch
from .rewrite.inputs import guard as guard_inputs
from .rewrite.rewriter import GROUP_QUANTUM, rewrite
from .rewrite.verify import compare, verify

METHODS = ("reorder", "baseline", "dense", "auto")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown export method {method!r}; choose one of {', '.join(METHODS)}")


def check_group_quantum(group_quantum: object) -> int:
    if isinstance(group_quantum, bool) or not isinstance(group_quantum, int) or group_quantum < 1:
        raise InputError(f"group_quantum must be a positive integer, got {group_quantum!r}")
    return group_quantum


def check_width_quantum(width_quantum: object) -> int:
    """The width quantum to use: ``None`` means the CPU's (``default_width_quantum``)."""
    if width_quantum is None:
        return default_width_quantum()
    if isinstance(width_quantum, bool) or not isinstance(width_quantum, int) or width_quantum < 1:
        raise InputError(
            f"width_quantum must be a positive integer (1: no rounding) or None (the CPU's), "
            f"got {width_quantum!r}"
        )
    return width_quantum


def policy_for(method: str, analysis, live):
    check_method(method)
    return SolvedOrder(analysis, live) if method in ("reorder", "auto") else NaturalOrder()


def _build(
    cap, method: str, quantum: tuple[int, int], inputs: tuple, reference: object | None, kwargs
):
    """analysis -> liveness -> width rounding -> layout policy -> rewrite, checked against
    ``reference``; ``quantum``: (group_quantum, width_quantum)."""
    quantum, width = quantum
    an = analyze(cap)
    live = export_liveness(an, method, quantum, width)
    result = rewrite(an, live, policy_for(method, an, live), quantum)
    if reference is not None:
        verify(cap, result, inputs, reference, kwargs)
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
    example_kwargs: dict[str, object] | None = None,
    dynamic_shapes: object = None,
    width_quantum: int | None = None,
) -> torch.nn.Module:
    """A new, physically smaller module whose outputs equal ``model``'s (as masked).

    Channels that are provably zero, or needed by nobody, are removed. ``method="reorder"``
    orders each segment's channels so consumers read contiguous slices instead of gathering
    copies (UPSCALE); ``"baseline"`` keeps the original order and gathers; ``"dense"`` copies
    nothing at run time: every tensor of a segment keeps every channel any of them keeps (zero
    rows and columns computed), which costs MACs but keeps ONNX Runtime's blocked layout
    (``liveness.dense``); ``"auto"`` makes dense only the segments where that adds at most 25%
    to their layers' MACs, and orders the others as ``reorder`` does. With ``check`` (the
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

    ``width_quantum``: a dense layer whose output channels are one private segment (a
    bottleneck's inner conv, an MLP's hidden layer) keeps a few zero or unread original
    channels so that its width is a multiple of this, where that adds at most a quarter of
    its channels, since kernels run slower per MAC at other widths
    (benchmarks/results/widths.md). ``None`` (the default) takes the CPU's vector width
    (``liveness.rounding.default_width_quantum``); 1 turns it off.

    ``submodules=["backbone", ...]``: for a model torch.export cannot capture whole (a
    detector's post-processing), export each named submodule on the inputs it receives in one
    eager run and return a deep copy of ``model`` with those submodules replaced, checked end
    to end on ``example_inputs`` (mask with the same ``submodules``).

    ``example_kwargs``: keyword inputs, as in ``model(*example_inputs, **example_kwargs)``:
    tensors (``attention_mask=``) are inputs of the result like positional ones; constants
    (``use_cache=False``) are fixed by the capture, and the result takes them as defaults and
    refuses other values. ``dynamic_shapes={"input_ids": {1: torch.export.Dim.AUTO}}`` makes
    dimensions besides the batch dynamic (passed to ``torch.export``); every other dimension
    is fixed to the example's, and the result refuses other sizes by name.
    """
    check_method(method)
    check_group_quantum(group_quantum)
    width_quantum = check_width_quantum(width_quantum)
    if submodules is not None:
        return _export_parts(
            model,
            example_inputs,
            submodules,
            (method, check, dynamic_batch, group_quantum, width_quantum),
            example_kwargs,
            dynamic_shapes,
        )
    inputs, kwargs = as_example(example_inputs, example_kwargs)
    reference = run_model(model, inputs, kwargs)
    # a capture traced at a marker batch (capture/batch.py) is vouched for by the check
    # below, which runs at another batch; unchecked exports take the symbolic trace
    how = dict(example_kwargs=kwargs, dynamic_shapes=dynamic_shapes, dynamic_batch=dynamic_batch)
    cap = capture(model, inputs, marked=check, **how)
    try:
        quanta = (group_quantum, width_quantum)
        result = _build(cap, method, quanta, inputs, reference if check else None, kwargs)
    except Exception:  # any failure of a marker capture (a wrong split: IndexError) recaptures
        if cap.marker is None:
            raise
        cap = capture(model, inputs, marked=False, **how)
        result = _build(cap, method, quanta, inputs, reference, kwargs)
    module = result.module
    guard_fixed_batch(module, cap, type(model).__name__)
    guard_inputs(module, cap, type(model).__name__)
    module.chanprune_copies = result.copies
    module.chanprune_method = method
    module.chanprune_group_quantum = group_quantum
    module.chanprune_width_quantum = width_quantum
    return module


def _export_parts(
    model: torch.nn.Module,
    example_inputs: object,
    names: Sequence[str],
    how: tuple[str, bool, bool, int, int],
    example_kwargs: dict[str, object] | None,
    dynamic_shapes: object,
) -> torch.nn.Module:
    """A deep copy of ``model`` with each named submodule replaced by its export (``how``:
    method, check, dynamic_batch, group_quantum, width_quantum)."""
    if dynamic_shapes is not None:
        raise InputError(
            "dynamic_shapes names the whole model's inputs; with submodules, each part is "
            "exported at the sizes it receives (batch aside)"
        )
    method, check, dynamic_batch, quantum, width = how
    inputs, kwargs = as_example(example_inputs, example_kwargs)
    parts = for_each_part(
        model,
        inputs,
        names,
        lambda sub, xs: export(sub, xs, method, check, dynamic_batch, quantum, width_quantum=width),
        kwargs,
    )
    pruned = copy.deepcopy(model)
    for name, part in parts.items():
        replace(pruned, name, part)
    if check:
        got = compare(run_model(model, inputs, kwargs), run_model(pruned, inputs, kwargs))
        if not got.ok:
            raise ExportError(
                f"{type(model).__name__} with its pruned {', '.join(parts)} differs from the "
                f"masked model: max |diff| {got.max_abs_diff:.3g} vs max |output| "
                f"{got.max_abs_ref:.3g}, although each part was checked on its own inputs: the "
                "code between the parts turns their rounding into other outputs"
            )
    return pruned
