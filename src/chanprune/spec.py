"""Pruning specs: which original indices each tensor of a pruned model keeps, in which order.

A spec maps every parameter and buffer of the pruned model (original qualified names) to, per
dimension, the original indices it holds in physical order (``None``: all, in order). With it,
a fresh instance of the original architecture can be turned into the pruned model without
unpickling anything: scatter the pruned tensors back into full-size zero tensors (what the pruned
model removed is zero or unread, so this is the masked model again) and export that.

The indices are read off the exporter itself rather than re-derived: the same rewrite is run
once more on *probe* tensors whose values are their own flat indices, so each pruned probe
tensor spells out where its entries came from.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .analysis import analyze
from .capture import as_input_tuple, capture, run_model
from .errors import ExportError, InputError
from .liveness import liveness
from .rewrite import rewrite
from .verify import compare

Keep = list  # per dimension: list[int] (kept original indices, physical order) or None (all)


def kept_indices(
    pruned: torch.nn.Module, model: torch.nn.Module, example_inputs: object
) -> dict[str, Keep]:
    """The spec of ``pruned`` (a ``chanprune.export`` of the masked ``model``): per state tensor
    of ``pruned`` that ``model`` owns, the kept original indices per dimension."""
    from .api import policy_for

    method = getattr(pruned, "chanprune_method", None)
    if method is None:
        raise InputError("the pruned model is not a chanprune.export result (no chanprune_method)")
    inputs = as_input_tuple(example_inputs)
    cap = capture(model, inputs)
    an = analyze(cap)
    live = liveness(an)
    policy = policy_for(method, an, live)
    probe = {k: _probe(t) for k, t in cap.tensors.items()}
    saved = cap.tensors, live.tensors
    try:
        cap.tensors, live.tensors = probe, probe
        probed = rewrite(an, live, policy).module.state_dict()
    finally:
        cap.tensors, live.tensors = saved
    owned = own_tensors(model)
    spec: dict[str, Keep] = {}
    for name, t in pruned.state_dict().items():
        p = probed.get(name)
        if p is None or p.shape != t.shape:
            raise ExportError(f"{name}: the pruned model no longer matches its masked model")
        if name not in owned:  # gather indices (chanprune_index.*): rebuilt by export
            if not torch.equal(p, t):
                raise ExportError(f"{name}: the masked model would now be exported differently")
            continue
        spec[name] = _decode(name, p, owned[name])
    return spec


def own_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (persistent or not) by qualified name."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def take(t: torch.Tensor, keep: Keep) -> torch.Tensor:
    """The pruned tensor: ``t`` with each dimension reduced to its kept indices."""
    for d, k in enumerate(keep):
        if k is not None:
            t = t.index_select(d, torch.as_tensor(k, dtype=torch.long))
    return t


def place(full_shape: tuple[int, ...], pruned: torch.Tensor, keep: Keep) -> torch.Tensor:
    """The full-size tensor holding ``pruned`` at its kept indices and zero elsewhere."""
    full = torch.zeros(full_shape, dtype=pruned.dtype)
    rank = len(full_shape)
    index = tuple(
        torch.as_tensor(k if k is not None else range(n), dtype=torch.long).reshape(
            [-1 if i == d else 1 for i in range(rank)]
        )
        for d, (k, n) in enumerate(zip(keep, full_shape, strict=True))
    )
    full[index] = pruned
    return full


def check_shapes(name: str, full_shape: tuple[int, ...], pruned_shape: tuple, keep: Keep) -> None:
    """Refuse a spec entry that does not fit the model's tensor or the saved tensor."""
    if len(keep) != len(full_shape) or len(pruned_shape) != len(full_shape):
        raise InputError(f"{name}: spec has {len(keep)} dims, model tensor {tuple(full_shape)}")
    for d, (k, n, m) in enumerate(zip(keep, full_shape, pruned_shape, strict=True)):
        if k is None:
            k = range(n)
        if len(k) != m or (len(k) and (min(k) < 0 or max(k) >= n)):
            raise InputError(
                f"{name}: dim {d} keeps {len(k)} of {n} indices but the saved tensor has {m} "
                "(a spec for a different architecture?)"
            )


def rebuild(
    model: torch.nn.Module, spec: dict[str, Keep], tensors: dict[str, torch.Tensor]
) -> None:
    """Put the pruned ``tensors`` into ``model`` in place (zeros where nothing was kept)."""
    owned = own_tensors(model)
    for name, keep in spec.items():
        if name not in owned:
            raise InputError(f"{name}: in the spec but not in {type(model).__name__}")
        if name not in tensors:
            raise InputError(f"{name}: in the spec but missing from the weights file")
        target = owned[name]
        check_shapes(name, tuple(target.shape), tuple(tensors[name].shape), keep)
        value = place(tuple(target.shape), tensors[name].to(target.dtype), keep)
        with torch.no_grad():
            target.copy_(value)


def check_spec(
    pruned: torch.nn.Module, model: torch.nn.Module, inputs: tuple, spec: dict[str, Keep]
) -> None:
    """The spec must turn ``model`` into ``pruned``: rebuild a copy from ``pruned``'s own
    tensors (fine-tuned ones too) and compare the outputs."""
    state = pruned.state_dict()
    twin = copy.deepcopy(model)
    rebuild(twin, spec, state)
    with torch.no_grad():
        check = compare(run_model(twin, inputs), pruned(*inputs))
    if not check.ok:
        raise ExportError(
            f"the spec does not reproduce the pruned model (max |diff| {check.max_abs_diff:.3g})"
        )


def _probe(t: torch.Tensor) -> torch.Tensor:
    if not t.is_floating_point() or t.dim() == 0:
        return t
    return torch.arange(t.numel(), dtype=torch.float64).reshape(t.shape)


def _decode(name: str, probe: torch.Tensor, original: torch.Tensor) -> Keep:
    shape = tuple(original.shape)
    if not original.is_floating_point() or original.dim() == 0:
        if tuple(probe.shape) != shape:
            raise ExportError(f"{name}: a non-float tensor was resized; cannot describe it")
        return [None] * len(shape)
    flat = probe.detach().to(torch.float64)
    if flat.dim() != len(shape) or not torch.equal(flat, flat.round()):
        raise ExportError(f"{name}: the export transforms this tensor; it has no index spec")
    flat = flat.long().numpy()
    if flat.size and (flat.min() < 0 or flat.max() >= original.numel()):
        raise ExportError(f"{name}: the export transforms this tensor; it has no index spec")
    # C-order coordinates by hand: np.unravel_index (numpy 2.4.6) returns wrong coordinates
    # for arrays with unit dims (conv kernels 1x1) beyond 8192 elements
    strides = np.cumprod((1, *shape[:0:-1]))[::-1]
    keep: Keep = []
    for d, stride in enumerate(strides):
        c = (flat // int(stride)) % shape[d]
        line = c[tuple(slice(None) if i == d else 0 for i in range(c.ndim))]
        if not (c == line.reshape([-1 if i == d else 1 for i in range(c.ndim)])).all():
            raise ExportError(f"{name}: dim {d} is not a selection of original indices")
        natural = len(line) == shape[d] and np.array_equal(line, np.arange(shape[d]))
        keep.append(None if natural else [int(i) for i in line])
    return keep
