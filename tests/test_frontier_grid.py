"""The frontier study's eval stage and report (benchmarks/frontier_grid.py, frontier_report.py),
on a tiny model and hand-written mask records: nothing here is timed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import frontier_grid as grid
import frontier_report as report


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()


def data(n: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(3, 8, 8, generator=g), int(torch.randint(10, (1,), generator=g)))
        for _ in range(n)
    ]


def write_mask(
    tmp: Path, contender: str, target: float, rows: list[int], run: int, backend: str = "eager"
) -> dict:
    model = tiny()
    before = {n: p.detach() == 0 for n, p in model.named_parameters()}
    with torch.no_grad():
        for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
            dict(model.named_parameters())[name][rows] = 0
    rec = {
        "key": grid.key("tiny", contender, "l1", target, backend=backend),
        "model": "tiny",
        "contender": contender,
        "heuristic": "l1",
        "target": target,
        "run": run,
        "ratio": target,
        "predicted": target,
        "met": True,
    }
    if backend != "eager":
        rec.update(backend=backend, method="dense")
    (tmp / "masks").mkdir(exist_ok=True)
    np.savez_compressed(grid.mask_file(tmp, rec), **grid.zeros_of(model, before))
    grid.append_jsonl(tmp / "frontier_masks.jsonl", rec)
    return rec


def test_zeros_round_trip_through_replay():
    model = tiny()
    before = {n: p.detach() == 0 for n, p in model.named_parameters()}
    with torch.no_grad():
        model[0].weight[[1, 4]] = 0
        model[3].weight[:, 2] = 0
    zeros = grid.zeros_of(model, before)
    assert set(zeros) == {"0.weight", "3.weight"}
    fresh = tiny()
    held = grid.replay(fresh, zeros)
    for (n, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), n
    assert int(held["0.weight"].sum()) == 2 * 27


def test_eval_stage_scores_checks_exports_resumes_and_follows_redone_masks(tmp_path):
    write_mask(tmp_path, "constrained", 0.7, [0, 1, 2], run=1)
    write_mask(tmp_path, "mixed", 0.7, [5], run=2)
    train_set, test_set = data(64, 0), data(40, 1)

    def run() -> list[dict]:
        grid.eval_stage(lambda _n: tiny(), tmp_path, tmp_path, train_set, train_set, test_set, 8)
        return grid.read_jsonl(tmp_path / "frontier_eval.jsonl")

    rows = run()
    assert [r["key"] for r in rows] == ["tiny-constrained-l1-0.7", "tiny-mixed-l1-0.7"]
    for r in rows:
        assert len(r["recalibrated"]) == len(grid.SEEDS) and r["export_identical"] is True
        assert 0 <= r["post"] <= 100
    assert [r["mask_run"] for r in rows] == [1, 2]
    assert len(run()) == 2  # resumed: nothing left to do
    write_mask(tmp_path, "mixed", 0.7, [3, 6], run=3)  # a redone mask replaces the old one
    rows = run()
    assert len(rows) == 3 and rows[-1]["mask_run"] == 3
    recs = {r["key"]: r for r in report.joined(tmp_path)}
    assert recs["tiny-mixed-l1-0.7"]["eval"]["mask_run"] == 3
    (old,) = report.superseded(tmp_path)  # the replaced mask stays in the report
    assert old["run"] == 2 and old["eval"]["mask_run"] == 2 and old["now"]["run"] == 3
    assert "| tiny-mixed-l1-0.7 |" in "\n".join(report.superseded_section(tmp_path))


def test_amounts_stage_masks_each_contender_at_equal_amount_and_resumes(tmp_path):
    train_set, test_set = data(64, 0), data(40, 1)

    def run() -> list[dict]:
        grid.amounts_stage(
            ["tiny"], lambda _n: tiny(), tmp_path, train_set, test_set, 8, amounts=(0.25, 0.5)
        )
        return grid.read_jsonl(tmp_path / "frontier_amounts.jsonl")

    rows = run()
    contenders = ("constrained", "input", "output")
    assert [r["key"] for r in rows] == [
        f"tiny-{c}-l1-a{a:g}" for c in contenders for a in (0.25, 0.5)
    ]
    macs = {(r["contender"], r["amount"]): r["macs_ratio"] for r in rows}
    for c in contenders:
        assert 0 < macs[c, 0.5] < macs[c, 0.25] < 1
    assert all(len(r["recalibrated"]) == len(grid.SEEDS) for r in rows)
    assert len(run()) == 6  # resumed: nothing left to do
    text = "\n".join(report.amounts_section(tmp_path, ["tiny"]))
    assert "## Equal amount (the paper's view)" in text and "### tiny" in text
    assert "| 0.25 | " in text and "| 0.5 | " in text


def test_report_verdict_counts_only_non_overlapping_ranges(tmp_path):
    assert report.compare([80, 81, 82], [78, 79, 79.5]) == "better"
    assert report.compare([78, 79], [79, 80]) == "tie"  # touching ranges overlap
    assert report.compare([70, 71], [75, 76]) == "worse"
    recs = []
    for t, mixed, cons in ((0.9, [90, 91], [88, 89]), (0.5, [60, 61], [60.5, 62])):
        for c, v in (("mixed", mixed), ("constrained", cons)):
            recs.append(
                {
                    "model": "m",
                    "contender": c,
                    "heuristic": "l1",
                    "target": t,
                    "ratio": t,
                    "met": True,
                    "eval": {"recalibrated": v},
                }
            )
    (line,) = report.verdict(recs, "m")
    assert "**mixed (l1)** vs constrained (l1)" in line
    assert "beyond the seed spread at 1 (0.9)" in line and "within it at 1" in line
    assert "(from -0.75 to +2.00)." in line
    recs[0]["met"], recs[0]["ratio"] = False, 0.95  # mixed missed 0.9, slower: not compared
    (line,) = report.verdict(recs, "m")
    assert "1 targets" in line and "not at equal latency (a target missed): 0.9" in line
    recs[0]["ratio"] = 0.85  # ... unless mixed is both faster and more accurate: it dominates
    (line,) = report.verdict(recs, "m")
    assert "2 targets" in line and "beyond the seed spread at 1 (0.9)" in line


def test_the_default_is_judged_against_the_best_constrained_of_any_heuristic():
    def rec(c, h, t, v):
        return {
            "model": "m",
            "contender": c,
            "heuristic": h,
            "target": t,
            "ratio": t,
            "met": True,
            "eval": {"recalibrated": v},
        }

    recs = [
        rec("mixed", "taylor", 0.5, [80, 81]),
        rec("constrained", "taylor", 0.5, [70, 71]),
        rec("constrained", "l1", 0.5, [79, 82]),  # the better constrained here: a tie
        rec("mixed", "taylor", 0.7, [90, 91]),
        rec("constrained", "taylor", 0.7, [85, 86]),
        rec("constrained", "l1", 0.7, [84, 85]),
    ]
    lines = report.verdict(recs, "m")
    assert lines[0].startswith("- **default: mixed (taylor)** vs the best constrained")
    assert "beyond the seed spread at 1 (0.7)" in lines[0] and "within it at 1" in lines[0]
    assert any(line.startswith("- **mixed (taylor)** vs constrained (taylor)") for line in lines)


def test_masks_of_several_calibration_seeds_merge_into_one_config():
    """A config masked on several calibration samples reports every mask's top-1 together, so
    its spread covers the mask's own variance; met only if every mask met the target."""

    def rec(seed, ratio, met, vals):
        return {
            "key": grid.key("m", "mixed", "taylor", 0.5, seed),
            "model": "m",
            "contender": "mixed",
            "heuristic": "taylor",
            "target": 0.5,
            "mask_seed": seed,
            "ratio": ratio,
            "predicted": 0.5,
            "met": met,
            "eval": {"post": 10.0 * (seed + 1), "recalibrated": vals, "export_identical": True},
        }

    assert grid.key("m", "mixed", "taylor", 0.5, 0) == "m-mixed-taylor-0.5"
    assert grid.key("m", "mixed", "taylor", 0.5, 2) == "m-mixed-taylor-0.5-m2"
    group = [rec(2, 0.52, True, [70, 71]), rec(0, 0.50, True, [80, 81]), rec(1, 0.48, True, [75])]
    got = report.merged(group)
    assert got["masks"] == 3 and got["key"] == "m-mixed-taylor-0.5"  # seed 0 names it
    assert got["eval"]["recalibrated"] == [80, 81, 75, 70, 71]
    assert got["ratio"] == 0.5 and got["met"] and got["eval"]["post"] == 20.0
    group[0]["met"] = False
    assert not report.merged(group)["met"]
    group[0]["eval"] = None  # not evaluated yet: left out
    assert report.merged(group)["masks"] == 2
    assert report.merged([group[1]])["masks"] == 1


