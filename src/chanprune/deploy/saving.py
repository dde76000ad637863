"""Saving and loading pruned models, never unpickling untrusted data.

Two formats:

- ``.pt2``: a ``torch.export`` program with a dynamic batch dimension. :func:`load_program`
  first refuses archives whose entries would be unpickled (see ``deploy.archive``).
- a pruning spec (``.json``: per tensor, the kept original indices in physical order) plus the
  pruned tensors (``.safetensors``). :func:`load_pruned` turns a fresh instance of the original
  architecture into the pruned model; the graph is rebuilt by exporting, never deserialised.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import torch

from ..api import check_group_quantum, check_width_quantum, export
from ..capture.inputs import batched_keys, export_shapes, map_batched
from ..capture.trace import as_example, as_input_tuple
from ..deps import require
from ..errors import InputError
from ..models import load_model
from ..paths import check_writable
from ..rewrite.rewriter import GROUP_QUANTUM
from .archive import check_archive
from .spec import check_spec, kept_indices, rebuild

SPEC_FORMAT = "chanprune-spec"
# 2: group_quantum, grouped input dims ({"groups": ...}; deploy.spec); 3: width_quantum
SPEC_VERSION = 3
READS_VERSIONS = (1, 2, 3)
LEGACY_GROUP_QUANTUM = 1  # specs without the field: the smallest grouped convs (load_pruned)


def to_program(
    module: torch.nn.Module, example_inputs: object, example_kwargs: object = None
) -> torch.export.ExportedProgram:
    """``torch.export`` of a pruned module that accepts any batch size. Keyword inputs the
    module's forward has defaults for (a pruned export's captured constants) are passed with
    those values: the program takes every input it was traced with. Other dimensions are as
    torch.export traces them: fixed, where the module checks them (a pruned export)."""
    inputs, kwargs = as_example(example_inputs, example_kwargs)
    kwargs = _defaults(module) | kwargs
    dims = {k: {0: torch.export.Dim.AUTO} for k in batched_keys(inputs, kwargs)}
    shapes = export_shapes(module, inputs, kwargs, dims)
    # a batch of 1 would be specialised (the 0/1 rule): trace with two copies instead
    inputs, kwargs = map_batched(
        inputs, kwargs, lambda x: torch.cat([x, x]) if x.shape[0] == 1 else x
    )
    return torch.export.export(module, inputs, kwargs, dynamic_shapes=shapes)


def _defaults(module: torch.nn.Module) -> dict[str, object]:
    """The keyword-only parameters of ``module.forward`` that have defaults, with them."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return {}
    keyword = inspect.Parameter.KEYWORD_ONLY
    return {p.name: p.default for p in params if p.kind is keyword and p.default is not p.empty}


def save_program(
    module: torch.nn.Module, example_inputs: object, path: str | Path, example_kwargs: object = None
) -> None:
    """Write ``module`` (e.g. a pruned export) to ``path`` as a ``.pt2`` ``torch.export``
    program that accepts any batch size; :func:`load_program` reads it back without
    unpickling. ``example_inputs`` (and ``example_kwargs``) are what it is traced on."""
    torch.export.save(to_program(module, example_inputs, example_kwargs), str(path))


