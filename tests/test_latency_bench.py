"""The latency benchmark's own behaviour, without timing anything that is reported: a GPU run
on a machine without one, the smoke run end to end, efficiency and the contenders left out.

Timings on the test machine mean nothing (shared CPU, 3 rounds at 64x64): these tests check
what the benchmark computes and writes, never how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import load_benchmark, saved_latency_json

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def latency():
    return load_benchmark("latency")


def test_cuda_without_a_gpu_says_so_in_one_line_and_exits_non_zero(
    latency, monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert latency.main(["--device", "cuda", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "no CUDA device is available" in err and "benchmarks/gpu_check.sh" in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_width_quantum_below_one_is_refused_by_name(latency, capsys):
    with pytest.raises(SystemExit) as exit_:
        latency.build_parser().parse_args(["--width-quantum", "0"])
    assert exit_.value.code == 2
    assert "--width-quantum: must be a positive integer" in capsys.readouterr().err


def _failing_compile(*_, **__):
    """torch.compile where inductor cannot run: the error comes on the first call."""

    def run(*_):
        raise RuntimeError("inductor: no working C++ compiler")

    return run


def test_quick_runs_both_sides_end_to_end_and_reports_a_failed_compile(
    latency, monkeypatch, tmp_path
):
    monkeypatch.setattr(torch, "compile", _failing_compile)
    argv = ["--quick", "--models", "resnet18", "--no-upscale", "--no-ort", "--compile"]
    argv += ["--width-quantum", "3", "--out", str(tmp_path)]
    assert latency.main(argv) == 0
    saved = json.loads((tmp_path / "latency.json").read_text())
    assert [r["side"] for r in saved["results"]] == ["output", "input"]
    assert saved["run"]["width_quantum"] == {"asked": 3, "used": 3}
    for res in saved["results"]:
        row = res["amounts"]["0.5"]
        assert row["masking"]["side"] == res["side"]
        assert row["sizes"]["width_quantum"] == 3  # every export got the quantum asked for
        assert {"unpruned", "constrained", "baseline", "reorder", "ideal"} <= set(
            row["latency"]["1"]
        )
        assert not any(c.startswith("compile_") for c in row["latency"]["1"])
        why = "compile failed: RuntimeError: inductor: no working C++ compiler (batch 1)"
        assert row["status"]["compile_reorder"] == why
        assert row["status"]["compile_unpruned"] == why
    md = (tmp_path / "latency.md").read_text()
    for side in ("output", "input"):
        assert f"## Latency, {side} side, batch 1 (median ms)" in md
        assert f"### Against the unpruned model, {side} side, batch 1" in md
    assert "- width quantum: 3, passed to every export (--width-quantum 3)" in md
    assert "resnet18 (input) @0.5: compile_baseline: compile failed: RuntimeError" in md


def _row(unpruned: float, times: dict[str, float], macs: dict[str, int]) -> dict:
    """One cell at batch 8 whose contenders take the same time in each of 12 rounds."""
    rounds = {c: [t] * 12 for c, t in {"unpruned": unpruned, **times}.items()}
    sizes = {f"{c}_macs": m for c, m in macs.items()}
    latency = {c: v[0] for c, v in rounds.items()}
    return {"sizes": sizes, "export": {}, "latency": {"8": latency}, "rounds": {"8": rounds}}


def test_efficiency_is_the_paired_time_ratio_over_the_mac_ratio(latency):
    row = _row(
        100.0,
        {"reorder": 60.0, "baseline": 80.0, "ort_unpruned": 50.0, "ort_reorder": 25.0},
        {"unpruned": 1000, "reorder": 500, "baseline": 500},
    )
    assert latency.efficiency(row, "8", "reorder") == pytest.approx((0.6, 1.2))
    # a backend's contender against the same backend's unpruned model, MACs of its source
    assert latency.efficiency(row, "8", "ort_reorder") == pytest.approx((0.5, 1.0))
    assert latency.efficiency(row, "8", "ideal") == (None, None)  # not timed
    row["rounds"]["8"]["ort_baseline"] = [55.0] * 12
    assert latency.slower_exports(row, "8") == ["ORT baseline"]


def _saved(tmp_path: Path, results: list) -> Path:
    return saved_latency_json(tmp_path, results)


def test_the_report_gives_each_cell_its_efficiency_and_the_exports_not_faster(latency, tmp_path):
    times = {"constrained": 50.0, "baseline": 80.0, "reorder": 60.0, "ideal": 55.0}
    times.update(ort_unpruned=50.0, ort_constrained=20.0, ort_baseline=55.0, ort_reorder=25.0)
    macs = {"unpruned": 1000, "constrained": 400, "baseline": 500, "reorder": 500, "ideal": 500}
    row = _row(100.0, times, macs)
    row["status"] = {"compile_reorder": "compile failed: RuntimeError: x (batch 8)"}
    results = [{"model": "net", "side": "output", "amounts": {"0.5": row}, "errors": []}]
    out = tmp_path / "out"
    assert latency.main(["--report-from", str(_saved(tmp_path, results)), "--out", str(out)]) == 0
    md = (out / "latency.md").read_text()
    table = md.split("### Against the unpruned model, output side, batch 8")[1]
    line = next(x for x in table.splitlines() if x.startswith("| net |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:7] == ["40%", "50%", "0.50 (1.25)", "0.80 (1.60)", "0.60 (1.20)"]
    assert cells[-4:] == [
        "0.50 (1.00)",
        "—",
        "compile failed: RuntimeError: x (batch 8)",
        "ORT baseline",
    ]
    assert "faster than its unpruned model in 0 of 1 cells" in md


def test_the_committed_cpu_run_still_makes_its_report(latency, tmp_path):
    """A latency.json written before sides, efficiency and compile: the input side, no
    quantum recorded, every new column empty."""
    committed = ROOT / "benchmarks" / "results" / "latency.json"
    assert latency.main(["--report-from", str(committed), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "latency.md").read_text()
    assert "## Latency, input side, batch 8 (median ms)" in md
    assert "## Latency, output side" not in md
    assert "- width quantum: not recorded" in md
    assert "### Against the unpruned model, input side, batch 1" in md


def test_the_gpu_script_stops_at_once_without_a_gpu():
    """benchmarks/gpu_check.sh's arguments parse (argparse would exit 2 with its usage) and,
    with no GPU visible, it says so in one line and exits 2 without timing anything."""
    import os
    import subprocess

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    got = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", "/nonexistent/never"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 2
    assert got.stderr.strip().splitlines()[-1].startswith("latency.py: --device cuda: no CUDA")
