"""accuracy.md and accuracy.png from the grid's raw results (benchmarks/results/accuracy.jsonl).

    python benchmarks/accuracy_report.py [--out benchmarks/results]

Every statement in the markdown is computed from the table it sits above: counts and means of
the unconstrained minus constrained top-1 over matching configs (same model, heuristic,
amount), and, to compare at a known cost rather than an equal "amount", which configs are
dominated by one of the other kind (no more MACs and at least the same top-1).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ["resnet18", "densenet121", "mobilenet_v2", "efficientnet_b0"]
HEURISTICS = ["l1", "l2", "lamp", "fpgm", "hrank"]
AMOUNTS = [0.1, 0.2, 0.3, 0.4, 0.5]
CHANCE = 10.0  # top-1 of a guess among 10 classes


def load(out: Path) -> dict[int, list[dict]]:
    """Records without fine-tuning, grouped by the number of test images they were scored on."""
    path = out / "accuracy.jsonl"
    recs: dict[tuple, dict] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip():
            r = json.loads(line)
            if r.get("finetune_epochs", 0) == 0:
                key = (r["test_images"], r["model"], r["heuristic"], r["amount"], r["constrained"])
                recs[key] = r
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in recs.values():
        groups[r["test_images"]].append(r)
    return dict(groups)


def _m(n: float) -> str:
    return f"{n / 1e6:.2f}"


def pairs(recs: list[dict]) -> list[tuple[dict, dict]]:
    """(constrained, unconstrained) records of the same model, heuristic and amount."""
    by = {(r["model"], r["heuristic"], r["amount"], r["constrained"]): r for r in recs}
    out = []
    for (m, h, a, c), r in sorted(by.items()):
        u = by.get((m, h, a, False))
        if c and u and "top1" in r and "top1" in u:
            out.append((r, u))
    return out


def dominated(r: dict, others: list[dict]) -> bool:
    return any(o["macs"] <= r["macs"] and o["top1"] >= r["top1"] for o in others)


def summary(recs: list[dict]) -> list[str]:
    ps = pairs(recs)
    if not ps:
        return ["No matching constrained/unconstrained pairs yet."]
    d = [u["top1"] - c["top1"] for c, u in ps]
    win, loss = sum(x > 0 for x in d), sum(x < 0 for x in d)
    lines = [
        f"- Pairs (same model, heuristic, amount): {len(ps)}. Unconstrained higher in {win}, "
        f"lower in {loss}, equal in {len(ps) - win - loss}. Mean difference "
        f"{statistics.mean(d):+.2f} points (median {statistics.median(d):+.2f}, "
        f"range {min(d):+.2f} to {max(d):+.2f}).",
    ]
    live = [(c, u) for c, u in ps if max(c["top1"], u["top1"]) > CHANCE + 5]
    if live:
        dl = [u["top1"] - c["top1"] for c, u in live]
        lines.append(
            f"- Leaving out the {len(ps) - len(live)} pairs where both are within 5 points of "
            f"chance ({CHANCE:.0f}%): {len(live)} pairs, unconstrained higher in "
            f"{sum(x > 0 for x in dl)}, lower in {sum(x < 0 for x in dl)}; mean difference "
            f"{statistics.mean(dl):+.2f} points (median {statistics.median(dl):+.2f})."
        )
    for label, key in (("model", "model"), ("heuristic", "heuristic"), ("amount", "amount")):
        groups: dict = defaultdict(list)
        for c, u in ps:
            groups[c[key]].append(u["top1"] - c["top1"])
        parts = [
            f"{k}: {statistics.mean(v):+.2f} ({sum(x > 0 for x in v)}/{len(v)} higher)"
            for k, v in groups.items()
        ]
        lines.append(f"- Mean difference by {label}: " + "; ".join(parts) + ".")
    losses = [
        f"{c['model']}/{c['heuristic']}/{c['amount']} ({u['top1'] - c['top1']:+.2f})"
        for c, u in ps
        if u["top1"] < c["top1"]
    ]
    lines.append("- Unconstrained lower: " + (", ".join(losses) if losses else "nowhere") + ".")
    macs = [u["macs"] / c["macs"] for c, u in ps]
    lines.append(
        f"- Cost at equal amount: the unconstrained export keeps {statistics.mean(macs):.2f}x the "
        f"constrained export's MACs on average (range {min(macs):.2f}x to {max(macs):.2f}x), "
        "since input-side unconstrained masks remove a channel from a tensor only when no "
        "consumer reads it."
    )
    groups = defaultdict(lambda: {True: [], False: []})
    for r in recs:
        if r["heuristic"] != "none" and "top1" in r:
            groups[(r["model"], r["heuristic"])][r["constrained"]].append(r)
    u_dom = c_dom = nu = nc = 0
    for g in groups.values():
        nu, nc = nu + len(g[False]), nc + len(g[True])
        u_dom += sum(dominated(r, g[True]) for r in g[False])
        c_dom += sum(dominated(r, g[False]) for r in g[True])
    lines.append(
        f"- At a known cost (same model and heuristic, any amount): {u_dom}/{nu} unconstrained "
        f"configs are matched or beaten by a constrained config with no more MACs; {c_dom}/{nc} "
        "constrained configs are matched or beaten by an unconstrained one with no more MACs."
    )
    return lines


def table(recs: list[dict]) -> list[str]:
    by = {(r["model"], r["heuristic"], r["amount"], r["constrained"]): r for r in recs}
    lines = []
    for m in MODELS:
        ref = by.get((m, "none", 0.0, False))
        if ref is None:
            continue
        t = ref.get("train", {})
        lines += [
            f"### {m}",
            "",
            f"Unpruned: top-1 {ref['top1']:.2f}, {_m(ref['params'])} M params, "
            f"{_m(ref['macs'])} M MACs, {ref['latency_ms']:.1f} ms; trained {t.get('epochs')} "
            f"epoch(s) on {t.get('train_images')} images in {t.get('train_s', 0):.0f} s.",
            "",
            "| heuristic | amount | top-1 C | top-1 U | U - C | params C / U (M) "
            "| MACs C / U (M) | latency C / U (ms) | masked = export |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for h in HEURISTICS:
            for a in AMOUNTS:
                c, u = by.get((m, h, a, True)), by.get((m, h, a, False))
                if c is None and u is None:
                    continue
                lines.append(_row(h, a, c, u))
        lines.append("")
    return lines


def _row(h: str, a: float, c: dict | None, u: dict | None) -> str:
    def get(r, k, fmt):
        if r is None:
            return "-"
        if "error" in r:
            return "error"
        return fmt(r[k])

    diff = f"{u['top1'] - c['top1']:+.2f}" if c and u and "top1" in c and "top1" in u else "-"
    checks = []
    for r in (c, u):
        if r is None or "prediction_mismatches" not in r:
            checks.append("-")
        else:
            n = r["prediction_mismatches"]
            checks.append("yes" if n == 0 else f"{n} differ")
    return (
        f"| {h} | {a} | {get(c, 'top1', '{:.2f}'.format)} | {get(u, 'top1', '{:.2f}'.format)} "
        f"| {diff} | {get(c, 'params', _m)} / {get(u, 'params', _m)} "
        f"| {get(c, 'macs', _m)} / {get(u, 'macs', _m)} "
        f"| {get(c, 'latency_ms', '{:.1f}'.format)} / {get(u, 'latency_ms', '{:.1f}'.format)} "
        f"| {' / '.join(checks)} |"
    )


def checks(recs: list[dict]) -> str:
    done = [r for r in recs if "prediction_mismatches" in r]
    same = sum(r["prediction_mismatches"] == 0 and r["masked_top1"] == r["top1"] for r in done)
    errors = [r for r in recs if "error" in r]
    s = (
        f"Masked model vs reorder export, predictions compared image by image on the test set: "
        f"{len(done)} configs checked, {same} with identical predictions (and so identical top-1)."
    )
    if errors:
        s += f" {len(errors)} configs failed: " + "; ".join(
            f"{r['model']}/{r['heuristic']}/{r['amount']}: {r['error']}" for r in errors
        )
    return s


def plot(recs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in MODELS if any(r["model"] == m for r in recs)]
    if not models:
        return
    fig, axes = plt.subplots(
        len(models),
        len(HEURISTICS),
        figsize=(3 * len(HEURISTICS), 2.6 * len(models)),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for i, m in enumerate(models):
        ref = next((r for r in recs if r["model"] == m and r["heuristic"] == "none"), None)
        for j, h in enumerate(HEURISTICS):
            ax = axes[i][j]
            for constrained, style in ((True, "o--"), (False, "s-")):
                pts = sorted(
                    (r["amount"], r["top1"])
                    for r in recs
                    if r["model"] == m
                    and r["heuristic"] == h
                    and r["constrained"] == constrained
                    and "top1" in r
                )
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        style,
                        label="constrained" if constrained else "unconstrained",
                    )
            if ref:
                ax.axhline(ref["top1"], color="grey", lw=0.8, ls=":", label="unpruned")
            ax.set_title(f"{m} / {h}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(models) - 1:
                ax.set_xlabel("amount")
            if j == 0:
                ax.set_ylabel("top-1 (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Fashion-MNIST top-1 after post-training pruning (no fine-tuning)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plain(recs: list[dict]) -> str:
    """The answer in words, every number taken from the table."""
    ps = pairs(recs)
    if not ps:
        return ""
    d = [u["top1"] - c["top1"] for c, u in ps]

    def means(key: str) -> dict:
        g: dict = defaultdict(list)
        for c, u in ps:
            g[c[key]].append(u["top1"] - c["top1"])
        return {k: statistics.mean(v) for k, v in g.items()}

    by_amount, by_model = means("amount"), means("model")
    pos = sorted(a for a, m in by_amount.items() if m > 0)
    neg = sorted(a for a, m in by_amount.items() if m <= 0)
    chance = sum(max(c["top1"], u["top1"]) <= CHANCE + 5 for c, u in ps)
    models = sorted(by_model, key=by_model.get, reverse=True)
    macs = statistics.mean(u["macs"] / c["macs"] for c, u in ps)
    text = (
        f"**In plain words.** Removing the constraints raised post-training top-1 in "
        f"{sum(x > 0 for x in d)} of {len(ps)} matching configs and lowered it in "
        f"{sum(x < 0 for x in d)} (equal in {sum(x == 0 for x in d)}), by "
        f"{statistics.mean(d):+.2f} points on average. "
    )
    if pos:
        text += (
            "On average it paid off at amount "
            + ", ".join(f"{a} ({by_amount[a]:+.2f})" for a in pos)
            + (" and not at " + ", ".join(f"{a} ({by_amount[a]:+.2f})" for a in neg) if neg else "")
            + ". "
        )
    text += (
        "Per model: "
        + ", ".join(f"{m} {by_model[m]:+.2f}" for m in models)
        + f". In {chance} of the {len(ps)} pairs both sides are within 5 points of chance "
        f"({CHANCE:.0f}%): without fine-tuning neither kind of mask leaves a working model there, "
        "so those pairs say nothing about constraints. At equal amount the unconstrained "
        f"exports keep more MACs ({macs:.2f}x on average), so equal amount is not equal cost; "
        "the last summary line compares at a known cost."
    )
    return text


def write_report(out: Path) -> None:
    groups = load(out)
    if not groups:
        return
    expected = len(MODELS) * len(HEURISTICS) * len(AMOUNTS) * 2

    def size(n: int) -> int:
        return sum(r["heuristic"] != "none" for r in groups[n])

    main = max(groups, key=lambda n: (size(n), n))
    recs = groups[main]
    status = "" if size(main) >= expected else f" (PARTIAL: {size(main)}/{expected} configs)"
    threads = next((r["threads"] for r in recs if "threads" in r), 1)
    lines = [
        f"# Post-training pruning accuracy: constrained vs unconstrained{status}",
        "",
        "Written by `python benchmarks/accuracy.py` (raw numbers: accuracy.jsonl). Fashion-MNIST "
        "at 32x32 (28x28 padded, grey repeated to RGB), torchvision models with random init "
        "trained here with seed 0 (see each model's line). "
        f"Top-1 on {'the 10k' if main == 10000 else f'the first {main} of the 10k'} test images. "
        "Masks: local scope, input side, no fine-tuning; C = constrained (coupled layers prune "
        "the same channels), U = unconstrained. top-1, params, MACs and latency are the reorder "
        "export's. Latency: median of 5 forward passes at batch 32, 32x32, "
        f"{threads} thread, on a shared 2-core machine under heavy load from "
        "other jobs: indicative only. MACs at batch 1.",
        "",
        "## Summary",
        "",
        plain(recs),
        "",
        *summary(recs),
        "",
        checks(recs),
        "",
        "![accuracy vs amount](accuracy.png)",
        "",
        f"## Table ({main} test images)",
        "",
        *table(recs),
    ]
    for n in sorted(groups, reverse=True):
        if n != main:
            lines += [
                f"## The same measurements on {n} test images ({size(n)} configs)",
                "",
                *summary(groups[n]),
                "",
                checks(groups[n]),
                "",
                *table(groups[n]),
            ]
    (out / "accuracy.md").write_text("\n".join(lines) + "\n")
    plot(recs, out / "accuracy.png")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    write_report(p.parse_args().out)
