"""Saving and deployment on top of the pipeline: ``.pt2`` programs and pruning specs without pickle
(``saving``, ``spec``, ``archive``), ONNX export checked in ONNX Runtime and non-spinning
sessions (``onnx``).
"""

from .onnx import ort_runner, ort_session, to_onnx
from .saving import load_program, load_pruned, read_spec, save_program, save_pruned, to_program

__all__ = [
    "load_program",
    "load_pruned",
    "ort_runner",
    "ort_session",
    "read_spec",
    "save_program",
    "save_pruned",
    "to_onnx",
    "to_program",
]
