"""The frontier study's report (issue 26, item 4): frontier.md, one Pareto plot per model and a
verdict per model, from frontier_masks.jsonl and frontier_eval.jsonl (``frontier_grid``).

The verdict compares each contender with ``constrained`` at the same latency target, on the
recalibrated top-1 (fine-tuned where that was run): a difference is *beyond the spread* when
the ranges over the calibration seeds do not overlap.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontier_grid import backend_of, key, latest, read_jsonl

DEFAULT = "mixed"  # what chanprune.mask gives for a target (constrained=None)
BASELINE = "constrained"
ORDER = ("constrained", "input", "output", "mixed")


def joined(out: Path, backend: str = "eager") -> list[dict[str, Any]]:
    """One record per config whose target was measured on ``backend``: its mask line with its
    evaluation (``eval``, or None), the masks of its calibration seeds merged (:func:`merged`)."""
    recs = joined_plain(
        read_jsonl(out / "frontier_masks.jsonl"), read_jsonl(out / "frontier_eval.jsonl")
    )
    recs = [r for r in recs if backend_of(r) == backend]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        config = key(r["model"], r["contender"], r["heuristic"], r["target"])
        groups.setdefault(config, []).append(r)
    return [merged(g) for g in groups.values()]


def merged(group: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for the masks of one config drawn on several calibration samples (Taylor):
    its top-1 values are those of every mask and recalibration seed together, so the spread
    covers the mask's own variance; its ratio is their mean, ``met`` holds only if every mask
    met the target, ``masks`` counts them. Masks not evaluated yet are left out; a config
    with one mask is returned as it is."""
    group = sorted(group, key=lambda r: r.get("mask_seed", 0))
    done = [r for r in group if "ratio" in r and r.get("eval")]
    if len(group) == 1 or len(done) < 2:
        return {**group[0], "masks": 1}
    evs = [r["eval"] for r in done]
    ev: dict[str, Any] = {
        "post": statistics.mean(e["post"] for e in evs),
        "recalibrated": [v for e in evs for v in e["recalibrated"]],
        "export_identical": all(e.get("export_identical") for e in evs),
    }
    if all(e.get("finetuned") for e in evs):
        ev["finetuned"] = [v for e in evs for v in e["finetuned"]]
    return {
        **done[0],
        "ratio": statistics.mean(r["ratio"] for r in done),
        "predicted": statistics.mean(r["predicted"] for r in done),
        "met": all(r["met"] for r in done),
        "masks": len(done),
        "eval": ev,
    }


def superseded(out: Path) -> list[dict[str, Any]]:
    """Evaluated masks that a later run of the same config replaced (``--redo``, after a change
    to masking): each with the record that replaced it (``now``), so the report keeps what the
    change did."""
    evals = read_jsonl(out / "frontier_eval.jsonl")
    masks = read_jsonl(out / "frontier_masks.jsonl")
    last = latest(masks)
    now = {r["key"]: r for r in joined_plain(masks, evals)}
    out_rows = []
    for m in masks:
        if m is last[m["key"]] or "ratio" not in m or m.get("run") is None:
            continue
        ev = [e for e in evals if e["key"] == m["key"] and e.get("mask_run") == m["run"]]
        if ev and now.get(m["key"], {}).get("eval"):
            out_rows.append({**m, "eval": ev[-1], "now": now[m["key"]]})
    return out_rows


