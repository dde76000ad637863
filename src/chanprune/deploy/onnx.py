"""Deployment: ONNX export of a pruned module and an ONNX Runtime runner for it.

The exported module goes through ``torch.export`` (dynamic batch, as for ``.pt2``) and the
dynamo ONNX exporter; the result is checked in ONNX Runtime against PyTorch on the example
inputs, so a deployed model never silently differs.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils import _pytree as pytree

from ..capture.trace import as_input_tuple, run_model
from ..deps import require
from ..errors import ExportError
from ..paths import check_writable
from ..rewrite.verify import compare
from .saving import to_program

if TYPE_CHECKING:
    import onnxruntime


def to_onnx(
    module: torch.nn.Module, example_inputs: object, path: str | Path, check: bool = True
) -> Path:
    """Write ``module`` as one ``.onnx`` file (any batch size); with ``check`` its ONNX Runtime
    outputs must match PyTorch's on ``example_inputs`` (raises :class:`ExportError`)."""
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    if check:
        require("onnxruntime", "checking the ONNX export")
    path = check_writable(path, "ONNX file", (".onnx",))
    inputs = as_input_tuple(example_inputs)
    program = to_program(module, inputs)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps
        onnx_program = torch.onnx.export(program, dynamo=True, optimize=True, verbose=False)
        onnx_program.save(str(path), external_data=False)
    if check:
        session = ort_session(path)
        got = session.run(None, _feeds(session, inputs))
        want = pytree.tree_leaves(run_model(module, inputs))
        result = compare(want, [torch.from_numpy(np.asarray(g)) for g in got])
        if not result.ok:
            raise ExportError(
                f"{path}: ONNX Runtime outputs differ from PyTorch's "
                f"(max |diff| {result.max_abs_diff:.3g} of max |y| {result.max_abs_ref:.3g})"
            )
    return path


def ort_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session of the ``.onnx`` file ``path`` using ``threads`` intra-op
    threads (default: torch's), with spinning idle threads turned off so that it does not
    steal the cores from whatever runs next."""
    ort = require("onnxruntime", "running ONNX models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # idle ORT threads otherwise spin for a while after each run, stealing the cores from
    # whatever runs next (in a side-by-side benchmark: the PyTorch contenders)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_runner(
    module: torch.nn.Module, example_inputs: object, threads: int | None = None
) -> Callable[..., list[np.ndarray]]:
    """``module`` in ONNX Runtime, called like the module (tensors in, numpy arrays out); for
    latency comparisons. Exported to a temporary file and checked against PyTorch first."""
    inputs = as_input_tuple(example_inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = to_onnx(module, inputs, Path(tmp) / "model.onnx")
        session = ort_session(path, threads)  # the session holds the model; the file may go
    return lambda *xs: session.run(None, _feeds(session, xs))


def _feeds(session, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return {n: x.detach().cpu().numpy() for n, x in zip(names, inputs, strict=True)}
