"""Example inputs beyond one tuple of tensors: keyword inputs and dynamic dimensions.

A model is called as ``model(*example_inputs, **example_kwargs)``. Keyword inputs are tensors
(``attention_mask=``), which become inputs of the capture like positional ones, or constants
(``use_cache=False``, ``None``), which torch.export bakes into the graph: the pruned module
takes them with their captured value as the default and refuses any other value
(``rewrite/input_checks.py``). ``dynamic_shapes`` names, per input, the dimensions besides the
batch that torch.export is to trace as symbolic sizes; capture gives torch.export its dynamic
shapes keyed by the forward's parameter names, so any signature works (``forward(x, *rest)``,
``forward(input_ids=None, attention_mask=None, **kwargs)``).
"""

from __future__ import annotations

import inspect
import keyword
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils import _pytree as pytree

from ..errors import InputError

CONSTANTS = (bool, int, float, str, type(None))  # keyword values torch.export bakes in
Spec = dict[int, object]  # dimension -> torch.export.Dim (or Dim.AUTO / Dim.DYNAMIC)


def as_kwargs(example_kwargs: object) -> dict[str, object]:
    """``example_kwargs`` as a dict of tensors and constants, refusing anything else by key."""
    if example_kwargs is None:
        return {}
    if not isinstance(example_kwargs, Mapping):
        raise InputError(
            f"example_kwargs must be a dict of keyword inputs, got {type(example_kwargs).__name__}"
        )
    out: dict[str, object] = {}
    for k, v in example_kwargs.items():
        if not isinstance(k, str) or not k.isidentifier() or keyword.iskeyword(k):
            raise InputError(f"example_kwargs key {k!r} is not a keyword argument name")
        if not isinstance(v, (torch.Tensor, *CONSTANTS)):
            raise InputError(
                f"example_kwargs[{k!r}] is a {type(v).__name__}; keyword inputs must be tensors "
                "or constants (bool, int, float, str, None), which the capture keeps fixed"
            )
        out[k] = v
    return out


