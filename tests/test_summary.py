"""The README's results block is what benchmarks/summary.py makes of the committed results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "summary.py"


def _summary():
    spec = importlib.util.spec_from_file_location("summary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_block_matches_the_result_files():
    assert _summary().main(["--check"]) == 0


def test_a_stale_block_is_reported(tmp_path, monkeypatch):
    summary = _summary()
    readme = tmp_path / "README.md"
    text = summary.README.read_text().replace("| resnet50 |", "| resnet-50 |", 1)
    readme.write_text(text)
    monkeypatch.setattr(summary, "README", readme)
    assert summary.main(["--check"]) == 1
