"""The console command, driven as a user would: through the installed entry point."""

import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torchvision")
EXE = shutil.which("chanprune") or f"{sys.executable} -m chanprune.cli"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE.split(), *args], capture_output=True, text=True, timeout=600)


def test_prune_prints_before_and_after_and_writes_a_program(tmp_path):
    out = tmp_path / "r18.pt2"
    r = run("prune", "resnet18", "--amount", "0.3", "--input-size", "32", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "before" in r.stdout and "after" in r.stdout and "outputs verified" in r.stdout
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.strip()}
    assert 0 < float(rows["params"][2]) < 1 and 0 < float(rows["MACs"][2]) < 1  # both dropped
    import torch

    program = torch.export.load(out)
    assert program.module()(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


def test_prune_recalibrates_batchnorm_on_the_calibration_images(tmp_path):
    from fake_idx import write_fake_fashion_mnist

    root = write_fake_fashion_mnist(tmp_path / "fm", n_train=40)
    args = ("prune", "resnet18", "--input-size", "32", "--runs", "0", "--quiet")
    calib = ("--calibrate", "3", "--calibrate-batch", "4", "--data", str(root))
    r = run(*args, *calib)
    assert r.returncode == 0, r.stderr
    assert "BatchNorm recalibrated on 12 images; exported" in r.stdout
    r = run(*args, *calib, "--input-shape", "3", "32", "48")
    assert r.returncode == 2
    assert "fashion-mnist images are (3, 48, 48), the model's input is (3, 32, 48)" in r.stderr
    r = run(*args, "--calibrate", "0")
    assert r.returncode == 2 and "--calibrate: expected a positive integer" in r.stderr


def test_mistyped_model_name_suggests_close_ones():
    r = run("prune", "resnet5O")
    assert r.returncode == 2
    assert "unknown model 'resnet5O'" in r.stderr and "resnet50" in r.stderr


def test_bad_amount_is_a_clear_error():
    r = run("prune", "resnet18", "--amount", "1.5", "--input-size", "32")
    assert r.returncode == 2 and "amount must be" in r.stderr


def test_group_quantum_reaches_the_export_and_its_spec(tmp_path):
    import json

    spec = tmp_path / "regnet.json"
    args = ("prune", "regnet_y_400mf", "--input-size", "32", "--runs", "0", "--quiet")
    r = run(*args, "--amount", "0.5", "--group-quantum", "1", "--out", str(spec))
    assert r.returncode == 0, r.stderr
    assert json.loads(spec.read_text())["group_quantum"] == 1
    r = run(*args, "--group-quantum", "0")
    assert r.returncode == 2 and "--group-quantum: expected a positive integer" in r.stderr


def test_width_quantum_reaches_the_export_and_its_spec(tmp_path):
    import json

    spec = tmp_path / "r18.json"
    args = ("prune", "resnet18", "--input-size", "32", "--runs", "0", "--quiet")
    r = run(*args, "--amount", "0.3", "--width-quantum", "16", "--out", str(spec))
    assert r.returncode == 0, r.stderr
    doc = json.loads(spec.read_text())
    assert doc["width_quantum"] == 16
    assert doc["tensors"]["layer1.0.conv1.weight"]["shape"][0] == 48  # 45 kept -> 48
    r = run(*args, "--width-quantum", "0")
    assert r.returncode == 2 and "--width-quantum: expected a positive integer" in r.stderr


def test_unwritable_output_path():
    r = run("prune", "resnet18", "--out", "/nonexistent/dir/m.pt2")
    assert r.returncode == 2 and "does not exist" in r.stderr


def _bench_resnet18_row(tmp_path, which: str, table: str, *args: str) -> list[str]:
    """Run ``chanprune bench WHICH`` on resnet18 at 64 px into tmp_path; its table row's cells."""
    r = run(
        "bench", which, "--", "--models", "resnet18", "--size", "64", "--out", str(tmp_path), *args
    )
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / table).read_text().splitlines()
    return [c.strip() for c in next(x for x in lines if x.startswith("| resnet18 |")).split("|")]


def test_bench_runs_the_copies_benchmark_and_writes_its_table(tmp_path):
    cells = _bench_resnet18_row(tmp_path, "copies", "copies.md", "--amounts", "0.5")
    if not any("not importable" in c for c in cells):  # apple-upscale installed: same masks
        upscale, reorder = float(cells[4]), float(cells[6])
        assert reorder <= upscale


def test_bench_times_a_cold_export_against_apple_upscale(tmp_path):
    cells = _bench_resnet18_row(tmp_path, "export-time", "export_time.md", "--reps", "1")
    assert float(cells[2]) > 0 and float(cells[3]) > 0  # chanprune, fast path and fallback
    assert (tmp_path / "export_time.json").is_file()


def test_bench_rejects_an_unknown_benchmark():
    r = run("bench", "nope")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_the_commands_print_chanprune_warnings_and_hide_the_rest(capsys):
    import warnings

    from chanprune.cli.prune import own_warnings_only

    with own_warnings_only():
        warnings.warn("chanprune: 1 op(s) without a channel rule are barriers", stacklevel=1)
        warnings.warn("chanprune: 1 op(s) without a channel rule are barriers", stacklevel=1)
        warnings.warn("torch.export: something internal", stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("warning: chanprune: 1 op(s)") == 1 and "torch.export" not in err


def test_prune_with_taylor_scores_on_the_calibration_images_and_refuses_without(tmp_path):
    from fake_idx import write_fake_fashion_mnist

    root = write_fake_fashion_mnist(tmp_path / "fm", n_train=40)
    args = ("prune", "resnet18", "--input-size", "32", "--runs", "0", "--quiet")
    r = run(*args, "--heuristic", "taylor", "--target-macs", "0.6")
    assert r.returncode == 2 and "--heuristic taylor" in r.stderr and "--calibrate N" in r.stderr
    calib = ("--calibrate", "2", "--calibrate-batch", "4", "--data", str(root))
    r = run(*args, "--heuristic", "taylor", "--target-macs", "0.6", *calib)
    assert r.returncode == 0, r.stderr
    assert "taylor" in r.stdout and "outputs verified" in r.stdout