def named_tensors(
    args: Sequence[torch.Tensor], kwargs: Mapping[str, object]
) -> list[tuple[str, torch.Tensor]]:
    """Every example tensor with the name the user knows it by."""
    named = [(f"example_inputs[{i}]", x) for i, x in enumerate(args)]
    tensors = [(k, v) for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    named += [(f"example_kwargs[{k!r}]", v) for k, v in tensors]
    return named


def batch_of(args: Sequence[torch.Tensor], kwargs: Mapping[str, object]) -> int | None:
    """The batch size: dim 0 of the first positional input with dimensions (of the first
    keyword tensor where there is none)."""
    for x in [*args, *kwargs.values()]:
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            return int(x.shape[0])
    return None


def batched_keys(args: Sequence[torch.Tensor], kwargs: Mapping[str, object]) -> list[object]:
    """The inputs holding the batch in dim 0: positional indices (every positional input with
    dimensions, as before keyword inputs existed) and keyword names whose dim 0 is the batch."""
    batch = batch_of(args, kwargs)
    keys: list[object] = [i for i, x in enumerate(args) if x.dim() > 0]
    keys += [
        k
        for k, v in kwargs.items()
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch
    ]
    return keys


def map_batched(
    args: tuple[torch.Tensor, ...],
    kwargs: dict[str, object],
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[tuple[torch.Tensor, ...], dict[str, object]]:
    """``fn`` applied to every batched input (:func:`batched_keys`), the rest as they are."""
    keys = set(batched_keys(args, kwargs))
    new_args = tuple(fn(x) if i in keys else x for i, x in enumerate(args))
    new_kwargs = {k: fn(v) if k in keys else v for k, v in kwargs.items()}
    return new_args, new_kwargs


def user_dims(
    model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: object
) -> dict[object, Spec]:
    """The user's ``dynamic_shapes`` per input (positional index or keyword name) as
    {dimension: Dim}. Accepted: a dict keyed by the forward's parameter names (or the keyword
    names), or a tuple aligned with the positional inputs; per input a dict {dim: Dim}, a
    tuple with one entry per dimension (None: static), or None."""
    if dynamic_shapes is None:
        return {}
    if isinstance(dynamic_shapes, Mapping):
        names = _positional_names(model, args, kwargs)
        items = []
        for name, spec in dynamic_shapes.items():
            key = names.get(name, name)
            positional = isinstance(key, int) and not isinstance(key, bool)
            if not (key in kwargs or (positional and 0 <= key < len(args))):
                known = [*(n for n in names if isinstance(n, str)), *kwargs]
                raise InputError(
                    f"dynamic_shapes names {name!r}, which is none of the model's inputs "
                    f"({', '.join(map(repr, known))})"
                )
            items.append((key, name, spec))
    elif isinstance(dynamic_shapes, list | tuple):
        if len(dynamic_shapes) != len(args):
            raise InputError(
                f"dynamic_shapes as a tuple has {len(dynamic_shapes)} entries for "
                f"{len(args)} positional inputs; key it by input name to cover keyword inputs"
            )
        items = [(i, f"example_inputs[{i}]", s) for i, s in enumerate(dynamic_shapes)]
    else:
        raise InputError(
            "dynamic_shapes must be a dict {input name: {dim: torch.export.Dim}} or a tuple "
            f"aligned with example_inputs, got {type(dynamic_shapes).__name__}"
        )
    out: dict[object, Spec] = {}
    for key, name, spec in items:
        x = args[key] if isinstance(key, int) else kwargs[key]
        dims = _dims(spec, name, x)
        if dims:
            out[key] = dims
    return out


def _dims(spec: object, name: object, x: object) -> Spec:
    if spec is None:
        return {}
    if not isinstance(x, torch.Tensor):
        raise InputError(f"dynamic_shapes gives dimensions for {name!r}, which is no tensor")
    if isinstance(spec, list | tuple):
        spec = {d: s for d, s in enumerate(spec) if s is not None}
    if not isinstance(spec, Mapping):
        raise InputError(
            f"dynamic_shapes[{name!r}] must be a dict {{dim: torch.export.Dim}}, got {spec!r}"
        )
    out: Spec = {}
    for d, s in spec.items():
        if isinstance(d, bool) or not isinstance(d, int) or not -x.dim() <= d < x.dim():
            raise InputError(
                f"dynamic_shapes[{name!r}] names dimension {d!r}; the input has {x.dim()}"
            )
        if s is not None:
            out[d % x.dim()] = s
    return out


def export_shapes(
    model: torch.nn.Module, args: tuple, kwargs: dict, dims: Mapping[object, Spec]
) -> object:
    """torch.export's ``dynamic_shapes`` for ``dims`` (per positional index or keyword name):
    keyed by the forward's parameter names, so ``*args`` and ``**kwargs`` signatures work
    too; a tuple over the positional inputs where the signature cannot be read."""

    def spec(key: object) -> Spec | None:
        return dict(dims[key]) if key in dims else None

    bound = _bind(model, args, kwargs)
    if bound is None:  # torch.export cannot bind it either: its error says why
        return tuple(spec(i) for i in range(len(args)))
    out: dict[str, object] = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = tuple(spec(key) for key in value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out[name] = {k: spec(key) for k, key in value.items()}
        else:
            out[name] = spec(value)
    return out


def _bind(model: torch.nn.Module, args: tuple, kwargs: dict) -> inspect.BoundArguments | None:
    """The forward's signature bound to the inputs' keys (positional index, keyword name)."""
    try:
        sig = inspect.signature(model.forward)
        return sig.bind(*range(len(args)), **{k: k for k in kwargs})
    except (TypeError, ValueError):
        return None


def _positional_names(model: torch.nn.Module, args: tuple, kwargs: dict) -> dict[str, int]:
    """The forward's parameter name of each positional input (a ``*args`` parameter: none)."""
    bound = _bind(model, args, kwargs)
    if bound is None:
        return {}
    names: dict[str, int] = {}
    for name, value in bound.arguments.items():
        if isinstance(value, int) and not isinstance(value, bool):
            names[name] = value
    return names


def fingerprint(kwargs: Mapping[str, object], dims: Mapping[object, Spec]) -> tuple:
    """What a capture depends on in the keyword inputs and dynamic dimensions."""
    kw = tuple(
        (k, (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else (type(v), repr(v)))
        for k, v in kwargs.items()
    )
    return kw, tuple((str(k), tuple((d, repr(s)) for d, s in v.items())) for k, v in dims.items())


def non_tensor_outputs(output: object) -> list[tuple[str, str]]:
    """(where, type name) of every output leaf that is neither a tensor nor a constant, such as
    a Hugging Face ``DynamicCache``: torch.export cannot return those."""
    leaves, _ = pytree.tree_flatten_with_path(output)
    return [
        (pytree.keystr(path), type(v).__name__)
        for path, v in leaves
        if not isinstance(v, (torch.Tensor, *CONSTANTS))
    ]


def literal(value: object) -> str:
    """Python source for a constant (a default in the pruned module's forward)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)
