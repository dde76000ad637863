"""Output paths checked before any long work starts, so a typo costs seconds, not minutes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError


def check_writable(path: str | Path, what: str = "output", suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a Path, or an :class:`InputError` saying why it cannot be written."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{what} {path}: expected a file ending in {' or '.join(suffixes)}")
    parent = path.parent
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder, expected a file name")
    if not parent.exists():
        raise InputError(f"{what} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: {parent} is not a folder")
    try:  # the only reliable test (root ignores permission bits; read-only mounts do not)
        fd, probe = tempfile.mkstemp(prefix=".chanprune-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{what} {path}: folder {parent} is not writable ({e.strerror})") from e
    return path
