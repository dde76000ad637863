"""Capture: a model plus example inputs -> a functional ATen graph with named parameters.

We use ``torch.export`` (non-strict) and then the functional form of its graph: it captures every
torchvision classification model and far more timm models than ``torch.fx.symbolic_trace``
(see docs/design.md), and the functional form has no in-place ops, so channel flow can be read
off the graph without alias analysis. The functional pass (``capture.functional``) gets that
form directly where it can vouch for the graph; otherwise ``run_decompositions({})`` re-traces
it. The batch dimension is exported as dynamic when the model allows it, so the pruned module
runs at any batch size.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import logging
import sysconfig
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import torch
from torch import fx
from torch.export.graph_signature import ConstantArgument
from torch.fx.experimental.symbolic_shapes import is_concrete_int
from torch.utils import _pytree as pytree

from ..errors import CaptureError, InputError
from .batch import MAX_MARKER_BYTES, Allowed, allowed_batches, generalise, marker_inputs
from .checks import check_values
from .functional import functionalize
from .inputs import (
    Spec,
    as_kwargs,
    batch_of,
    batched_keys,
    export_shapes,
    fingerprint,
    map_batched,
    non_tensor_outputs,
    user_dims,
)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Capture:
    """The captured graph and how its placeholders map to the model's tensors.

    ``tensors`` holds live references to the model's parameters and buffers (so masking after
    capture is seen by later stages) and copies of lifted constants.
    """

    graph: fx.Graph
    state_names: dict[str, str]  # placeholder name -> qualified parameter/buffer/constant name
    tensors: dict[str, torch.Tensor]  # qualified name -> tensor
    parameter_names: set[str]  # qualified names that are nn.Parameters
    user_inputs: list[str]  # placeholder names of the user's inputs
    in_spec: pytree.TreeSpec | None
    out_spec: pytree.TreeSpec | None
    dynamic_batch: bool
    module_paths: dict[str, str] = field(default_factory=dict)  # node name -> module path
    marker: int | None = None  # the static batch traced at, then generalised (capture.batch)
    # where a dynamic batch was asked for, the batches the graph holds for when torch.export
    # restricted them: one batch size, or (m, residues) for n % m in residues; None: any
    # (rewrite/fixed_batch.py makes the export refuse the others)
    fixed_batch: Allowed = None
    # user inputs that torch.export baked in (keyword constants: use_cache=False): name -> value
    constants: dict[str, object] = field(default_factory=dict)
    # why the batch is fixed where a dynamic batch was asked for and could not be traced
    static_reason: str | None = None

    def where(self, node: fx.Node) -> str:
        """A human-readable location of a node: the module path and the op."""
        path = self.module_paths.get(node.name, "")
        op = getattr(node.target, "__name__", str(node.target))
        return f"{path or '<top>'} ({op}, node {node.name})"


def keyword_names(cap: Capture) -> list[str]:
    """The keyword inputs the capture takes, in the order of its placeholders (after the
    positional ones)."""
    spec = cap.in_spec
    if spec is None or spec.num_children != 2 or spec.child(1).type is not dict:
        return []
    return list(spec.child(1).context)


def user_leaves(cap: Capture, args: tuple, kwargs: dict | None = None) -> tuple:
    """The values of the capture's user-input placeholders, in order, for ``model(*args,
    **kwargs)``: the positional inputs, then the keyword ones (constants included)."""
    kwargs = kwargs or {}
    missing = [k for k in keyword_names(cap) if k not in kwargs]
    if missing:
        raise InputError(f"the capture takes keyword input(s) {', '.join(missing)}: pass them")
    return (*args, *(kwargs[k] for k in keyword_names(cap)))


def as_example(
    example_inputs: object, example_kwargs: object = None
) -> tuple[tuple[torch.Tensor, ...], dict[str, object]]:
    """(positional tensors, keyword inputs): ``example_inputs`` may be empty where a keyword
    input is a tensor (``model(input_ids=ids)``)."""
    kwargs = as_kwargs(example_kwargs)
    empty = isinstance(example_inputs, list | tuple) and not example_inputs
    if empty and any(isinstance(v, torch.Tensor) for v in kwargs.values()):
        return (), kwargs
    return as_input_tuple(example_inputs), kwargs


def as_input_tuple(example_inputs: object) -> tuple[torch.Tensor, ...]:
    """Normalise example inputs to a tuple of tensors, refusing anything else by name."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list | tuple) and example_inputs:
        for i, x in enumerate(example_inputs):
            if not isinstance(x, torch.Tensor):
                raise InputError(
                    f"example_inputs[{i}] is a {type(x).__name__}, expected a torch.Tensor"
                )
        return tuple(example_inputs)
    raise InputError(
        f"example_inputs must be a tensor or a non-empty tuple of tensors, got {example_inputs!r}"
    )


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode and leave every submodule as it was: its training flag, and
    every attribute, parameter, buffer and submodule slot (tracing runs forward on fake tensors
    at a marker batch, and modules that cache what forward computes, such as anchors or rotary
    tables, would keep fake tensors or the marker's sizes). Lists, dicts and sets held by a
    module get their contents back too. Edits made *inside* the tensors, as ``mask`` zeroing
    weights in place, are not undone."""
    saved = [(m, dict(m.__dict__), _contents(m.__dict__)) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, attrs, contents in saved:
            for k in [k for k in m.__dict__ if k not in attrs]:
                del m.__dict__[k]
            m.__dict__.update(attrs)
            for box, items in contents:
                _refill(box, items)


def _contents(attrs: dict) -> list[tuple[object, object]]:
    """(container, a shallow copy of its items) for the lists, dicts and sets among ``attrs``
    (``_parameters``, ``_buffers`` and ``_modules`` included)."""
    out: list[tuple[object, object]] = []
    for v in attrs.values():
        if type(v) in (dict, collections.OrderedDict):  # not read-only mappings (diffusers'
            out.append((v, dict(v)))  # FrozenDict config), whose update() raises
        elif type(v) in (list, set):
            out.append((v, list(v)))
    return out


def _refill(box: object, items: object) -> None:
    """Put ``items`` back into ``box`` where they changed (one by identity)."""
    now = list(box.items()) if isinstance(box, dict) else list(box)
    was = list(items.items()) if isinstance(items, dict) else list(items)
    if len(now) == len(was) and all(_same(a, b) for a, b in zip(now, was, strict=True)):
        return
    box.clear()
    if isinstance(box, list):
        box.extend(items)
    else:
        box.update(items)


def _same(a: object, b: object) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):  # dict items
        return a[0] == b[0] and a[1] is b[1]
    return a is b


def run_model(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], kwargs: dict | None = None
) -> object:
    """Run the model in eval mode without gradients; a failure names the input shapes."""
    kwargs = kwargs or {}
    with eval_mode(model), torch.no_grad():
        try:
            return model(*inputs, **kwargs)
        except Exception as e:  # the user's model raised: say which inputs it was given
            shapes = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in inputs)
            shapes += "".join(f", {k}={_describe(v)}" for k, v in kwargs.items())
            raise InputError(
                f"{type(model).__name__} failed on example inputs of shape [{shapes}]: "
                f"{type(e).__name__}: {e}"
            ) from e


def _describe(v: object) -> str:
    return f"{tuple(v.shape)} {v.dtype}" if isinstance(v, torch.Tensor) else repr(v)


def gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with the cyclic garbage collector off (restored after, never forced on).

    Tracing and rewriting build hundreds of thousands of small objects (fx nodes, fake tensors),
    and the collections they trigger are a sizeable share of a cold export (docs/design.md,
    "Capture"). Cycles made meanwhile are collected at the next collection after."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()

    return run


FAST_PATH = True  # capture.functional, not run_decompositions, where it vouches for the graph
MARKED_PATH = True  # a static trace at a marker batch, generalised (capture.batch), if vouched


@contextlib.contextmanager
def _lean_tracing() -> Iterator[None]:
    """Two things torch.export does that a capture never uses, switched off while it traces.

    * A Python stack trace per node (a noticeable share of its time: docs/design.md): nothing
      here reads them (error messages name the module path from ``nn_module_stack``).
    * Python code for each intermediate GraphModule: its passes recompile the graph several
      times (tests/test_capture.py counts them), but the captured graph is only read, never
      called. Lazy graph modules (torch.fx's own, used by torch.compile) generate the code on
      first call instead.
      Private API: without it the capture just runs as before.
    """
    config = torch.fx.config
    old = config.do_not_emit_stack_traces
    config.do_not_emit_stack_traces = True
    try:
        with _lazy_graph_modules():
            yield
    finally:
        config.do_not_emit_stack_traces = old


def _lazy_graph_modules() -> contextlib.AbstractContextManager:
    try:
        from torch.fx._lazy_graph_module import _use_lazy_graph_module
    except ImportError:  # pragma: no cover - a torch without it
        return contextlib.nullcontext()
    return _use_lazy_graph_module(True)


def _functional(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    if FAST_PATH and functionalize(ep) is not None:
        return ep
    return ep.run_decompositions({})


@contextlib.contextmanager
def _quiet_fake_tensors() -> Iterator[None]:
    """Silence torch's log of an op failing on fake tensors: a model that needs an even batch
    (two views added, ``a + b`` of ``chunk(x, 2, 0)``) fails at the odd marker batch, and
    torch logs each such failure with a long traceback, though the symbolic trace follows."""
    log = logging.getLogger("torch._subclasses.fake_tensor")
    old, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = old


def _export_marked(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
    """(program, marker): traced at the static marker batch and generalised, or None."""
    marked = marker_inputs(args)
    if marked is None:
        return None
    stand_ins, marker = marked
    _, kw = map_batched(args, kwargs, lambda x: x.new_empty((marker, *x.shape[1:])))
    try:
        with _quiet_fake_tensors():
            ep = _functional(torch.export.export(model, stand_ins, kw, strict=False))
    except Exception:  # the symbolic trace decides what the user is told
        return None
    users = ep.graph_signature.user_inputs
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    batched = [placeholders.get(u) for u, x in zip(users, args, strict=False) if x.dim() > 0]
    if len(users) != len(args) + len(kwargs) or not batched or batched[0] is None:
        return None
    return (ep, marker) if generalise(ep.graph, marker, batched[0]) else None


def _export(
    model: torch.nn.Module,
    args: tuple,
    dynamic: bool,
    marked: bool = False,
    kwargs: dict | None = None,
    dims: dict[object, Spec] | None = None,
) -> tuple[torch.export.ExportedProgram, int | None]:
    """The functional program and, where it was traced at a marker batch, the marker.

    ``dims``: the user's dynamic dimensions per input (``capture.inputs.user_dims``), traced
    symbolically besides the batch (a marker trace is static, so they take the symbolic one)."""
    # torch.export marks the tensors it traces with dynamic dims as dynamic for later traces:
    # trace aliases, so neither the user's tensors nor a static trace after this one see that
    args = tuple(x.detach() for x in args)
    kwargs = {
        k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in (kwargs or {}).items()
    }
    dims = dims or {}
    shapes = None
    with _lean_tracing():
        if dynamic and marked and MARKED_PATH and not dims:
            got = _export_marked(model, args, kwargs)
            if got is not None:
                return got
        traced, traced_kw = args, kwargs
        if dynamic:
            every = {k: {0: torch.export.Dim.AUTO} for k in batched_keys(args, kwargs)}
            dims = {k: every.get(k, {}) | dims.get(k, {}) for k in every.keys() | dims.keys()}
            # a batch of 1 would be specialised (the 0/1 rule): trace with two copies instead
            traced, traced_kw = map_batched(
                args, kwargs, lambda x: torch.cat([x, x]) if x.shape[0] == 1 else x
            )
        if dims:
            shapes = export_shapes(model, args, kwargs, dims)
        ep = _functional(
            torch.export.export(model, traced, traced_kw, strict=False, dynamic_shapes=shapes)
        )
        if dynamic and not _holds_for(ep, batch_of(args, kwargs)):
            ep = _retrace_larger(model, args, kwargs, shapes) or ep
        return ep, None


RETRACE_EXTRA = 840  # lcm(1..8): a retrace at batch + this keeps n % m for m up to 8


def _batch_size(ep: torch.export.ExportedProgram) -> int | torch.SymInt | None:
    """The batch size of the program's first batched user input."""
    users = set(ep.graph_signature.user_inputs)
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        user = node.op == "placeholder" and node.name in users
        if user and isinstance(val, torch.Tensor) and val.dim() > 0:
            return val.shape[0]
    return None


def _holds_for(ep: torch.export.ExportedProgram, batch: int | None) -> bool:
    """The program holds for batch sizes from 64 on (``allowed_batches``), of the user's remainder
    where it holds for some remainders only (torch's lower bound of 2 is the 0/1 rule, which
    the trace of a batch of 1 at two copies already relies on)."""
    size = _batch_size(ep)
    if size is None or batch is None:
        return True
    allowed = allowed_batches(size)
    return not isinstance(allowed, int) and (not allowed or batch % allowed[0] in allowed[1])


def _retrace_larger(
    model: torch.nn.Module, args: tuple, kwargs: dict, shapes: object
) -> torch.export.ExportedProgram | None:
    """The symbolic trace at a much larger batch, where the trace at the user's fixed it (a
    size computed from the batch was 0 or 1: one sample per view, ``chunk(x, 2, 0)`` at batch
    2). The larger batch is the user's plus 840, so it has the same remainder modulo 2..8 (two
    or three views still divide it), on uninitialised stand-ins (tracing reads only their
    metadata). None where that fails or does not hold for the user's batch either (a model
    that takes only this batch keeps its static trace)."""
    batch = batch_of(args, kwargs)
    keys = set(batched_keys(args, kwargs))
    per_sample = sum(x[:1].nbytes for k, x in [*enumerate(args), *kwargs.items()] if k in keys)
    if batch is None or (batch + RETRACE_EXTRA) * per_sample > MAX_MARKER_BYTES:
        return None
    larger, larger_kw = map_batched(
        args, kwargs, lambda x: x.new_empty((batch + RETRACE_EXTRA, *x.shape[1:]))
    )
    try:
        ep = _functional(
            torch.export.export(model, larger, larger_kw, strict=False, dynamic_shapes=shapes)
        )
    except Exception:
        return None
    return ep if _holds_for(ep, batch) else None


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(model: torch.nn.Module, inputs: tuple, dynamic: bool) -> tuple:
    """What a captured graph depends on besides weight values (which are read live)."""
    state = tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict(keep_vars=True).items())
    shapes = tuple((tuple(x.shape), x.dtype) for x in inputs)
    return (repr(model), state, shapes, dynamic)


def capture(
    model: torch.nn.Module,
    example_inputs: object,
    dynamic_batch: bool = True,
    marked: bool = True,
    example_kwargs: object = None,
    dynamic_shapes: object = None,
) -> Capture:
    """Capture ``model`` on ``example_inputs`` (in eval mode; the model is not modified).

    The graph is cached per model object (and its structure and input shapes), so mask() then
    export() on the same model captures once; tensors are always re-read from the model.
    ``marked=False`` refuses a marker-batch capture (``capture.batch``): the symbolic trace, whose
    generality torch.export itself guarantees. ``example_kwargs``: keyword inputs, tensors or
    constants (``capture.inputs``); ``dynamic_shapes``: dimensions besides the batch to trace
    as symbolic sizes, per input name ({"input_ids": {1: torch.export.Dim.AUTO}}).
    """
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs, kwargs = as_example(example_inputs, example_kwargs)
    dims = user_dims(model, inputs, kwargs, dynamic_shapes)
    try:
        check_values(model, inputs, kwargs)
    except InputError:
        run_model(model, inputs, kwargs)  # inputs the model cannot take at all: that first
        raise
    key = (*_fingerprint(model, inputs, dynamic_batch), fingerprint(kwargs, dims))
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == key and (marked or cached[1].marker is None):
        return _rebind(model, cached[1])
    try:
        cap = _capture(model, inputs, dynamic_batch, marked, kwargs, dims)
    except CaptureError:
        # inputs the model cannot take, or outputs torch.export cannot return: say so
        check_outputs(model, run_model(model, inputs, kwargs))
        raise
    _CACHE[model] = (key, cap)
    return _rebind(model, cap)


def check_outputs(model: torch.nn.Module, output: object) -> None:
    """Refuse, by where they are, outputs that are neither tensors nor constants (a Hugging Face
    ``DynamicCache``): torch.export cannot return them, and chanprune does not drop them
    silently (a pruned model returning no cache would change what generation does)."""
    bad = non_tensor_outputs(output)
    if not bad:
        return
    where = ", ".join(f"a {kind} at output{path}" for path, kind in bad)
    raise CaptureError(
        f"{type(model).__name__} returns {where}: torch.export captures tensors and constants "
        "only, and chanprune will not drop a cache the model returns. Turn the cache off for "
        "the capture (Hugging Face models: example_kwargs={'use_cache': False}), or wrap the "
        "model in a module that returns the tensors you need"
    )


def _rebind(model: torch.nn.Module, cap: Capture) -> Capture:
    """A copy of ``cap`` whose tensors are the model's current parameters and buffers."""
    live = dict(model.named_parameters(remove_duplicate=False))
    live.update(model.named_buffers(remove_duplicate=False))
    tensors = {k: live.get(k, v) for k, v in cap.tensors.items()}
    return dataclasses.replace(cap, tensors=tensors)


def _capture(
    model: torch.nn.Module,
    inputs: tuple,
    dynamic_batch: bool,
    marked: bool,
    kwargs: dict | None = None,
    dims: dict[object, Spec] | None = None,
) -> Capture:
    asked, reason = dynamic_batch, None
    with eval_mode(model):
        try:
            ep, marker = _export(model, inputs, dynamic_batch, marked, kwargs, dims)
        except Exception as first:
            if not dynamic_batch and not dims:
                raise CaptureError(_capture_message(model, first)) from first
            try:
                ep, marker = _export(model, inputs, False, kwargs=kwargs)
            except Exception as e:
                raise CaptureError(_capture_message(model, e)) from e
            dynamic_batch, reason = False, _static_reason(first, dims)
            warnings.warn(
                f"chanprune: {type(model).__name__} was captured at the example's fixed sizes: "
                f"{reason}. Its export runs at those sizes only and refuses others by name",
                stacklevel=4,
            )
    cap = _from_exported(model, ep, dynamic_batch)
    if dims:
        _warn_static_dims(model, cap, len(inputs), dims)
    fixed = None
    if asked and dynamic_batch and marker is None and _batch_size(ep) is not None:
        fixed = allowed_batches(_batch_size(ep))  # asked for any batch: did the trace restrict it?
    return dataclasses.replace(cap, marker=marker, fixed_batch=fixed, static_reason=reason)


def _static_reason(error: Exception, dims: dict | None) -> str:
    """Why the dynamic trace failed, for the warning and the export's size checks."""
    text = str(error).strip().splitlines()
    head = text[0] if text else ""
    line = failing_line(error)
    what = "a dynamic batch" + (" and the dynamic_shapes asked for" if dims else "")
    return (
        f"torch.export could not trace it with {what} ({type(error).__name__}: {head}"
        f"{f' at {line}' if line else ''})"
    )


def _capture_message(model: torch.nn.Module, e: Exception) -> str:
    text = str(e).strip().splitlines()
    head = text[0] if text else type(e).__name__
    line = failing_line(e)
    children = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    hint = (
        f"; prune the parts it can capture with submodules=[...], e.g. of its children "
        f"{', '.join(repr(c) for c in children)}"
        if children
        else ""
    )
    return (
        f"torch.export could not capture {type(model).__name__}: {type(e).__name__}: {head}"
        f"{f' (at {line})' if line else ''}. chanprune needs a model that "
        f"torch.export.export(strict=False) accepts{hint}"
    )


def failing_line(error: BaseException) -> str | None:
    """``file:line (function)`` of the model code where tracing failed: the deepest frame of
    the failure and its causes outside torch, chanprune and the standard library."""
    frames: list[traceback.FrameSummary] = []
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        frames = list(traceback.extract_tb(e.__traceback__)) + frames
        e = e.__cause__ or e.__context__
    skip = (
        str(Path(torch.__file__).parent),
        str(Path(__file__).parents[1]),
        sysconfig.get_paths()["stdlib"],
    )
    user = [f for f in frames if not f.filename.startswith(skip) and "<" not in f.filename]
    return f"{user[-1].filename}:{user[-1].lineno} ({user[-1].name})" if user else None


def _warn_static_dims(
    model: torch.nn.Module, cap: Capture, n_args: int, dims: dict[object, Spec]
) -> None:
    """Warn where ``dynamic_shapes`` asked for a dimension that torch.export kept static
    (``Dim.AUTO`` lets it, where the model fixes the size): the export then runs at the
    example's size there only, and says so when called at another, rather than silently."""
    nodes = {n.name: n for n in cap.graph.nodes}
    keywords = keyword_names(cap)
    static = []
    for key, spec in dims.items():
        i = key if isinstance(key, int) else n_args + keywords.index(key) if key in keywords else -1
        val = nodes[cap.user_inputs[i]].meta.get("val") if 0 <= i < len(cap.user_inputs) else None
        if not isinstance(val, torch.Tensor):
            continue
        for d, dim in dict(spec).items():
            if dim is not None and is_concrete_int(val.shape[d]):
                name = cap.user_inputs[i]
                static.append(f"dimension {d} of input '{name}' at {int(val.shape[d])}")
    if static:
        warnings.warn(
            f"chanprune: torch.export kept {', '.join(static)} of {type(model).__name__} static "
            "although dynamic_shapes asked for it (the model fixes that size); the export runs "
            "at that size only and refuses others by name",
            stacklevel=4,
        )


def _views_as_reshapes(graph: fx.Graph) -> None:
    """Every ``view`` becomes a ``reshape`` (a view where the strides allow, else a copy; the
    graph is functional, so nothing tells them apart). torch.export picks ``view`` from the
    fake tensors' strides, which after an element-wise op on operands of mixed layouts (a
    rolled map times a channels-last one) need not be the real ones: the view would fail."""
    for node in graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default


def _from_exported(
    model: torch.nn.Module, ep: torch.export.ExportedProgram, dynamic_batch: bool
) -> Capture:
    sig = ep.graph_signature
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    state_names: dict[str, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    constants: dict[str, object] = {}
    for spec in sig.input_specs:
        name, target = spec.arg.name, spec.target
        if isinstance(spec.arg, ConstantArgument):
            constants[name] = spec.arg.value
        if target is None:
            continue
        state_names[name] = target
        if target in params:
            tensors[target] = params[target]
        elif target in buffers:
            tensors[target] = buffers[target]
        elif target in ep.constants:
            tensors[target] = ep.constants[target].detach().clone()
        else:
            tensors[target] = ep.state_dict[target]
    module_paths = {}
    for node in ep.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            module_paths[node.name] = list(stack.values())[-1][0]
    user_inputs = [
        n.name for n in ep.graph.nodes if n.op == "placeholder" and n.name not in state_names
    ]
    _views_as_reshapes(ep.graph)
    return Capture(
        graph=ep.graph,
        state_names=state_names,
        tensors=tensors,
        parameter_names={t for t in state_names.values() if t in params},
        user_inputs=user_inputs,
        in_spec=ep.call_spec.in_spec,
        out_spec=ep.call_spec.out_spec,
        dynamic_batch=dynamic_batch,
        module_paths=module_paths,
        constants=constants,
    )


def record(module: fx.GraphModule, args: tuple, names: set[str] | None = None) -> dict[str, object]:
    """Run a graph module on real inputs, returning the values of the named nodes (all if None)."""
    out: dict[str, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            v = super().run_node(n)
            if names is None or n.name in names:
                out[n.name] = v.detach() if isinstance(v, torch.Tensor) else v
            return v

    with torch.no_grad():
        Recorder(module).run(*args)
    return out


def run_graph(
    cap: Capture, inputs: tuple, names: set[str] | None = None, kwargs: dict | None = None
) -> dict[str, object]:
    """Run the captured graph itself (parameters read live) and record node values."""
    flat, user = [], iter(user_leaves(cap, inputs, kwargs))
    for n in cap.graph.nodes:
        if n.op == "placeholder":
            name = cap.state_names.get(n.name)
            flat.append(cap.tensors[name] if name is not None else next(user))
    return record(fx.GraphModule(torch.nn.Module(), cap.graph), tuple(flat), names)
