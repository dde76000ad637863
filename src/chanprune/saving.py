"""Saving pruned models: a torch.export program (``.pt2``) with a dynamic batch dimension."""

from __future__ import annotations

from pathlib import Path

import torch

from .capture import as_input_tuple


def to_program(module: torch.nn.Module, example_inputs: object) -> torch.export.ExportedProgram:
    """``torch.export`` of a pruned module that accepts any batch size."""
    inputs = as_input_tuple(example_inputs)
    # a batch of 1 would be specialised (the 0/1 rule): trace with two copies instead
    inputs = tuple(torch.cat([x, x]) if x.dim() and x.shape[0] == 1 else x for x in inputs)
    shapes = tuple({0: torch.export.Dim.AUTO} if x.dim() else None for x in inputs)
    return torch.export.export(module, inputs, dynamic_shapes=shapes)


def save_program(module: torch.nn.Module, example_inputs: object, path: str | Path) -> None:
    torch.export.save(to_program(module, example_inputs), str(path))
