"""The README's results block is what benchmarks/summary.py makes of the committed results."""

from __future__ import annotations

from helpers import load_benchmark


def _summary():
    return load_benchmark("summary")


def test_the_readme_block_matches_the_result_files():
    assert _summary().main(["--check"]) == 0


def test_a_stale_block_is_reported(tmp_path, monkeypatch):
    summary = _summary()
    readme = tmp_path / "README.md"
    text = summary.README.read_text().replace("| resnet50 |", "| resnet-50 |", 1)
    readme.write_text(text)
    monkeypatch.setattr(summary, "README", readme)
    assert summary.main(["--check"]) == 1
