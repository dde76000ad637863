"""Pruning specs: which original indices each tensor of a pruned model keeps, in which order.

A spec maps every parameter and buffer of the pruned model (original qualified names) to, per
dimension, the original indices it holds in physical order (see ``Keep``). With it, a fresh
instance of the original architecture becomes the pruned model without unpickling anything:
scatter the pruned tensors back into full-size zero tensors (what the pruned model removed is
zero or unread, so this is the masked model again) and export that. The indices are read off
the exporter itself rather than re-derived: the same rewrite runs once more on *probe* tensors
whose values are their own flat indices, so each pruned probe spells out where its entries came
from.
"""

from __future__ import annotations

import copy
import math

import torch

from ..analysis.propagate import analyze
from ..api import policy_for
from ..capture.trace import as_input_tuple, capture, run_model
from ..errors import ExportError, InputError
from ..liveness import export_liveness
from ..rewrite.rewriter import GROUP_QUANTUM, rewrite
from ..rewrite.verify import compare

# per dimension: list[int] (kept original indices, physical order), None (all), or, after
# dimension 0, {"groups": list[list[int]]} (the indices block b of dimension 0 reads: a grouped
# conv's input; its zero filler slots sit at indices whose masked value is zero or unneeded)
Keep = list


def kept_indices(
    pruned: torch.nn.Module, model: torch.nn.Module, example_inputs: object
) -> dict[str, Keep]:
    """The spec of ``pruned`` (a ``chanprune.export`` of the masked ``model``): per state tensor
    of ``pruned`` that ``model`` owns, the kept original indices per dimension."""

    method = getattr(pruned, "chanprune_method", None)
    if method is None:
        raise InputError("the pruned model is not a chanprune.export result (no chanprune_method)")
    inputs = as_input_tuple(example_inputs)
    cap = capture(model, inputs)
    an = analyze(cap)
    quantum = getattr(pruned, "chanprune_group_quantum", GROUP_QUANTUM)
    live = export_liveness(an, method, quantum, getattr(pruned, "chanprune_width_quantum", 1))
    policy = policy_for(method, an, live)
    probe = {k: _probe(t) for k, t in cap.tensors.items()}
    saved = cap.tensors, live.tensors
    try:
        cap.tensors, live.tensors = probe, probe
        result = rewrite(an, live, policy, quantum)
    finally:
        cap.tensors, live.tensors = saved
    probed = result.module.state_dict()
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
        if name in result.selections:  # recorded by the rule; its non-zero entries must agree
            keep = result.selections[name]
            expected, nz = take(probe[name], keep), p != 0
            if expected.shape != p.shape or not torch.equal(p[nz], expected[nz]):
                raise ExportError(f"{name}: its recorded selection does not match the export")
            spec[name] = keep
        else:
            spec[name] = _decode(name, p, owned[name])
    return spec


