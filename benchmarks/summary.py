"""The README's results at a glance, read from the committed benchmark results (times nothing).

    python benchmarks/summary.py          # rewrite the README's results block and summary.png
    python benchmarks/summary.py --check  # exit 1 where the README's block differs from the results

The table and the plot come from ``benchmarks/results/latency.json`` (one batch, one amount; every
ratio paired per round as in ``latency.py``), the bullets from ``coverage.md``, ``copies.md`` and
``export_time.json``. The README holds the output between two markers, so its numbers never
drift from the result files: ``tests/test_summary.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from chanprune.evaluation.timing import paired_ratio

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
BATCH, AMOUNT, SIDE = "1", "0.5", "input"
MODELS = ("resnet50", "densenet121", "mobilenet_v2", "efficientnet_v2_s", "convnext_tiny")
# (label, contender, reference): latency ratios in the plot, each paired per round
BARS = (
    ("constrained", "constrained", "unpruned"),
    ("baseline", "baseline", "unpruned"),
    ("reorder", "reorder", "unpruned"),
    ("copy-free ideal", "ideal", "unpruned"),
    ("ONNX Runtime reorder", "ort_reorder", "ort_unpruned"),
)


def _ratio(cell: dict, x: str, y: str) -> float | None:
    rounds = cell["rounds"][BATCH]
    if x not in rounds or y not in rounds:
        return None
    return paired_ratio(rounds[x], rounds[y])[0]


def _cells(latency: dict) -> dict[str, dict]:
    """The input-side cells (what the block states) of the chosen models; a result without a
    side was timed before latency.py timed both sides, on the input side."""
    results = [r for r in latency["results"] if r.get("side", "input") == SIDE]
    rows = {r["model"]: r["amounts"][AMOUNT] for r in results if AMOUNT in r["amounts"]}
    return {m: rows[m] for m in MODELS if m in rows}


def _fmt(v: float | None, suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:.2f}{suffix}"


def table(cells: dict[str, dict]) -> list[str]:
    lines = [
        "| model | MACs kept | eager CPU: time vs unpruned | ONNX Runtime: time vs unpruned "
        "| time vs copy-free ideal | apple-upscale's time vs ours, same masks |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, c in cells.items():
        s = c["sizes"]
        same_masks = _ratio(c, "upscale", "reorder_upm")
        lines.append(
            f"| {model} | {s['reorder_macs'] / s['unpruned_macs']:.0%} "
            f"| {_fmt(_ratio(c, 'reorder', 'unpruned'), 'x')} "
            f"| {_fmt(_ratio(c, 'ort_reorder', 'ort_unpruned'), 'x')} "
            f"| {_fmt(_ratio(c, 'reorder', 'ideal'), 'x')} "
            f"| {_fmt(same_masks, 'x') if same_masks else 'apple-upscale fails'} |"
        )
    return lines


def bullets() -> list[str]:
    cov = (RESULTS / "coverage.md").read_text()
    zoos = re.findall(r"^## (\w+) \(.*?\n.*?\*\*(\d+/\d+)", cov, re.M | re.S)
    copies = [r for r in (RESULTS / "copies.md").read_text().splitlines() if r.startswith("| ")]
    rows = [r.split("|") for r in copies[1:]]
    rows = [r for r in rows if r[6].strip() not in ("—", "")]  # apple-upscale's masks failed
    proven = [r for r in rows if not r[7].strip().startswith("—")]  # else no bound was proven
    at_bound = sum(1 for r in proven if r[6].strip() == r[7].split("(")[0].strip())
    unproven = f"; {len(rows) - len(proven)} more unproven" if len(proven) < len(rows) else ""
    export = json.loads((RESULTS / "export_time.json").read_text())
    speedups = [r["median_s"]["upscale"] / r["median_s"]["chanprune"] for r in export]
    return [
        "- Exact on both zoos: "
        + ", ".join(f"{zoo} {n}" for zoo, n in zoos)
        + " exported with outputs equal to the masked model's and rebuilt from their saved "
        "pruning specs ([coverage](benchmarks/results/coverage.md)).",
        *beyond(cov),
        f"- Fewest copies: the reorder export copies exactly the proven minimum of bytes in "
        f"{at_bound} of {len(proven)} cells with a proven bound, input and output side"
        f"{unproven} ([copies](benchmarks/results/copies.md)).",
        f"- Fast to export: {statistics.median(speedups):.1f}x faster than apple-upscale's "
        "export of the same masked model, median over "
        f"{len(speedups)} models ([export time](benchmarks/results/export_time.md)).",
    ]


def beyond(cov: str) -> list[str]:
    """The bullet on coverage.md's third zoo (none before it has run)."""
    head = re.search(r"^## Beyond classification \((\d+) of (\d+) models run\)", cov, re.M)
    if not head:
        return []
    rest = cov[head.end() :]
    exact = re.search(r"\*\*(\d+)/(\d+)\*\*", rest)
    enough = re.search(r"channels pruned at amount [\d.]+: (\d+) of (\d+)", rest)
    if not exact or not enough:
        return []
    return [
        f"- Beyond classification (segmentation, detection, video, optical flow, Hugging Face "
        f"transformers, diffusers; tiny, random init): {exact[1]}/{exact[2]} exact on fresh "
        f"inputs, at a new batch size, at another input size and on both sides; {enough[1]} of "
        f"{enough[2]} prune at least 25% of their conv/linear channels at amount 0.3 "
        "([coverage](benchmarks/results/coverage.md))."
    ]


def plot(cells: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / len(BARS)
    for i, (label, x, y) in enumerate(BARS):
        vals = [_ratio(c, x, y) or 0.0 for c in cells.values()]
        ax.bar(
            [j + (i - len(BARS) / 2 + 0.5) * width for j in range(len(cells))],
            vals,
            width,
            label=label,
        )
    macs = [c["sizes"]["reorder_macs"] / c["sizes"]["unpruned_macs"] for c in cells.values()]
    ax.scatter(
        range(len(cells)),
        macs,
        marker="_",
        s=900,
        color="black",
        zorder=3,
        label="MACs kept (reorder)",
    )
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(cells)), list(cells))
    ax.set_ylabel("time / unpruned model's")
    ax.set_title(f"CPU, 2 threads, batch {BATCH}, 224x224, amount {AMOUNT} (input side, L2)")
    ax.legend(ncol=3, fontsize=8, loc="upper left")
    ax.set_ylim(0, 1.25)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def block(cells: dict[str, dict], run: dict) -> str:
    return "\n".join(
        [
            START,
            *table(cells),
            "",
            f"Batch {BATCH}, 224x224, 2 CPU threads, amount {AMOUNT} (unconstrained, input side, "
            f"L2); medians of ratios paired per round, from `{run.get('command', 'latency.py')}` "
            "([full table, batch 8 and amount 0.25](benchmarks/results/latency.md)). Written by "
            "`python benchmarks/summary.py`.",
            "",
            "![latency of pruned models](benchmarks/results/summary.png)",
            "",
            *bullets(),
            END,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare, write nothing")
    a = ap.parse_args(argv)
    latency = json.loads((RESULTS / "latency.json").read_text())
    cells = _cells(latency)
    text = README.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    new = head + block(cells, latency.get("run", {})) + rest.split(END, 1)[1]
    if a.check:
        if new != text:
            print("README.md's results block is stale: run python benchmarks/summary.py")
            return 1
        return 0
    README.write_text(new)
    plot(cells, RESULTS / "summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
