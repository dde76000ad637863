"""ONNX export of pruned models, run in ONNX Runtime against PyTorch; missing extras."""

import sys

import numpy as np
import pytest
import torch
from test_saving import pruned_net

import chanprune
from chanprune.deps import MissingDependencyError, require

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from chanprune.deploy import ort_runner, ort_session, to_onnx


@pytest.mark.parametrize("method", ["reorder", "baseline"])
def test_onnx_runs_in_onnxruntime_like_pytorch_at_any_batch(tmp_path, method):
    model, pruned, x = pruned_net("input", method)
    path = to_onnx(pruned, x, tmp_path / "net.onnx")
    session = ort_session(path)
    for n in (1, 4):
        xb = torch.randn(n, 3, 8, 8)
        (got,) = session.run(None, {session.get_inputs()[0].name: xb.numpy()})
        with torch.no_grad():
            want = model(xb).numpy()  # the masked model is the reference
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_ort_runner_is_called_like_the_module(tmp_path):
    _, pruned, x = pruned_net()
    run = ort_runner(pruned, x, threads=1)
    xb = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(run(xb)[0], pruned(xb).numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_path_must_end_in_onnx(tmp_path):
    _, pruned, x = pruned_net()
    with pytest.raises(chanprune.InputError, match=r"\.onnx"):
        to_onnx(pruned, x, tmp_path / "net.pt2")


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'chanprune\[deploy\]'"):
        require("onnxruntime", "running ONNX models")
    _, pruned, x = pruned_net()
    with pytest.raises(MissingDependencyError, match=r"onnxruntime.*chanprune\[deploy\]"):
        to_onnx(pruned, x, "unused.onnx")
