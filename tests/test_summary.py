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


def test_the_beyond_bullet_reads_what_coverage_writes():
    coverage = load_benchmark("coverage")
    exact = dict(model="m", family="video", stage="ok", params=10, params_after=7, prunable=8)
    exact.update(channels=8, pruned=0.3, qkv_pruned=None, fresh="exact", batch="exact")
    exact.update(size="n/a (fixed)", input_side="exact", input_pruned=0.3)
    not_at_3 = {**exact, "model": "n", "stage": "checks", "batch": "fails: E", "pruned": 0.1}
    text = "\n".join(coverage.beyond_section([exact, not_at_3], ["m", "n", "o"]))
    (bullet,) = _summary().beyond(text)
    assert "1/2 exact" in bullet and "1 of 2 prune at least 25%" in bullet
    assert _summary().beyond("## timm (1 of 1 models run)\n") == []
