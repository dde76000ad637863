"""Errors raised by chanprune. Every message names the layer, op or parameter at fault."""

from __future__ import annotations


class ChanpruneError(Exception):
    """Base class: anything chanprune refuses to do, with the reason."""


class InputError(ChanpruneError, ValueError):
    """A bad argument: an amount out of range, an unknown heuristic, inputs of the wrong shape."""


class CaptureError(ChanpruneError):
    """The model could not be turned into a graph (torch.export failed)."""


class MaskError(ChanpruneError, KeyError):
    """Masks that name unknown parameters or channels out of range."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ExportError(ChanpruneError):
    """The exported model does not reproduce the masked model (names the first diverging node)."""
