"""Pruning the traceable parts of a model that torch.export cannot capture whole.

A detector's post-processing or a generation loop has data-dependent control flow that
``torch.export`` refuses, while its backbone and heads are plain tensor programs. With
``submodules=["backbone", "roi_heads.box_head"]`` the model runs once, eagerly, recording what
each named submodule receives; each is then masked and exported on its own inputs, and the
pruned model is the original with those submodules replaced (checked end to end).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from ..errors import InputError
from .trace import as_example, run_model

R = TypeVar("R")


def check_names(model: torch.nn.Module, names: Sequence[str]) -> list[str]:
    """The submodule names, validated: each exists, none repeats or contains another."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise InputError(f"submodules must be a non-empty list of submodule names, got {names!r}")
    known = dict(model.named_modules())
    for name in names:
        if name not in known or name == "":
            children = ", ".join(n for n, _ in model.named_children())
            raise InputError(
                f"submodules names {name!r}, which is not a submodule of "
                f"{type(model).__name__} (its children: {children})"
            )
    if len(set(names)) != len(names):
        raise InputError(f"submodules names a submodule twice: {list(names)}")
    for a in names:
        for b in names:
            if b.startswith(a + "."):
                raise InputError(f"submodules {a!r} and {b!r} overlap: name each part once")
    return list(names)


def for_each_part(
    model: torch.nn.Module,
    example_inputs: object,
    names: Sequence[str],
    fn: Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], R],
    example_kwargs: dict[str, object] | None = None,
) -> dict[str, R]:
    """``fn(submodule, its recorded inputs)`` for each named submodule, in the given order
    (the model run as ``model(*example_inputs, **example_kwargs)``)."""
    names = check_names(model, names)
    inputs = record_inputs(model, example_inputs, names, example_kwargs)
    return {n: fn(model.get_submodule(n), inputs[n]) for n in names}


def record_inputs(
    model: torch.nn.Module,
    example_inputs: object,
    names: Sequence[str],
    example_kwargs: dict[str, object] | None = None,
) -> dict[str, tuple[torch.Tensor, ...]]:
    """Run ``model`` once (eval mode, no gradients, left as it was) and return what each named
    submodule was called with. Each must be called with tensors only, positionally, and with
    the same shapes every time it is called: its export runs at those sizes (batch aside)."""
    calls: dict[str, list[tuple]] = {n: [] for n in names}

    def hook(name: str):
        def record(_module, args, kwargs):
            calls[name].append((args, kwargs))

        return record

    handles = [
        model.get_submodule(n).register_forward_pre_hook(hook(n), with_kwargs=True) for n in names
    ]
    try:
        run_model(model, *as_example(example_inputs, example_kwargs))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name in names:
        got = calls[name]
        if not got:
            raise InputError(f"submodule {name!r} is never called by the model's forward")
        args, kwargs = got[0]
        if kwargs or not args or not all(isinstance(a, torch.Tensor) for a in args):
            kinds = [type(a).__name__ for a in args] + [f"{k}=" for k in kwargs]
            raise InputError(
                f"submodule {name!r} is called with ({', '.join(kinds)}); a pruned submodule "
                "must take tensors only, positionally: name a submodule inside it instead"
            )
        shapes = {tuple(tuple(a.shape[1:]) for a in c[0]) for c in got if not c[1]}
        if len(got) > 1 and len(shapes) > 1:
            raise InputError(
                f"submodule {name!r} is called {len(got)} times with inputs of different "
                "shapes; its export runs at one shape (batch aside): name a part called once"
            )
        out[name] = tuple(args)
    return out


def replace(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    """Put ``new`` where submodule ``name`` is, keeping the plain attributes (sizes, flags) the
    enclosing forward may read off the old one."""
    old = model.get_submodule(name)
    for key, value in vars(old).items():
        plain = isinstance(value, int | float | str | bool | tuple | type(None))
        if plain and not key.startswith("_") and key != "training" and not hasattr(new, key):
            setattr(new, key, value)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
