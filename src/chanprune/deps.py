"""Optional dependencies: import them on demand and say which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ChanpruneError

EXTRAS = {
    "onnx": "deploy",
    "onnxruntime": "deploy",
    "onnxscript": "deploy",
    "safetensors": "deploy",
    "matplotlib": "plot",
    "torchvision": "models",
    "timm": "models",
}


class MissingDependencyError(ChanpruneError, ImportError):
    """An optional package a feature needs is not installed (names the extra to install)."""


def require(module: str, purpose: str) -> ModuleType:
    """``import module``, or a :class:`MissingDependencyError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = f"pip install 'chanprune[{extra}]'" if extra else f"pip install {top}"
        msg = f"{purpose} needs {top}, which is not installed ({how})"
        raise MissingDependencyError(msg) from e
