"""The README's deployment story through the real console command, and its error messages."""

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytest.importorskip("torchvision")
EXE = shutil.which("chanprune") or f"{sys.executable} -m chanprune.cli"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EXE.split(), *args], capture_output=True, text=True, timeout=900, env=env
    )


def python(code: str, cwd) -> subprocess.CompletedProcess:
    """A fresh interpreter, as a user's own script would be."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
    )


LOAD_AND_COMPARE = """
    import numpy as np, torch, torchvision, onnxruntime as ort, chanprune
    pruned = chanprune.load_pruned(torchvision.models.{name}(), "{name}_pruned.json")
    program = chanprune.load_program("{name}_pruned.pt2").module()
    x = torch.randn(3, 3, {size}, {size})
    with torch.no_grad():
        y, y2 = pruned(x).numpy(), program(x).numpy()
    sess = ort.InferenceSession("{name}_pruned.onnx")
    (z,) = sess.run(None, {{sess.get_inputs()[0].name: x.numpy()}})
    scale = np.abs(y).max()
    print("shape", y.shape, "onnx", np.abs(y - z).max() / scale, np.abs(y - y2).max() / scale)
    assert y.shape == (3, 1000)
    assert np.abs(y - z).max() <= 1e-4 * scale and np.abs(y - y2).max() <= 1e-4 * scale
"""


def prune_to_files(tmp_path, name, size):
    """``chanprune prune`` to every format (two runs: --out takes one file)."""
    r = run(
        "prune", name, "--input-size", str(size), "--runs", "2",
        "--out", str(tmp_path / f"{name}_pruned.json"),
        "--onnx", str(tmp_path / f"{name}_pruned.onnx"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for ext in ("json", "safetensors", "onnx"):
        assert f"wrote {tmp_path / f'{name}_pruned.{ext}'}" in r.stdout
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.strip()}
    assert float(rows["params"][2]) < 1 and float(rows["latency"][3]) > 0
    assert "copied" in rows and "segs" in rows
    for step in ("load model", "mask (capture, score)", "export (reorder, verify)", "latency"):
        assert f"prune {name}: {step}" in r.stderr  # progress bars on stderr
    r = run("prune", name, "--input-size", str(size), "--runs", "0", "--quiet", "--plan",
            "--out", str(tmp_path / f"{name}_pruned.pt2"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "export plan (method=reorder)" in r.stdout and "bytes/sample" in r.stdout
    return tmp_path


def load_in_a_fresh_process(folder, name, size):
    r = python(LOAD_AND_COMPARE.format(name=name, size=size), folder)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "shape (3, 1000)" in r.stdout


@pytest.fixture(scope="module")
def r18_files(tmp_path_factory):
    return prune_to_files(tmp_path_factory.mktemp("r18"), "resnet18", 32)


def test_prune_save_load_in_a_fresh_process_and_run_in_onnxruntime(r18_files):
    load_in_a_fresh_process(r18_files, "resnet18", 32)


@pytest.mark.slow
def test_readme_flow_on_resnet50(tmp_path):
    load_in_a_fresh_process(prune_to_files(tmp_path, "resnet50", 64), "resnet50", 64)


@pytest.mark.parametrize("ext", ["json", "pt2"])
def test_saved_models_are_models_too(r18_files, ext):
    src = r18_files / f"resnet18_pruned.{ext}"
    r = run("prune", str(src), "--amount", "0.2", "--runs", "0", "--quiet")  # prune further
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{src.name}: input (1, 3, 32, 32)" in r.stdout
    rows = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines() if ln.strip()}
    assert float(rows["params"][2]) < 1


def test_spec_records_the_model_and_its_input(r18_files):
    doc = json.loads((r18_files / "resnet18_pruned.json").read_text())
    assert doc["model"] == "resnet18" and doc["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert doc["weights"] == "resnet18_pruned.safetensors" and doc["method"] == "reorder"


def test_pickled_checkpoints_are_refused(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"\x80\x04K\x01.")
    r = run("prune", str(tmp_path / "model.pth"))
    assert r.returncode == 2 and "pickled checkpoints are not loaded" in r.stderr


def test_missing_model_file(tmp_path):
    r = run("prune", str(tmp_path / "nope.pt2"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_missing_optional_dependency_says_which_extra(tmp_path):
    shim = tmp_path / "shim" / "onnxruntime"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('onnxruntime hidden by the test')\n")
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim.parent), env.get("PYTHONPATH", "")])
    r = run("prune", "resnet18", "--onnx", str(tmp_path / "m.onnx"), env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "--onnx needs onnxruntime" in r.stderr
    assert "pip install 'chanprune[deploy]'" in r.stderr
    assert "mask" not in r.stderr  # refused before any work


@pytest.mark.parametrize(
    "flag, path, message",
    [
        ("--out", "{tmp}/m.pt", "expected a file ending in .pt2 or .json"),
        ("--out", "{file}/m.pt2", "is not a folder"),
        ("--onnx", "{tmp}/folder.onnx", "is a folder"),
        ("--onnx", "{tmp}/missing/m.onnx", "does not exist"),
    ],
)
def test_unwritable_outputs_fail_fast(tmp_path, flag, path, message):
    (tmp_path / "file").write_text("")
    (tmp_path / "folder.onnx").mkdir()
    path = path.format(tmp=tmp_path, file=tmp_path / "file")
    r = run("prune", "resnet18", flag, path)
    assert r.returncode == 2 and message in r.stderr and flag in r.stderr, r.stderr[-2000:]


def test_read_only_folder(tmp_path):
    try:  # root ignores permission bits; a read-only mount does not
        tempfile.mkstemp(dir="/sys")
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    r = run("prune", "resnet18", "--out", "/sys/m.pt2")
    assert r.returncode == 2 and "is not writable" in r.stderr


def test_weights_load_into_a_named_model(tmp_path):
    import torch
    import torchvision
    from safetensors.torch import save_file

    from chanprune.cli.source import load_source

    trained = torchvision.models.resnet18()
    save_file(trained.state_dict(), str(tmp_path / "mine.safetensors"))
    src = load_source("resnet18", tmp_path / "mine.safetensors")
    for k, v in trained.state_dict().items():
        assert torch.equal(src.model.state_dict()[k], v), k
    save_file({"conv1.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    r = run("prune", "resnet18", "--weights", str(tmp_path / "other.safetensors"))
    assert r.returncode == 2 and "does not fit the model" in r.stderr, r.stderr[-2000:]