def test_ort_stage_measures_constrained_and_default_masks_once_per_method(tmp_path):
    """The ORT stage measures every constrained mask (reorder only: it has no copies) and every
    mixed mask with both methods, not the other contenders, once per mask run; the report
    shows them beside the eager ratio."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    write_mask(tmp_path, "constrained", 0.7, [0, 1, 2], run=1)
    write_mask(tmp_path, "mixed", 0.7, [5], run=2)
    write_mask(tmp_path, "input", 0.7, [4], run=3)

    def run() -> list[dict]:
        grid.ort_stage(["tiny"], lambda _n: tiny(), tmp_path, tmp_path, rounds=3)
        return grid.read_jsonl(tmp_path / "frontier_ort.jsonl")

    rows = run()
    assert [(r["key"], r["method"]) for r in rows] == [
        ("tiny-constrained-l1-0.7", "reorder"),
        ("tiny-mixed-l1-0.7", "reorder"),
        ("tiny-mixed-l1-0.7", "dense"),
    ]
    assert [r["mask_run"] for r in rows] == [1, 2, 2]
    assert all(r["ort_ratio"] > 0 and r["rounds"] == 3 and r["eager_ratio"] == 0.7 for r in rows)
    assert len(run()) == 3  # resumed: nothing left to do
    write_mask(tmp_path, "mixed", 0.7, [3, 6], run=4)  # a redone mask is measured again
    rows = run()
    assert len(rows) == 5 and [r["mask_run"] for r in rows[-2:]] == [4, 4]
    text = "\n".join(report.ort_section(tmp_path, ["tiny"]))
    assert "## ONNX Runtime" in text and "over 2 masks" in text
    assert "| ORT reorder (95% interval) | ORT dense (95% interval) |" in text
    assert "| 0.7 | constrained l1 | 0.700 | " in text and text.count(" | - |") == 1
    assert "| 0.7 | mixed l1 | 0.700 | " in text


def test_deciding_keys_are_every_default_mask_and_the_best_constrained_per_target(tmp_path):
    """The ORT stage measures the pair the product goal compares: every mask of the default
    config and the most accurate constrained config that met the target."""

    def add(contender, heuristic, target, top1, met=True, seed=0):
        k = grid.key("m", contender, heuristic, target, seed)
        mask = {
            "key": k,
            "model": "m",
            "contender": contender,
            "heuristic": heuristic,
            "target": target,
            "mask_seed": seed,
            "run": 1,
            "ratio": target if met else target + 0.1,
            "predicted": target,
            "met": met,
        }
        grid.append_jsonl(tmp_path / "frontier_masks.jsonl", mask)
        ev = {"key": k, "mask_run": 1, "post": top1, "recalibrated": [top1, top1]}
        grid.append_jsonl(tmp_path / "frontier_eval.jsonl", ev)

    add("mixed", "taylor", 0.5, 80)
    add("mixed", "taylor", 0.5, 79, seed=1)
    add("constrained", "l1", 0.5, 70)
    add("constrained", "taylor", 0.5, 75)  # the most accurate constrained at 0.5
    add("constrained", "l1", 0.7, 88, met=False)
    add("constrained", "taylor", 0.7, 85)  # less accurate, but the only one at equal latency
    add("input", "l1", 0.5, 90)  # not a contender of the pair
    assert report.deciding_keys(tmp_path, ["m"]) == {
        "m-mixed-taylor-0.5",
        "m-mixed-taylor-0.5-m1",
        "m-constrained-taylor-0.5",
        "m-constrained-taylor-0.7",
    }
    assert report.deciding_keys(tmp_path, ["other"]) == set()


def test_ort_faster_counts_a_family_only_where_every_interval_is_apart():
    def pair(contender, target, ratio, lo, hi):
        return {"contender": contender, "target": target}, {
            "ort_ratio": ratio,
            "interval": [lo, hi],
        }

    pairs = [
        pair("mixed", 0.9, 0.80, 0.79, 0.81),
        pair("constrained", 0.9, 0.85, 0.84, 0.86),  # default faster at 0.9
        pair("mixed", 0.7, 0.60, 0.59, 0.61),
        pair("mixed", 0.7, 0.75, 0.74, 0.76),  # a second default mask, slower
        pair("constrained", 0.7, 0.65, 0.64, 0.66),  # between them: neither
        pair("mixed", 0.5, 0.50, 0.49, 0.51),
        pair("constrained", 0.5, 0.40, 0.39, 0.41),  # constrained faster at 0.5
        pair("mixed", 0.3, 0.30, 0.29, 0.31),  # no constrained mask measured: left out
    ]
    assert report.ort_faster(pairs) == (
        "At the same eager target, the default masks run faster in ORT at 1 targets (0.9), "
        "the constrained masks at 1 (0.5), and the intervals of all their masks overlap at 1 "
        "(0.7)."
    )


def test_masks_aimed_at_ort_are_configs_of_their_own_checked_with_their_method(
    tmp_path, monkeypatch
):
    """A target measured on ORT gets its own key, is evaluated with the export method its
    ratio holds for (dense), and is reported in its own section, never merged into the eager
    configs of the same contender and target."""
    assert grid.key("m", "mixed", "taylor", 0.5, 1, "ort") == "m-mixed-taylor-0.5-m1-ort"
    assert grid.key("m", "mixed", "taylor", 0.5) == "m-mixed-taylor-0.5"
    write_mask(tmp_path, "mixed", 0.7, [5], run=1)
    write_mask(tmp_path, "mixed", 0.7, [5], run=2, backend="ort")
    write_mask(tmp_path, "constrained", 0.7, [0, 1], run=3)
    write_mask(tmp_path, "constrained", 0.7, [0, 1], run=4, backend="ort")
    train_set, test_set = data(64, 0), data(40, 1)
    methods, export = [], grid.chanprune.export

    def spy(model, x, method="reorder", **kw):
        methods.append(method)
        return export(model, x, method=method, **kw)

    monkeypatch.setattr(grid.chanprune, "export", spy)
    grid.eval_stage(lambda _n: tiny(), tmp_path, tmp_path, train_set, train_set, test_set, 8)
    assert sorted(methods) == ["dense", "dense", "reorder", "reorder"]
    rows = {r["key"]: r for r in grid.read_jsonl(tmp_path / "frontier_eval.jsonl")}
    assert rows["tiny-mixed-l1-0.7-ort"]["export_identical"] is True
    assert {r["key"] for r in report.joined(tmp_path)} == {
        "tiny-mixed-l1-0.7",
        "tiny-constrained-l1-0.7",
    }
    assert {r["key"] for r in report.joined(tmp_path, "ort")} == {
        "tiny-mixed-l1-0.7-ort",
        "tiny-constrained-l1-0.7-ort",
    }
    text = "\n".join(report.ort_targets_section(tmp_path, ["tiny"]))
    assert "## Targets on ONNX Runtime" in text and "### tiny" in text
    assert "| 0.7 | constrained | l1 | 0.700 |" in text and "| 0.7 | mixed | l1 | 0.700 |" in text
    assert "tiny-mixed-l1-0.7-ort" not in report.deciding_keys(tmp_path, ["tiny"])


def test_a_verdict_with_pairs_but_none_at_equal_latency_says_so():
    def rec(c, ratio, met, v):
        return {
            "model": "m",
            "contender": c,
            "heuristic": "taylor",
            "target": 0.5,
            "ratio": ratio,
            "met": met,
            "eval": {"recalibrated": v, "finetuned": v},
        }

    recs = [rec("mixed", 0.5, True, [90, 91]), rec("constrained", 0.55, False, [90.5, 91.5])]
    (line, _) = report.verdict(recs, "m", "finetuned")
    assert line == (
        "- **default: mixed (taylor)** vs the best constrained (any heuristic) (finetuned): no "
        "target compared; not at equal latency (a target missed): 0.5."
    )
