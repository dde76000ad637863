"""The latency benchmark's report, written from saved rounds (no models timed).

The report decides what the committed numbers claim, so its noise-aware verdicts are tested on
rounds whose answer is known: a contender slower in every round is slower beyond noise, one
that alternates is not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_benchmark, saved_latency_json

pytest.importorskip("matplotlib")


def _latency_module():
    return load_benchmark("latency")


def _row(upscale_over_ours: list[float]) -> dict:
    """One amount of one model, batch 8: every contender 100 ms but apple-upscale's reorder."""
    n = len(upscale_over_ours)
    names = ["unpruned", "baseline", "reorder", "ideal", "upscale_base", "baseline_upm"]
    names += ["reorder_upm", "ideal_upm"]
    rounds = {c: [100.0] * n for c in names}
    rounds["upscale"] = [100.0 * r for r in upscale_over_ours]
    latency = {c: sorted(v)[n // 2] for c, v in rounds.items()}
    return {"sizes": {}, "export": {}, "latency": {"8": latency}, "rounds": {"8": rounds}}


def _saved(tmp_path: Path) -> Path:
    results = [
        {"model": "steady", "amounts": {"0.5": _row([1.2] * 12)}, "errors": []},
        {"model": "behind", "amounts": {"0.5": _row([0.9] * 12)}, "errors": []},
        {"model": "noisy", "amounts": {"0.5": _row([0.8, 1.25] * 6)}, "errors": []},
    ]
    return saved_latency_json(tmp_path, results)


def test_the_speedup_table_tells_a_real_loss_from_noise(tmp_path):
    out = tmp_path / "out"
    assert _latency_module().main(["--report-from", str(_saved(tmp_path)), "--out", str(out)]) == 0
    md = (out / "latency.md").read_text()
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| 8 |")}
    assert "| 1.200 | 1.200-1.200 | yes |" in rows["steady"]
    assert "| 0.900 | 0.900-0.900 | no |" in rows["behind"]
    assert "| 0.800-1.250 |" in rows["noisy"]
    assert (
        "over all 3 cells:** chanprune's reorder export faster in 1, slower in behind @0.5 b8 "
        "(0.900-0.900); the rest are within noise." in md
    )


def test_a_rewritten_report_names_the_run_it_shows(tmp_path):
    out = tmp_path / "out"
    _latency_module().main(["--report-from", str(_saved(tmp_path)), "--out", str(out)])
    md = (out / "latency.md").read_text()
    assert "- date: 2026-01-01T00:00:00; wall time 1.0 min" in md
    assert "- report rewritten from that run's JSON by `python " in md
    assert json.loads((out / "latency.json").read_text())["run"]["date"] == "2026-01-01T00:00:00"


def test_a_json_without_the_run_header_is_refused(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"args": {}, "complete": True, "results": []}))
    assert _latency_module().main(["--report-from", str(path), "--out", str(tmp_path)]) == 2
