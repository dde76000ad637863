"""The pruned module's inputs: its forward's signature and the checks it makes on them first.

Signature: the positional inputs by their names in the model's forward, then the keyword inputs
as keyword-only parameters (``forward(self, input_ids, *, attention_mask, use_cache=False)``),
constants defaulting to their captured value, so the pruned module is called as the model was.

Checks: the captured graph holds for the sizes it was traced at. Where a dimension was not
traced as a symbolic size (every dimension but the batch, unless ``dynamic_shapes`` named it),
another size may fail deep inside the graph with a reshape error, or return a wrong result
without one. So the pruned module compares each input's static sizes, and each constant, with
what was captured, and refuses a mismatch naming the input, the dimension, the captured size
and how to allow others.
"""

from __future__ import annotations

import math

import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import is_concrete_int
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo
from torch.fx.node import has_side_effect

from ..capture.inputs import literal
from ..capture.trace import Capture, keyword_names
from ..errors import InputError
from .fixed_batch import require_batch


class KeywordCodeGen(_PyTreeCodeGen):
    """torch.fx's pytree code generation with the keyword inputs as keyword-only parameters and
    the constants' captured values as their defaults."""

    def __init__(self, info: _PyTreeInfo, positional: int, defaults: dict[str, str]) -> None:
        super().__init__(info)
        self.positional = positional
        self.defaults = defaults  # keyword -> Python source of its default

    def gen_fn_def(
        self, free_vars: list[str], maybe_return_annotation: str, *, expanded_def: bool = False
    ) -> str:
        names = self.pytree_info.orig_args
        params = ["self", *names[: self.positional]]
        keywords = names[self.positional :]
        if keywords:
            params.append("*")
            params += [f"{k}={self.defaults[k]}" if k in self.defaults else k for k in keywords]
        head = f"def {self._func_name}({', '.join(params)}){maybe_return_annotation}:"
        if free_vars and free_vars[0] == "self":
            free_vars = free_vars[1:]
        if not free_vars:
            return head
        return head + self.gen_var_bindings(list(names), free_vars, expanded_def)


def codegen(cap: Capture) -> _PyTreeCodeGen:
    """The code generation for a pruned module of ``cap``: its forward takes the inputs the
    model took, by the same names."""
    keywords = keyword_names(cap)
    positional = len(cap.user_inputs) - len(keywords)
    names = [*cap.user_inputs[:positional], *keywords]
    defaults = {
        k: literal(cap.constants[p])
        for k, p in zip(keywords, cap.user_inputs[positional:], strict=True)
        if p in cap.constants
    }
    return KeywordCodeGen(_PyTreeInfo(names, cap.in_spec, cap.out_spec), positional, defaults)


def input_names(cap: Capture) -> dict[str, str]:
    """Placeholder name -> the name the user passes that input by."""
    keywords = keyword_names(cap)
    positional = len(cap.user_inputs) - len(keywords)
    names = {p: p for p in cap.user_inputs[:positional]}
    names.update(zip(cap.user_inputs[positional:], keywords, strict=True))
    return names


def require_sizes(
    x: object, sizes: tuple[int | None, ...], name: str, model: str, batch_reason: str
) -> object:
    """``x`` itself where its sizes are ``sizes`` (None: any); otherwise :class:`InputError`
    naming the input, the dimension, the captured size and how to allow others."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{model}'s input {name!r} must be a tensor, got {type(x).__name__}")
    if x.dim() != len(sizes):
        raise InputError(
            f"{model}'s input {name!r} has {x.dim()} dimensions; it was captured with "
            f"{len(sizes)} (shape {_shape(sizes)})"
        )
    for d, (got, want) in enumerate(zip(x.shape, sizes, strict=True)):
        if want is not None and got != want:
            raise InputError(_size_message(name, d, int(got), want, model, batch_reason))
    return x


def _shape(sizes: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in sizes) + ")"


def _size_message(name: str, d: int, got: int, want: int, model: str, batch_reason: str) -> str:
    head = (
        f"{model}'s input {name!r} has size {got} in dimension {d}, but the pruned model was "
        f"captured at size {want} there and holds for that size only"
    )
    if d == 0 and batch_reason:
        return f"{head}: its batch is fixed ({batch_reason})"
    return (
        f"{head}. Export with dynamic_shapes={{{name!r}: {{{d}: torch.export.Dim.AUTO}}}} "
        "(mask with the same) to allow other sizes where the model does, or with an example "
        "of the size you run"
    )


@has_side_effect
def require_constant(value: object, captured: object, name: str, model: str) -> None:
    """Nothing where ``value`` is the constant the capture baked in; otherwise
    :class:`InputError`: the pruned graph computes what the model computes with ``captured``."""
    if _same(value, captured):
        return
    raise InputError(
        f"{model} was captured with {name}={captured!r} and its pruned graph computes only "
        f"that; it was called with {name}={value!r}. Export with example_kwargs="
        f"{{{name!r}: {value!r}, ...}} to run it that way"
    )


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


class GuardTracer(fx.Tracer):
    """The tracer torch.fx re-traces a pickled pruned module's code with
    (``GraphModule._tracer_cls``): it keeps the input checks as calls, where a plain tracer
    would run them on proxies."""

    def __init__(
        self,
        autowrap_modules: tuple = (math,),
        autowrap_functions: tuple = (),
        param_shapes_constant: bool = False,
    ) -> None:
        checks = (require_sizes, require_constant, require_batch)
        super().__init__(autowrap_modules, (*autowrap_functions, *checks), param_shapes_constant)


def guard(module: fx.GraphModule, cap: Capture, model_name: str) -> None:
    """Make ``module`` check, before anything else, each tensor input's static sizes and each
    constant input's value against what ``cap`` was captured with."""
    module._tracer_cls = GuardTracer
    graph = module.graph
    names = input_names(cap)
    placeholders = [n for n in graph.nodes if n.op == "placeholder" and n.name in names]
    if not placeholders:
        return
    last = [n for n in graph.nodes if n.op == "placeholder"][-1]
    for node in placeholders:
        name = names[node.name]
        if node.name in cap.constants:
            with graph.inserting_after(last):
                last = graph.call_function(
                    require_constant, (node, cap.constants[node.name], name, model_name)
                )
            continue
        sizes = static_sizes(cap, node)
        if sizes is None or all(s is None for s in sizes):
            continue
        reason = _batch_reason(cap)
        with graph.inserting_after(last):
            checked = graph.call_function(require_sizes, (node, sizes, name, model_name, reason))
        node.replace_all_uses_with(checked, delete_user_cb=lambda user, c=checked: user is not c)
        last = checked
    module.recompile()


def static_sizes(cap: Capture, node: fx.Node) -> tuple[int | None, ...] | None:
    """Per dimension of a tensor input, the size its graph holds for; None where any size
    goes (a symbolic size, or the batch a marker trace generalised, ``capture.batch``) or is
    checked elsewhere (a restricted batch: ``rewrite/fixed_batch.py``)."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    sizes: list[int | None] = []
    for d, s in enumerate(val.shape):
        # a symbolic size torch.export specialised to a constant is as static as an int
        free = not is_concrete_int(s) or (d == 0 and cap.marker is not None and s == cap.marker)
        if d == 0 and cap.fixed_batch is not None:
            free = True
        sizes.append(None if free else int(s))
    return tuple(sizes)


def _batch_reason(cap: Capture) -> str:
    if cap.static_reason:
        return cap.static_reason
    return "" if cap.dynamic_batch else "exported with dynamic_batch=False"