def own_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (persistent or not) by every qualified name: a shared module's
    tensors under each alias, as the capture may name them by any of them."""
    params = model.named_parameters(remove_duplicate=False)
    return {**dict(params), **dict(model.named_buffers(remove_duplicate=False))}


def _grouped(k: object) -> list | None:
    """The per-block index lists of a grouped dimension, or None for a plain one."""
    return k["groups"] if isinstance(k, dict) else None


def take(t: torch.Tensor, keep: Keep) -> torch.Tensor:
    """The pruned tensor: ``t`` with each dimension reduced to its kept indices (what the
    export holds, except that it zeroes grouped convs' filler slots)."""
    for d, k in enumerate(keep):
        blocks = _grouped(k)
        if blocks is not None:
            parts = t.chunk(len(blocks), 0)
            idx = [torch.as_tensor(b, dtype=torch.long) for b in blocks]
            t = torch.cat([x.index_select(d, i) for x, i in zip(parts, idx, strict=True)])
        elif k is not None:
            t = t.index_select(d, torch.as_tensor(k, dtype=torch.long))
    return t


def place(full_shape: tuple[int, ...], pruned: torch.Tensor, keep: Keep) -> torch.Tensor:
    """The full-size tensor holding ``pruned`` at its kept indices and zero elsewhere."""
    full = torch.zeros(full_shape, dtype=pruned.dtype)
    rank = len(full_shape)
    index = []
    for d, (k, n) in enumerate(zip(keep, full_shape, strict=True)):
        blocks = _grouped(k)
        if blocks is None:
            i = torch.as_tensor(k if k is not None else range(n), dtype=torch.long)
            index.append(i.reshape([-1 if j == d else 1 for j in range(rank)]))
            continue
        table = torch.as_tensor(blocks, dtype=torch.long)  # (blocks, kept per block)
        rows = pruned.shape[0]
        per_row = table.repeat_interleave(rows // len(blocks), 0)  # (rows, kept per block)
        shape = [rows if j == 0 else -1 if j == d else 1 for j in range(rank)]
        index.append(per_row.reshape(shape))
    full[tuple(index)] = pruned
    return full


def check_shapes(name: str, full_shape: tuple[int, ...], pruned_shape: tuple, keep: Keep) -> None:
    """Refuse a spec entry that does not fit the model's tensor or the saved tensor."""
    if len(keep) != len(full_shape) or len(pruned_shape) != len(full_shape):
        raise InputError(f"{name}: spec has {len(keep)} dims, model tensor {tuple(full_shape)}")
    for d, (k, n, m) in enumerate(zip(keep, full_shape, pruned_shape, strict=True)):
        if isinstance(k, dict):
            blocks = k.get("groups")
            if (
                d == 0
                or set(k) != {"groups"}
                or not isinstance(blocks, list)
                or not blocks
                or pruned_shape[0] % len(blocks)
                or not all(isinstance(b, list) for b in blocks)
            ):
                raise InputError(
                    f"{name}: dim {d} is a malformed grouped entry (expected "
                    f'{{"groups": [...]}}, one list per block of dim 0, after dim 0)'
                )
        else:
            blocks = [range(n) if k is None else k]
        for b in blocks:
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in b):
                raise InputError(f"{name}: dim {d} holds something other than indices")
            if len(b) != m or (len(b) and (min(b) < 0 or max(b) >= n)) or len(set(b)) != len(b):
                raise InputError(
                    f"{name}: dim {d} keeps {len(b)} of {n} indices but the saved tensor has "
                    f"{m} (a spec for a different architecture?)"
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
    flat = flat.long()
    if flat.numel() == 0:  # nothing kept along some dim: the rest are whole or undecidable
        pairs = zip(flat.shape, shape, strict=True)
        kept = [None if n == m else [] if n == 0 else False for n, m in pairs]
        if False in kept:
            raise ExportError(f"{name}: emptied and resized at once; it has no index spec")
        return kept
    if flat.min() < 0 or flat.max() >= original.numel():
        raise ExportError(f"{name}: the export transforms this tensor; it has no index spec")
    # each dimension's indices, read off one line of the probe along it; then the whole tensor
    # must be exactly that selection (sum over dims of index x stride: the probe's own values)
    rank = len(shape)
    strides = [math.prod(shape[d + 1 :]) for d in range(rank)]
    keep: Keep = []
    expected = torch.zeros((), dtype=torch.long)
    for d, stride in enumerate(strides):
        line = (flat[tuple(slice(None) if i == d else 0 for i in range(rank))] // stride) % shape[d]
        if len(line.unique()) != len(line):
            raise ExportError(f"{name}: dim {d} repeats original indices; it has no index spec")
        expected = expected + (line * stride).reshape([-1 if i == d else 1 for i in range(rank)])
        natural = len(line) == shape[d] and torch.equal(line, torch.arange(shape[d]))
        keep.append(None if natural else line.tolist())
    if not torch.equal(expected, flat):
        raise ExportError(f"{name}: the pruned tensor is not a selection of original indices")
    return keep