def joined_plain(masks: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[dict]:
    """The latest mask line per key with its evaluation, seeds not merged."""
    ev = latest(evals)
    return [
        {**m, "eval": e if (e := ev.get(k)) and e.get("mask_run") == m.get("run") else None}
        for k, m in latest(masks).items()
    ]


def stage(rec: dict[str, Any]) -> str | None:
    """The furthest recovery stage evaluated for ``rec``: finetuned, recalibrated or None."""
    ev = rec.get("eval")
    if not ev:
        return None
    return "finetuned" if ev.get("finetuned") else "recalibrated"


def span(values: list[float]) -> tuple[float, float, float]:
    return statistics.mean(values), min(values), max(values)


def compare(a: list[float], b: list[float]) -> str:
    """'better', 'worse' or 'tie' for ``a`` against ``b``: better/worse only when their ranges
    over the seeds do not overlap."""
    if min(a) > max(b):
        return "better"
    if max(a) < min(b):
        return "worse"
    return "tie"


def series(recs: list[dict[str, Any]], model: str, contender: str, heuristic: str) -> dict:
    """{target: record} of one contender and heuristic of ``model``, evaluated ones only."""
    return {
        r["target"]: r
        for r in recs
        if r["model"] == model
        and r["contender"] == contender
        and r["heuristic"] == heuristic
        and r.get("eval")
    }


CHANCE = 10.0  # top-1 of a guess among Fashion-MNIST's 10 classes


@dataclass
class Versus:
    """Series ``a`` against the most accurate of the series ``bs`` per target (:func:`versus`):
    the targets where ``a`` is better, worse or within the seed spread, the differences of
    their means, and the targets left out (both near chance; not at equal latency)."""

    better: list[float] = field(default_factory=list)
    worse: list[float] = field(default_factory=list)
    tie: list[float] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)
    chance: list[float] = field(default_factory=list)
    missed: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.better) + len(self.worse) + len(self.tie)

    @property
    def goal_met(self) -> bool:
        """The product goal: never less accurate beyond the spread, and more accurate beyond it
        at half of the compared targets or more."""
        return not self.worse and 2 * len(self.better) >= self.n

    def text(self) -> str:
        return (
            f"more accurate beyond the seed spread at {len(self.better)} ({_ts(self.better)}), "
            f"less accurate beyond it at {len(self.worse)} ({_ts(self.worse)}), within it at "
            f"{len(self.tie)}; mean difference {statistics.mean(self.diffs):+.2f} points "
            f"(from {min(self.diffs):+.2f} to {max(self.diffs):+.2f})"
            + (
                f"; both under {2 * CHANCE:g}% (no mask works): {_ts(self.chance)}"
                if self.chance
                else ""
            )
            + (
                f"; not at equal latency (a target missed): {_ts(self.missed)}"
                if self.missed
                else ""
            )
            + "."
        )


def versus(a: dict, bs: list[dict], key: str = "recalibrated") -> Versus:
    """Series ``a`` against, per target, the most accurate of the series ``bs`` there. A pair is
    compared where both measured within 5% of the target; where one missed it, only a
    dominance counts (the faster of the two also more accurate beyond the spread), else the
    pair is not at equal latency and is left out. Pairs where both stay under twice chance are
    set apart: no mask works there, and their order says nothing."""
    v = Versus()
    for t in sorted(a, reverse=True):
        ra = a[t]
        options = [b[t] for b in bs if t in b and b[t]["eval"].get(key)]
        if not ra["eval"].get(key) or not options:
            continue
        met = [rb for rb in options if rb.get("met")] or options
        rb = max(met, key=lambda r: statistics.mean(r["eval"][key]))
        va, vb = ra["eval"][key], rb["eval"][key]
        if max(statistics.mean(va), statistics.mean(vb)) < 2 * CHANCE:
            v.chance.append(t)
            continue
        said = compare(va, vb)
        if not (ra.get("met") and rb.get("met")):
            faster_better = said == "better" and ra["ratio"] <= rb["ratio"]
            slower_worse = said == "worse" and ra["ratio"] >= rb["ratio"]
            if not (faster_better or slower_worse):
                v.missed.append(t)
                continue
        getattr(v, said).append(t)
        v.diffs.append(statistics.mean(va) - statistics.mean(vb))
    return v


def _line(name: str, v: Versus, b_name: str, key: str) -> list[str]:
    if v.n:
        return [f"- **{name}** vs {b_name} ({key}, {v.n} targets): {v.text()}"]
    if v.missed:  # evaluated pairs, none at equal latency: say so rather than nothing
        return [
            f"- **{name}** vs {b_name} ({key}): no target compared; not at equal latency "
            f"(a target missed): {_ts(v.missed)}."
        ]
    return []


