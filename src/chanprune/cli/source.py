"""MODEL arguments: a torchvision/timm name, or a file holding a saved model (never a pickle)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..deps import require
from ..errors import InputError
from ..models import load_model

PICKLES = (".pt", ".pth", ".pkl", ".ckpt", ".bin")


@dataclass
class Source:
    model: torch.nn.Module
    name: str | None  # zoo name (for specs), when known
    shape: tuple[int, ...]  # one example input without its batch dimension
    label: str  # what to call it in messages


def load_source(spec: str, weights: Path | None = None) -> Source:
    """Build the model named or stored by ``spec`` (``.pt2`` program or ``.json`` pruning spec),
    optionally loading a ``.safetensors`` state dict into a named architecture."""
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in PICKLES:
        raise InputError(
            f"{spec}: pickled checkpoints are not loaded (unpickling can run code); pass the "
            "architecture name with --weights FILE.safetensors, or a .pt2 / .json file"
        )
    if suffix in (".pt2", ".json") or path.exists():
        if weights is not None:
            raise InputError("--weights applies to a model name, not to a saved model file")
        if not path.is_file():
            raise InputError(f"{spec}: no such file")
        if suffix == ".pt2":
            return _program(path)
        if suffix == ".json":
            return _spec(path)
        raise InputError(f"{spec}: unknown model file type (expected .pt2 or .json)")
    model, shape = load_model(spec)
    if weights is not None:
        _load_weights(model, weights)
    return Source(model, spec, tuple(shape), spec)


def _program(path: Path) -> Source:
    from ..deploy.saving import load_program

    program = load_program(path)
    args = (program.example_inputs or ((),))[0]
    if len(args) != 1 or not isinstance(args[0], torch.Tensor):
        raise InputError(f"{path}: expected a program with one tensor input")
    module = program.module()
    # the unlifted module refuses .eval()/.train(); a plain GraphModule over the same graph and
    # tensors behaves like any model (and can be pruned again)
    module = torch.fx.GraphModule(module, module.graph)
    return Source(module, None, tuple(args[0].shape[1:]), path.name)


def _spec(path: Path) -> Source:
    from ..deploy.saving import load_pruned, read_spec

    doc = read_spec(path)
    module = load_pruned(doc.get("model"), path)
    return Source(module, None, tuple(doc["inputs"][0]["shape"][1:]), path.name)


def _load_weights(model: torch.nn.Module, weights: Path) -> None:
    st = require("safetensors.torch", "--weights")
    if weights.suffix.lower() != ".safetensors":
        raise InputError(f"--weights {weights}: expected a .safetensors file (no pickles)")
    if not weights.is_file():
        raise InputError(f"--weights {weights}: no such file")
    try:
        state = st.load_file(str(weights))
    except Exception as e:
        raise InputError(f"--weights {weights}: not a safetensors file ({e})") from e
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise InputError(f"--weights {weights} does not fit the model: {e}") from e
    if missing or unexpected:
        raise InputError(
            f"--weights {weights} does not fit the model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