def load_program(path: str | Path) -> torch.export.ExportedProgram:
    """``torch.export.load`` of a ``.pt2`` file, refusing any entry that would be unpickled."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    check_archive(path)
    return torch.export.load(str(path))


def save_pruned(
    pruned: torch.nn.Module,
    model: torch.nn.Module,
    example_inputs: object,
    path: str | Path,
    model_name: str | None = None,
) -> tuple[Path, Path]:
    """Write ``path`` (the spec, ``.json``) and the pruned tensors next to it (``.safetensors``).

    ``pruned`` is ``chanprune.export(model, example_inputs)`` (fine-tuned or not); ``model`` the
    masked original. ``model_name`` (a torchvision/timm name) lets ``load_pruned`` build the
    architecture itself. Returns both paths.
    """
    st = require("safetensors.torch", "saving a pruning spec")
    path = check_writable(path, "spec", (".json",))
    weights = path.with_suffix(".safetensors")
    inputs = as_input_tuple(example_inputs)
    spec = kept_indices(pruned, model, inputs)
    check_spec(pruned, model, inputs, spec)
    state = pruned.state_dict()
    st.save_file({k: state[k].detach().contiguous() for k in spec}, str(weights))
    doc = {
        "format": SPEC_FORMAT,
        "version": SPEC_VERSION,
        "model": model_name,
        "architecture": f"{type(model).__module__}.{type(model).__qualname__}",
        "method": pruned.chanprune_method,
        "group_quantum": getattr(pruned, "chanprune_group_quantum", GROUP_QUANTUM),
        "width_quantum": getattr(pruned, "chanprune_width_quantum", 1),
        "inputs": [
            {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} for x in inputs
        ],
        "weights": weights.name,
        "weights_sha256": _sha256(weights),
        "tensors": {k: {"shape": list(state[k].shape), "keep": keep} for k, keep in spec.items()},
    }
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path, weights


def load_pruned(
    model: torch.nn.Module | str | None, path: str | Path, example_inputs: object = None
) -> torch.fx.GraphModule:
    """The pruned model saved by :func:`save_pruned`, from a fresh ``model`` of the original
    architecture (or its torchvision/timm name; ``None``: the name recorded in the spec).

    ``model`` receives the pruned tensors in place (zeros where channels were removed, i.e. the
    masked model) and is exported again; export checks the result. Nothing is unpickled.
    ``example_inputs`` are what the export is checked on (default: random inputs of the shapes
    the spec recorded). A spec without ``group_quantum`` or ``width_quantum`` (written before
    they were recorded) loads with 1: the smallest layers; exact under any value, as fillers
    are zeros of the masked model or read by nobody.
    """

    st = require("safetensors.torch", "loading a pruning spec")
    doc = read_spec(path)
    weights = Path(path).parent / doc["weights"]
    if not weights.is_file():
        raise InputError(f"{path}: its weights file {weights} is missing")
    if _sha256(weights) != doc.get("weights_sha256"):
        raise InputError(f"{weights}: does not match the spec {path} (checksum differs)")
    try:
        tensors = st.load_file(str(weights))
    except Exception as e:
        raise InputError(f"{weights}: not a safetensors file ({e})") from e
    if model is None or isinstance(model, str):
        name = model or doc.get("model")
        if not name:
            raise InputError(f"{path}: the spec names no model; pass a fresh instance of it")
        model = load_model(name)[0]
    model.eval()
    spec = {k: v["keep"] for k, v in doc["tensors"].items()}
    rebuild(model, spec, tensors)
    if example_inputs is None:
        gen = torch.Generator().manual_seed(0)
        example_inputs = tuple(
            torch.randn(i["shape"], generator=gen, dtype=_dtype(i.get("dtype"), path))
            for i in doc["inputs"]
        )
    quantum = doc.get("group_quantum", LEGACY_GROUP_QUANTUM)
    width = doc.get("width_quantum", 1)  # older specs: no width rounding
    return export(
        model, example_inputs, method=doc["method"], group_quantum=quantum, width_quantum=width
    )


def read_spec(path: str | Path) -> dict:
    """The spec JSON, validated enough that a wrong file gets a clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a chanprune spec (not JSON: {e})") from e
    if not isinstance(doc, dict) or doc.get("format") != SPEC_FORMAT:
        raise InputError(f"{path}: not a chanprune spec (format is not {SPEC_FORMAT!r})")
    if doc.get("version") not in READS_VERSIONS:
        raise InputError(
            f"{path}: spec version {doc.get('version')!r} (this chanprune reads "
            f"{', '.join(map(str, READS_VERSIONS))})"
        )
    w = doc.get("weights")
    if not isinstance(w, str) or Path(w).name != w or not w.endswith(".safetensors"):
        raise InputError(f"{path}: weights must be a .safetensors file next to the spec")
    if not isinstance(doc.get("tensors"), dict) or not isinstance(doc.get("inputs"), list):
        raise InputError(f"{path}: the spec lacks its tensors or inputs")
    try:
        check_group_quantum(doc.get("group_quantum", LEGACY_GROUP_QUANTUM))
        check_width_quantum(doc.get("width_quantum", 1))
    except InputError as e:
        raise InputError(f"{path}: {e}") from e
    return doc


def _dtype(name: object, path: object) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"{path}: unknown input dtype {name!r}")
    return dtype


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