def verdict(recs: list[dict[str, Any]], model: str, key: str = "recalibrated") -> list[str]:
    """Plain-words verdict lines for ``model``: first the default masks for a target (mixed
    with Taylor scores) against the best constrained masks of any heuristic, then each
    contender against constrained masks of its own heuristic, per target, where both measured
    within 5% of it."""
    heuristics = sorted({r["heuristic"] for r in recs if r["model"] == model})
    cons = {h: series(recs, model, BASELINE, h) for h in heuristics}
    lines = []
    if "taylor" in heuristics:
        v = versus(series(recs, model, DEFAULT, "taylor"), list(cons.values()), key)
        lines += _line("default: mixed (taylor)", v, "the best constrained (any heuristic)", key)
    for h in heuristics:
        for c in ORDER[1:]:  # every contender but constrained
            v = versus(series(recs, model, c, h), [cons[h]], key)
            lines += _line(f"{c} ({h})", v, f"constrained ({h})", key)
    return lines


def _ts(ts: list[float]) -> str:
    return ", ".join(f"{t:g}" for t in ts) or "none"


def _cell(vals: list[float] | None) -> str:
    if not vals:
        return "-"
    m, lo, hi = span(vals)
    return f"{m:.2f} ({lo:.2f}-{hi:.2f})"


