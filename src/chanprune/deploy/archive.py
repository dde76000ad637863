"""Refuse ``.pt2`` archives that would make ``torch.export.load`` unpickle arbitrary objects.

``torch.export.load`` falls back to ``torch.load(weights_only=False)`` and ``pickle.loads`` for
some entries (pickled weights or constants, custom and opaque objects, sample inputs that fail
the safe loader). Unpickling runs code named by the file, so before loading we check that every
entry is plain tensor data or JSON, and that every torch-serialised entry loads with
``weights_only=True`` (then the fallback is never reached).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from ..errors import InputError

COMPILED = (".so", ".dll", ".dylib", ".pyd")
TENSOR_CONSTANT_PREFIX = "tensor_"


def check_archive(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` is a ``.pt2`` archive safe to load."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path}: not a .pt2 archive ({e})") from e
    with zf:
        for info in zf.infolist():
            name = info.filename
            where = f"{path}: entry {name}"
            if name.endswith(COMPILED) or "/aotinductor/" in name:
                raise InputError(f"{where} holds compiled code; refusing to load it")
            constants = name.endswith("_constants_config.json")
            if constants or name.endswith("_weights_config.json"):
                _check_config(zf.read(name), where, constants)
            elif name.endswith(".pt"):
                _check_torch_blob(zf.read(name), where)


def _check_config(raw: bytes, where: str, constants: bool) -> None:
    try:
        entries = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{where}: unreadable payload config ({e})") from e
    for fqn, meta in entries.items():
        if meta.get("use_pickle", True):
            raise InputError(f"{where}: {fqn} is stored as a pickle; refusing to unpickle it")
        if constants and not str(meta.get("path_name", "")).startswith(TENSOR_CONSTANT_PREFIX):
            raise InputError(f"{where}: {fqn} is a pickled object, not a tensor; refusing it")


def _check_torch_blob(raw: bytes, where: str) -> None:
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as e:
        raise InputError(f"{where} is not plain tensor data; refusing to unpickle it ({e})") from e