def plot(recs: list[dict[str, Any]], model: str, base_top1: float | None, path: Path) -> bool:
    """Top-1 (recalibrated, mean and seed range) against the measured latency ratio."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    pairs = sorted({(r["contender"], r["heuristic"]) for r in recs if r["model"] == model})
    pairs.sort(key=lambda ch: (ORDER.index(ch[0]), ch[1]))
    for c, h in pairs:
        pts = sorted(
            (r["ratio"], r["eval"]["recalibrated"])
            for r in recs
            if r["model"] == model and r["contender"] == c and r["heuristic"] == h and r.get("eval")
        )
        if not pts:
            continue
        xs = [p[0] for p in pts]
        mean = [statistics.mean(p[1]) for p in pts]
        err = [
            [m - min(p[1]) for m, p in zip(mean, pts, strict=True)],
            [max(p[1]) - m for m, p in zip(mean, pts, strict=True)],
        ]
        style = "-" if h == "taylor" else "--"
        ax.errorbar(xs, mean, yerr=err, marker="o", ms=4, capsize=2, ls=style, label=f"{c} ({h})")
    if base_top1 is not None:
        ax.axhline(base_top1, color="grey", ls="--", lw=1, label="unpruned")
    ax.set_xlabel("measured latency / unpruned (eager CPU, 224x224, batch 1)")
    ax.set_ylabel("top-1 after BN recalibration (%)")
    ax.set_title(f"{model}: Fashion-MNIST top-1 vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out: Path, models: Iterable[str]) -> None:
    """frontier.md (and the plots) from the study's files in ``out``; nothing without them."""
    recs = joined(out)
    if not recs:
        return
    base = {}
    if (out / "frontier_base.json").exists():
        base = {
            r["model"]: r["final_top1"]
            for r in json.loads((out / "frontier_base.json").read_text())
        }
    models = [m for m in models if any(r["model"] == m for r in recs)]
    met = [r for r in recs if "ratio" in r]
    lines = [
        "# Frontier study: top-1 against measured latency",
        "",
        "Written by `benchmarks/frontier.py --stage report` from `frontier_masks.jsonl` "
        "(`--stage masks`) and `frontier_eval.jsonl` (`--stage eval`). **Latency was measured "
        "with nothing else running on the machine** (the masks stage ran alone; training was "
        "paused): each mask comes from `chanprune.mask(target_latency=t, backend='eager')` on "
        "the trained model at 224x224, batch 1, 2 threads, which measures the chosen export "
        "against the unpruned model, paired per round; the *ratio* column is that measurement. "
        "Top-1 is on the 10k Fashion-MNIST test images at 32x32: post-training, after "
        "BatchNorm recalibration on 20 batches of 128 training images (3 calibration seeds: "
        "mean, min-max), and after one epoch of fine-tuning (3 seeds) where run. The "
        "recalibrated model of seed 0 is exported and its predictions compared with the "
        "masked model's on every test image.",
        "",
        f"- configs masked: {len(recs)}; unreachable: "
        f"{sum('unreachable' in r for r in recs)}; measured ratio within 5% of its target: "
        f"{sum(bool(r.get('met')) for r in met)} of {len(met)}",
        f"- exports with predictions identical to the masked model's: "
        f"{sum(bool(r['eval'].get('export_identical')) for r in met if r.get('eval'))} of "
        f"{sum(1 for r in met if r.get('eval'))} evaluated",
        "",
    ]
    lines += [
        "`taylor` scores are computed once for constrained masks (their allocation is fixed: "
        "each family of segment channels loses the same share) and again after every 5% of "
        "the cost saved for mixed masks (`chanprune.masking.mixed`), each time with the "
        "BatchNorm statistics recomputed on the calibration batches and against the unpruned "
        "model's predictions (`chanprune.masking.taylor`). The seed spread covers the "
        "calibration sample of the recalibration; where a config was masked on several "
        "calibration samples (*n masks* in the tables: `--mask-seeds`), it covers those "
        "masks too, and its ratio is their mean. Other masks are one draw each.",
        "",
        "## Product goal",
        "",
        "The default masks for a target (mixed with Taylor scores) against the most accurate "
        "constrained masks of any heuristic at each target (recalibrated):",
        "",
    ]
    heuristics = sorted({r["heuristic"] for r in recs})
    for model in models:
        v = versus(
            series(recs, model, DEFAULT, "taylor"),
            [series(recs, model, BASELINE, h) for h in heuristics],
        )
        goal = "**met**" if v.goal_met else "**not met**"
        lines.append(
            f"- {model}: {goal} ({v.n} targets compared): {v.text()}"
            if v.n
            else f"- {model}: no evaluated pairs yet"
        )
    lines.append("")
    for model in models:
        mine = [r for r in recs if r["model"] == model]
        heur = sorted({r["heuristic"] for r in mine})
        top = base.get(model)
        lines += [
            f"## {model}",
            "",
            f"Unpruned top-1: {top:.2f}%." if top is not None else "",
            "",
        ]
        if plot(mine, model, top, out / f"frontier_{model}.png"):
            lines += [f"![{model}](frontier_{model}.png)", ""]
        lines += ["### Verdict", ""]
        lines += verdict(mine, model) or ["- (no evaluated pairs yet)"]
        if any(stage(r) == "finetuned" for r in mine):
            lines += verdict(mine, model, "finetuned")
        lines += [""]
        for h in heur:
            lines += [
                f"### heuristic {h}",
                "",
                "| target | contender | ratio (measured) | predicted | met | post | "
                "recalibrated | fine-tuned | export identical |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            rows = [r for r in mine if r["heuristic"] == h]
            rows.sort(key=lambda r: (-r["target"], ORDER.index(r["contender"])))
            for r in rows:
                if "ratio" not in r:
                    lines.append(
                        f"| {r['target']:g} | {r['contender']} | unreachable | | | | | | |"
                    )
                    continue
                ev = r.get("eval") or {}
                post = f"{ev['post']:.2f}" if ev else "-"
                same = ("yes" if ev.get("export_identical") else "NO") if ev else "-"
                n = r.get("masks", 1)
                who = r["contender"] + (f" ({n} masks)" if n > 1 else "")
                lines.append(
                    f"| {r['target']:g} | {who} | {r['ratio']:.3f} | "
                    f"{r['predicted']:.3f} | {'yes' if r['met'] else 'NO'} | {post} | "
                    f"{_cell(ev.get('recalibrated'))} | {_cell(ev.get('finetuned'))} | {same} |"
                )
            lines.append("")
    lines += amounts_section(out, models)
    lines += ort_section(out, models)
    lines += ort_targets_section(out, models)
    lines += superseded_section(out)
    (out / "frontier.md").write_text("\n".join(lines) + "\n")


def amounts_section(out: Path, models: Iterable[str]) -> list[str]:
    """The paper's view: top-1 at equal pruning amount per contender (``--stage amounts``),
    each unconstrained contender against constrained masks at the same amount."""
    rows = read_jsonl(out / "frontier_amounts.jsonl")
    if not rows:
        return []
    lines = [
        "## Equal amount (the paper's view)",
        "",
        "Each layer loses the same share of its channels (`chanprune.mask(amount=a)`, l1); the "
        "export's MACs against the unpruned model's at 32x32, and top-1 post-training and "
        "recalibrated (3 calibration seeds: mean, min-max). The paper compares at this view; "
        "a user pays for the latency, which the tables above compare at.",
        "",
    ]
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        by = {(r["contender"], r["amount"]): r for r in mine}
        names = [c for c in ORDER if any(r["contender"] == c for r in mine)]
        lines += [
            f"### {model}",
            "",
            "| amount | " + " | ".join(f"{c}: MACs, recalibrated" for c in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for a in sorted({r["amount"] for r in mine}):
            got = [by.get((c, a)) for c in names]
            cells = [
                f"{r['macs_ratio']:.3f}, {_cell(r['recalibrated'])}" if r else "-" for r in got
            ]
            lines.append(f"| {a:g} | " + " | ".join(cells) + " |")
        lines.append("")
        for c in names:
            if c == BASELINE:
                continue
            v = versus(_by_amount(by, c), [_by_amount(by, BASELINE)])
            if v.n:
                lines.append(
                    f"- **{c} (l1)** vs constrained (l1) at equal amount ({v.n} amounts): "
                    + v.text().replace("targets", "amounts")
                )
        lines.append("")
    return lines


def _by_amount(by: dict, contender: str) -> dict[float, dict[str, Any]]:
    """{amount: record} of one contender in the form :func:`versus` compares (every amount is
    met: the same share of channels)."""
    return {
        a: {"eval": {"recalibrated": r["recalibrated"]}, "met": True, "ratio": r["macs_ratio"]}
        for (c, a), r in by.items()
        if c == contender
    }


def superseded_section(out: Path) -> list[str]:
    """A table of the evaluated masks a later run replaced, beside what replaced them."""
    rows = superseded(out)
    if not rows:
        return []
    lines = [
        "## Replaced runs",
        "",
        "Masks of a config that a later run replaced (after a change to masking, or to meet a "
        "missed target), beside the run that replaced it (recalibrated top-1, one mask each). "
        "The mixed Taylor masks of 2026-12-07 replaced ones scored with the unpruned model's "
        "BatchNorm statistics and against the partly masked model's own predictions: "
        '"Taylor rescoring" in docs/design.md.',
        "",
        "| config | run (UTC) | ratio | recalibrated | replaced by: ratio | recalibrated |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["heuristic"], r["contender"], -r["target"])):
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["run"] / 1000))
        now = r["now"]
        lines.append(
            f"| {r['key']} | {when} | {r['ratio']:.3f} | {_cell(r['eval']['recalibrated'])} | "
            f"{now['ratio']:.3f} | {_cell(now['eval']['recalibrated'])} |"
        )
    return [*lines, ""]


def ort_section(out: Path, models: Iterable[str]) -> list[str]:
    """ONNX Runtime latency of the constrained and default masks (``frontier_ort.jsonl``, from
    ``--stage ort``) beside their eager latency: the masks were aimed at eager PyTorch, so this
    shows how far the speed carries over to the other CPU runtime, per export method."""
    masks = latest(read_jsonl(out / "frontier_masks.jsonl"))
    by: dict[str, dict[str, dict[str, Any]]] = {}  # mask key -> method -> its latest line
    for r in read_jsonl(out / "frontier_ort.jsonl"):
        m = masks.get(r["key"])
        if m and m.get("run") == r.get("mask_run") and m["model"] in models:
            by.setdefault(r["key"], {})[r.get("method", "reorder")] = r
    if not by:
        return []
    methods = sorted({meth for rows in by.values() for meth in rows}, key=_method_order)
    lines = [
        "## ONNX Runtime",
        "",
        "The same masks in ONNX Runtime (`benchmarks/frontier.py --stage ort`, alone on the "
        "machine): each mask's export against the unpruned model, both as ONNX files, 224x224, "
        "batch 1, 2 intra-op threads that do not spin, paired per round (31 rounds; median and "
        "95% interval). The default masks are exported with `method='reorder'` (the default) "
        "and `method='dense'` (no run-time copies, so ORT keeps its blocked layout); a "
        "constrained mask has no copies, so its export is the same either way. The masks were "
        "aimed at eager PyTorch (`backend='eager'`); a user deploying on ORT asks for "
        "`backend='ort'`, which aims there, at the dense export (`masks.method`). *Which "
        "family runs faster* takes each mask's faster export.",
        "",
    ]
    for model in models:
        mine = sorted(
            ((masks[k], rows) for k, rows in by.items() if masks[k]["model"] == model),
            key=lambda p: (-p[0]["target"], p[0]["contender"], p[0]["heuristic"], p[0]["key"]),
        )
        if not mine:
            continue
        best = [(m, min(rows.values(), key=lambda r: r["ort_ratio"])) for m, rows in mine]
        both = [r["ort_ratio"] / m["ratio"] for m, r in best]
        lines += [
            f"### {model}",
            "",
            f"ORT ratio (faster export) over eager ratio: median {statistics.median(both):.2f} "
            f"({min(both):.2f}-{max(both):.2f}) over {len(both)} masks. {ort_faster(best)}",
            "",
            "| target | mask | eager ratio | "
            + " | ".join(f"ORT {meth} (95% interval)" for meth in methods)
            + " |",
            "|---|---|---|" + "---|" * len(methods),
        ]
        for m, rows in mine:
            cells = []
            for meth in methods:
                r = rows.get(meth)
                iv = r.get("interval") if r else None
                band = f" ({iv[0]:.3f}-{iv[1]:.3f})" if iv else ""
                cells.append(f"{r['ort_ratio']:.3f}{band}" if r else "-")
            seed = f" m{m['mask_seed']}" if m.get("mask_seed") else ""
            lines.append(
                f"| {m['target']:g} | {m['contender']} {m['heuristic']}{seed} | "
                f"{m['ratio']:.3f} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    return lines


def _method_order(method: str) -> tuple[int, str]:
    return (0 if method == "reorder" else 1, method)


def deciding_keys(out: Path, models: Iterable[str]) -> set[str]:
    """The masks the product goal compares, per model and target: every mask of the default
    config (mixed, Taylor) and those of the most accurate constrained config of any heuristic
    (recalibrated, among those that met the target where any did), as :func:`versus` picks."""
    models = set(models)
    plain = joined_plain(
        read_jsonl(out / "frontier_masks.jsonl"), read_jsonl(out / "frontier_eval.jsonl")
    )
    plain = [r for r in plain if backend_of(r) == "eager"]
    recs = [r for r in joined(out) if r["model"] in models and r.get("eval")]
    best = {}
    for r in recs:
        if r["contender"] != BASELINE or not r["eval"].get("recalibrated"):
            continue
        at = (r["model"], r["target"])
        rank = (bool(r.get("met")), statistics.mean(r["eval"]["recalibrated"]))
        if at not in best or rank > best[at][0]:
            best[at] = (rank, r["heuristic"])
    chosen = {(m, BASELINE, h, t) for (m, t), (_, h) in best.items()}
    return {
        r["key"]
        for r in plain
        if r["model"] in models
        and "ratio" in r
        and (
            (r["contender"], r["heuristic"]) == (DEFAULT, "taylor")
            or (r["model"], r["contender"], r["heuristic"], r["target"]) in chosen
        )
    }


def ort_faster(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Which family runs faster in ORT per target: the default masks against the constrained
    ones, a family counted faster only where the 95% intervals of all its masks lie below
    all of the other's."""
    by: dict[float, dict[str, list[dict[str, Any]]]] = {}
    for m, r in pairs:
        by.setdefault(m["target"], {}).setdefault(m["contender"], []).append(r)
    said: dict[str, list[float]] = {"default": [], "constrained": [], "neither": []}
    for t, fam in sorted(by.items(), reverse=True):
        if DEFAULT not in fam or BASELINE not in fam:
            continue
        (d_lo, d_hi), (c_lo, c_hi) = _bounds(fam[DEFAULT]), _bounds(fam[BASELINE])
        said["default" if d_hi < c_lo else "constrained" if c_hi < d_lo else "neither"].append(t)
    return (
        f"At the same eager target, the default masks run faster in ORT at "
        f"{len(said['default'])} targets ({_ts(said['default'])}), the constrained masks at "
        f"{len(said['constrained'])} ({_ts(said['constrained'])}), and the intervals of all "
        f"their masks overlap at {len(said['neither'])} ({_ts(said['neither'])})."
    )


def _bounds(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """The lowest and highest end of the rows' 95% intervals (the ratio where none)."""
    ivs = [r.get("interval") or [r["ort_ratio"], r["ort_ratio"]] for r in rows]
    return min(lo for lo, _ in ivs), max(hi for _, hi in ivs)


def ort_targets_section(out: Path, models: Iterable[str]) -> list[str]:
    """The product goal with targets aimed at ONNX Runtime (``--stage masks --backend ort``):
    the default masks against the most accurate constrained ones at each target, recalibrated,
    as in the eager sections, and their table."""
    recs = [r for r in joined(out, "ort") if r["model"] in models]
    if not recs:
        return []
    lines = [
        "## Targets on ONNX Runtime",
        "",
        "Masks from `chanprune.mask(target_latency=t, backend='ort')` (`--stage masks "
        "--backend ort`, alone on the machine): the target is predicted and measured in ONNX "
        "Runtime for the copy-free dense export (`masks.method`), and mixed masks count only "
        "what that export saves (whole segment channels, units of private ones). *ratio* is "
        "the measured ORT ratio; top-1 as above, the export checked with the dense method.",
        "",
    ]
    heuristics = sorted({r["heuristic"] for r in recs})
    for model in [m for m in models if any(r["model"] == m for r in recs)]:
        mine = [r for r in recs if r["model"] == model]
        v = versus(
            series(mine, model, DEFAULT, "taylor"),
            [series(mine, model, BASELINE, h) for h in heuristics],
        )
        goal = "**met**" if v.goal_met else "**not met**"
        lines += [
            f"### {model}",
            "",
            f"- product goal on ORT: {goal} ({v.n} targets compared): {v.text()}"
            if v.n
            else "- product goal on ORT: no evaluated pairs yet",
            "",
            "| target | contender | heuristic | ratio (measured) | predicted | met | post | "
            "recalibrated | export identical |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(mine, key=lambda r: (-r["target"], ORDER.index(r["contender"]))):
            if "ratio" not in r:
                lines.append(
                    f"| {r['target']:g} | {r['contender']} | {r['heuristic']} | unreachable "
                    "| | | | | |"
                )
                continue
            ev = r.get("eval") or {}
            n = r.get("masks", 1)
            who = r["contender"] + (f" ({n} masks)" if n > 1 else "")
            post = f"{ev['post']:.2f}" if ev else "-"
            same = ("yes" if ev.get("export_identical") else "NO") if ev else "-"
            lines.append(
                f"| {r['target']:g} | {who} | {r['heuristic']} | {r['ratio']:.3f} | "
                f"{r['predicted']:.3f} | {'yes' if r['met'] else 'NO'} | {post} | "
                f"{_cell(ev.get('recalibrated'))} | {same} |"
            )
        lines.append("")
    return lines
