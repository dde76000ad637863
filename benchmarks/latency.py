"""CPU latency of chanprune exports against the copy-free limit and apple-upscale.

    python benchmarks/latency.py [--models ...] [--amounts 0.25 0.5] [--batches 1 8]
                                 [--reps 20] [--threads 2] [--size 224] [--out benchmarks/results]
    python benchmarks/latency.py --quick      # smoke test: 2 models, 64x64, 3 reps
    python benchmarks/latency.py --report-from benchmarks/results/latency.json  # no timing

For each torchvision model (random init, eval, ``torch.manual_seed(0)``), amount and batch
size it times these contenders, interleaved in a per-round shuffled order that keeps the
contenders of each reported ratio adjacent (``GROUPS``):

- ``unpruned``: the model itself;
- ``constrained``: constrained masks (coupled layers pruned together), baseline export;
- ``baseline`` / ``reorder``: unconstrained masks (side="input", heuristic="l2"), exported
  both ways from the same masks;
- ``ideal``: ``chanprune.ideal`` of the reorder export (gathers replaced by slices: the
  copy-free physical limit of those layer sizes);
- ``upscale`` / ``upscale_base``: apple-upscale 0.1.1's own reorder and baseline exports of
  its own masks (input side, L2, unconstrained, local) at the same amount, where it runs;
- ``reorder_upm`` / ``baseline_upm`` / ``ideal_upm``: chanprune's reorder and baseline exports
  of apple-upscale's masked model and the ideal of those sizes (the same masks as ``upscale``:
  the like-for-like comparison);
- ``ort_unpruned`` / ``ort_baseline`` / ``ort_reorder``: the unpruned model and the two
  chanprune exports run in ONNX Runtime (CPU, same thread count; ``--no-ort`` skips them).

Every ratio in the report is paired (the median over rounds of the two contenders' times in
the same round) and its contenders run next to each other, because a shared VM speeds up and
slows down between rounds and in spells of seconds (docs/design.md, "Measuring it"): both sides
of a ratio then move alike. Medians of the raw times are reported as well, and reorder/ideal and
apple-upscale/chanprune with their distribution-free 95% intervals
(``evaluation.timing.median_ci``), so a worst cell can be told from noise.

Writes ``<out>/latency.md``, ``<out>/latency.png`` and ``<out>/latency.json`` (raw numbers).
The markdown is rewritten after every model, labelled PARTIAL until the run completes.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
import traceback
import warnings

import torch
import torchvision

import chanprune
import chanprune.deploy
from chanprune.evaluation.timing import paired_ratio, round_order
from chanprune.rewrite.rewriter import gather_rows

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _upscale_shim

MODELS = [
    "resnet18",
    "resnet50",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_v2_s",
    "regnet_y_800mf",
    "convnext_tiny",
]
CONTENDERS = [
    "unpruned",
    "constrained",
    "baseline",
    "reorder",
    "ideal",
    "upscale",
    "upscale_base",
    "reorder_upm",
    "baseline_upm",
    "ideal_upm",
]
ORT = ["ort_unpruned", "ort_baseline", "ort_reorder"]  # ONNX Runtime runs of the same modules
# contenders a reported ratio pairs: each group runs adjacent in every round
# (evaluation.timing.round_order)
GROUPS = [
    ("baseline", "reorder", "ideal"),
    ("upscale", "upscale_base", "reorder_upm", "baseline_upm", "ideal_upm"),
    ("ort_baseline", "ort_reorder"),
]
WARMUP = 3


# --------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _restore(model: torch.nn.Module, state: dict) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def _safe(fn, *a, **k):
    try:
        return fn(*a, **k)
    except Exception:
        return None


def _fmt(v, spec=".2f", none="—"):
    if v is None:
        return none
    if isinstance(v, str):
        return v
    return format(v, spec)


def measure(contenders: dict, x: torch.Tensor, reps: int) -> tuple[dict, dict]:
    """(wall times in ms, minor page faults) per contender and round: warm-up, then ``reps``
    interleaved rounds in the order ``round_order(groups, round)``: groups shuffled, each kept
    adjacent. Faults: see :func:`_faults`."""
    names = list(contenders)
    groups = [[n for n in g if n in contenders] for g in GROUPS]
    groups += [[n] for n in names if not any(n in g for g in GROUPS)]
    times = {n: [] for n in names}
    faults = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:
            for _ in range(WARMUP):
                contenders[n](x)
        for r in range(reps):
            for n in round_order(groups, r):
                f0 = _faults()
                t0 = time.perf_counter()
                contenders[n](x)
                times[n].append((time.perf_counter() - t0) * 1e3)
                faults[n].append(_faults() - f0)
    return times, faults


def _faults() -> int:
    """Minor page faults of this process so far. Why: under glibc's defaults freed large
    buffers go back to the kernel, so every forward pays freshly zeroed pages again, a cost and
    a source of noise shared by all contenders; counting them tells whether a gap to the ideal
    comes from there (the medians per contender are in ``latency.json``; docs/design.md)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def gather_ms(module: torch.fx.GraphModule, x: torch.Tensor, reps: int) -> float:
    """Median ms of replaying, alone, every gather of ``module``'s forward on ``x``.

    Why: the ideal differs from the reorder export by these gathers (and by strided slices past
    batch 1), so ``1 + gather_ms / ideal`` is what reorder/ideal would be if copies cost only
    their own time: the share of the gap that no layout removes where the plan is minimal."""
    aten = torch.ops.aten
    kinds = (aten.index_select.default, aten.gather.default, gather_rows)
    calls = []

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and n.target in kinds:
                calls.append((n.target, [self.env.get(a, a) for a in n.args]))
            return out

    with torch.inference_mode():
        Recorder(module).run(x)
        if not calls:
            return 0.0
        times = []
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            for f, a in calls:
                f(*a)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[1:])


# --------------------------------------------------------------------------- one model
def bench_model(name: str, args) -> dict:
    """All work for one model. Returns a dict of rows (per amount) and errors."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x1 = torch.randn(1, 3, args.size, args.size)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    unpruned = copy.deepcopy(model).eval()
    result = {"model": name, "amounts": {}, "errors": []}
    upscale_reason = _upscale_shim.available() if not args.no_upscale else "disabled (--no-upscale)"
    first = True

    for amount in args.amounts:
        row = {"sizes": {}, "export": {}, "latency": {}, "rounds": {}, "upscale_status": None}
        mods = {"unpruned": unpruned}
        masking = dict(amount=amount, heuristic="l2", scope="local", side="input")

        # ---- unconstrained masks, side=input, l2: baseline + reorder + ideal
        try:
            _restore(model, original)
            _, t_mask = _timed(chanprune.mask, model, x1, constrained=False, **masking)
            # exports own copies of their weights: restoring the model later cannot touch them
            reorder, t_re = _timed(chanprune.export, model, x1, method="reorder")
            baseline, t_base = _timed(chanprune.export, model, x1, method="baseline")
            ideal = chanprune.ideal(reorder)
            plans = {m: chanprune.plan(model, x1, method=m) for m in ("baseline", "reorder")}
            mods.update(baseline=baseline, reorder=reorder, ideal=ideal)
            row["export"].update(
                mask_s=t_mask,
                reorder_s=t_re,
                baseline_s=t_base,
                cold_s=(t_mask + t_re) if first else None,
            )
            for m in ("baseline", "reorder"):
                row["sizes"][f"{m}_copied_bytes"] = plans[m].copied_bytes
            row["sizes"]["baseline_copies"] = len(baseline.chanprune_copies)
            row["sizes"]["reorder_copies"] = len(reorder.chanprune_copies)
            row["sizes"]["ideal_copies"] = len(getattr(ideal, "chanprune_copies", []) or [])
            _log(
                f"{name} @{amount}: unconstrained exports ok (mask {t_mask:.1f}s, "
                f"reorder {t_re:.1f}s, baseline {t_base:.1f}s; copies "
                f"{row['sizes']['baseline_copies']} -> {row['sizes']['reorder_copies']})"
            )
        except Exception as e:
            msg = f"{name} @{amount}: unconstrained export failed: {type(e).__name__}: {e}"
            _log(msg)
            traceback.print_exc()
            result["errors"].append(msg)
        first = False

        # ---- the same modules in ONNX Runtime
        if not args.no_ort:
            for c in ORT:
                src = mods.get(c.removeprefix("ort_"))
                try:
                    if src is not None:
                        mods[c] = chanprune.deploy.ort_runner(src, x1, args.threads)
                except Exception as e:
                    msg = f"{name} @{amount}: {c} failed: {type(e).__name__}: {e}"
                    _log(msg)
                    result["errors"].append(msg)

        # ---- constrained masks, baseline export (no copies needed)
        try:
            _restore(model, original)
            chanprune.mask(model, x1, constrained=True, **masking)
            constrained, t_c = _timed(chanprune.export, model, x1, method="baseline")
            mods["constrained"] = constrained
            row["export"]["constrained_s"] = t_c
            row["sizes"]["constrained_copies"] = len(constrained.chanprune_copies)
        except Exception as e:
            msg = f"{name} @{amount}: constrained export failed: {type(e).__name__}: {e}"
            _log(msg)
            result["errors"].append(msg)
        _restore(model, original)

        # ---- apple-upscale's own export (its masks at this amount)
        if upscale_reason is None:
            try:
                up = _upscale_shim.export(unpruned, x1, amount=amount, keep_masked=True)
                row["upscale_status"] = up["status"]
                if "masked" in up:  # the same masks through chanprune: a like-for-like contender
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        mods["reorder_upm"] = chanprune.export(up["masked"], x1)
                        mods["baseline_upm"] = chanprune.export(up["masked"], x1, method="baseline")
                    mods["ideal_upm"] = chanprune.ideal(mods["reorder_upm"])
                row["export"]["upscale_s"] = up.get("reorder_export_s")
                row["export"]["upscale_base_s"] = up.get("baseline_export_s")
                if up["status"] == "ok":
                    mods["upscale"] = up["reorder"]
                    mods["upscale_base"] = up["baseline"]
                _log(f"{name} @{amount}: upscale {up['status']}")
            except Exception as e:
                last = str(e).strip().splitlines()[-1:] or [""]
                row["upscale_status"] = f"failed: {type(e).__name__}: {last[0][:80]}"
                _log(f"{name} @{amount}: upscale {row['upscale_status']}")
        else:
            row["upscale_status"] = f"n/a: {upscale_reason}"

        # ---- sizes
        for n, m in ((n, m) for n, m in mods.items() if n not in ORT):
            row["sizes"][f"{n}_params"] = _safe(lambda m=m: sum(p.numel() for p in m.parameters()))
            if n in ("unpruned", "constrained", "reorder", "upscale"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    row["sizes"][f"{n}_macs"] = _safe(chanprune.count_macs, m, x1)

        # ---- latency
        order = [c for c in CONTENDERS + ORT if c in mods]
        for b in args.batches:
            xb = torch.randn(b, 3, args.size, args.size)
            t0 = time.perf_counter()
            rounds, faults = measure({c: mods[c] for c in order}, xb, args.reps)
            row["rounds"][str(b)] = rounds
            row.setdefault("faults", {})[str(b)] = {
                c: statistics.median(f) for c, f in faults.items()
            }
            row["latency"][str(b)] = lat = {c: statistics.median(t) for c, t in rounds.items()}
            if "reorder" in mods:
                row.setdefault("gathers_ms", {})[str(b)] = _safe(
                    gather_ms, mods["reorder"], xb, args.reps
                )
            _log(
                f"{name} @{amount} b{b}: "
                + ", ".join(f"{c} {lat[c]:.1f}" for c in order)
                + f" ms  ({time.perf_counter() - t0:.0f}s)"
            )
        result["amounts"][str(amount)] = row
    return result


# --------------------------------------------------------------------------- reporting
def _ratio(a, b):
    return a / b if a is not None and b else None


def _paired(row: dict, b: str):
    """``ratio(x, y)`` for one row and batch: the median over rounds of x's time / y's time in
    the same round (the ratio of medians where a run kept no rounds, as older JSON did)."""
    rounds, lat = row.get("rounds", {}).get(b), row["latency"].get(b, {})

    def ratio(x: str, y: str):
        if rounds and x in rounds and y in rounds:
            return paired_ratio(rounds[x], rounds[y])[0]
        return _ratio(lat.get(x), lat.get(y))

    return ratio


def _paired_ci(row: dict, b: str, x: str, y: str) -> tuple[float, float] | None:
    """95% interval of the paired median ratio x/y (``evaluation.timing.median_ci``); None
    without rounds."""
    rounds = row.get("rounds", {}).get(b) or {}
    if x not in rounds or y not in rounds:
        return None
    return paired_ratio(rounds[x], rounds[y])[1]


def _gather_bound(row: dict, b: str) -> float | None:
    """1 + (the reorder export's gathers replayed alone) / (the ideal's median)."""
    g, ideal = row.get("gathers_ms", {}).get(b), row["latency"].get(b, {}).get("ideal")
    return None if g is None or not ideal else 1 + g / ideal


def _fault_note(f: dict) -> str:
    """Median minor page faults per forward, reorder against ideal, where measured."""
    if "reorder" not in f or "ideal" not in f:
        return ""
    return f"; page faults per forward {f['reorder']:,.0f} against the ideal's {f['ideal']:,.0f}"


def _fmt_ci(ci) -> str:
    return "—" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def _overall(results: list, batches: list[str]) -> list[str]:
    """The issue's latency targets over the whole benchmark set (every model, amount, batch)."""
    cells, faults = [], {}
    for b in batches:
        for res in results:
            for amount, row in res["amounts"].items():
                v = _paired(row, b)("reorder", "ideal")
                if v is not None:
                    ci = _paired_ci(row, b, "reorder", "ideal")
                    cells.append((v, ci, _gather_bound(row, b), res["model"], amount, b))
                    faults[(res["model"], amount, b)] = row.get("faults", {}).get(b, {})
    if not cells:
        return []
    over = sorted((c for c in cells if c[0] > 1.10), reverse=True)
    L = [
        "## Targets over the whole set",
        "",
        f"- reorder/ideal, median over all {len(cells)} cells (models x amounts x batches): "
        f"**{statistics.median(c[0] for c in cells):.3f}** (target <= 1.03)",
        "- cells above 1.10 (target: none): "
        + (
            "; ".join(
                f"{m} @{a} b{b} {v:.3f} (95% CI {_fmt_ci(ci)}; 1 + gathers/ideal {_fmt(g, '.3f')}"
                f"{_fault_note(faults.get((m, a, b), {}))})"
                for v, ci, g, m, a, b in over
            )
            if over
            else "none"
        ),
        "- cells whose whole 95% interval lies above 1.10: "
        + (
            ", ".join(f"{m} @{a} b{b}" for _, ci, _, m, a, b in cells if ci and ci[0] > 1.10)
            or "none"
        ),
        "",
    ]
    return L


def _speedup_table(results: list, batches: list[str]) -> list[str]:
    """Speed-up of reorder over baseline, chanprune vs apple-upscale, and over which baseline.

    The two exporters' baselines differ: on the same masks, with the same gathers,
    apple-upscale's baseline is slower than chanprune's (it gathers by advanced indexing with a
    Python list, chanprune by index_select, gather or gather_rows), which inflates its own
    ratio. So besides each one's own ratio the table gives that baseline gap, the ceiling of
    chanprune's own ratio (baseline/ideal: no export of these sizes copies less than none),
    both reorder exports against one common baseline, apple-upscale's, on apple-upscale's
    masks, and both against the copy-free ideal of those masks.
    """
    L = [
        "## Speed-up of reorder over baseline: own baselines, and one common baseline",
        "",
        "All ratios paired per round (see the header). own = each exporter's baseline / its "
        "reorder (its own masks); ceiling = chanprune baseline / ideal (the most any reorder of "
        "chanprune's baseline could gain: ideal has no copies at all); baseline gap = "
        "apple-upscale's baseline / chanprune's baseline on the same (apple-upscale's) masks: "
        "both gather per consumer and the layer sizes agree to within 1% (chanprune also drops "
        "channels it proves zero), so this is mostly the cost of the gather itself; common = "
        "apple-upscale's baseline / chanprune's reorder export of apple-upscale's masks (for "
        "apple-upscale its own ratio); upscale / chanprune = apple-upscale's reorder / "
        "chanprune's reorder on the same masks (>= 1: chanprune's speed-up over the common "
        "baseline is at least apple-upscale's); x / ideal = each reorder export of "
        "apple-upscale's masks against the copy-free ideal of those sizes.",
        "",
        "| batch | model | amount | chanprune own | ceiling | upscale own | baseline gap | "
        "chanprune, common baseline | upscale / chanprune, same masks | "
        "upscale / chanprune 95% CI | "
        "chanprune >= upscale (common) | upscale / ideal | chanprune / ideal |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|",
    ]
    wins = {}
    for b in batches:
        for res in results:
            for amount, row in res["amounts"].items():
                lat = row["latency"].get(b, {})
                if "upscale" not in lat:
                    continue
                r = _paired(row, b)
                same = r("upscale", "reorder_upm")
                ok = None if same is None else same >= 1.0
                ci = _paired_ci(row, b, "upscale", "reorder_upm")
                wins.setdefault(b, []).append((ok, same, res["model"], amount, ci, b))
                cells = (
                    r("baseline", "reorder"),
                    r("baseline", "ideal"),
                    r("upscale_base", "upscale"),
                    r("upscale_base", "baseline_upm"),
                    r("upscale_base", "reorder_upm"),
                    same,
                )
                L.append(
                    f"| {b} | {res['model']} | {amount} | "
                    + " | ".join(_fmt(v, ".3f") for v in cells)
                    + f" | {_fmt_ci(ci)} | {'—' if ok is None else 'yes' if ok else 'no'} | "
                    f"{_fmt(r('upscale', 'ideal_upm'), '.3f')} | "
                    f"{_fmt(r('reorder_upm', 'ideal_upm'), '.3f')} |"
                )
    L.append("")
    for b, oks in wins.items():
        vals = [o for o in oks if o[1] is not None]
        worst = min(vals, key=lambda o: o[1]) if vals else None
        L.append(
            f"**Batch {b}:** against the common baseline chanprune's reorder export is at least "
            f"as fast as apple-upscale's in {sum(bool(o[0]) for o in oks)} of {len(oks)} cells"
            + (
                f" (median upscale / chanprune {statistics.median(o[1] for o in vals):.3f}, "
                f"lowest {worst[1]:.3f}: {worst[2]} @{worst[3]})."
                if worst
                else "."
            )
        )
    every = [o for oks in wins.values() for o in oks]
    slower = [o for o in every if o[4] and o[4][1] < 1.0]
    faster = [o for o in every if o[4] and o[4][0] > 1.0]
    if every:
        L += [
            "",
            f"**Beyond noise (whole 95% interval of upscale / chanprune on one side of 1), over "
            f"all {len(every)} cells:** chanprune's reorder export faster in {len(faster)}, "
            "slower in "
            + (", ".join(f"{m} @{a} b{b} ({_fmt_ci(ci)})" for *_, m, a, ci, b in slower) or "none")
            + "; the rest are within noise.",
        ]
    L.append("")
    return L


def run_info(args, cmdline: str, started: float) -> dict:
    """Where and how the timings were taken: the report's header, kept in the JSON too so a
    report rewritten later (``--report-from``) still names the run it shows."""
    tuned = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    return {
        "machine": f"`{platform.processor() or platform.machine()}` ({platform.platform()}), "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"threads {args.threads}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "wall_min": round((time.time() - started) / 60, 1),
        "command": cmdline,
        "allocator": ", ".join(f"{k}={v}" for k, v in sorted(tuned.items())) or "glibc defaults",
    }


def write_report(results: list, args, run: dict, done: bool, rewritten: str = "") -> None:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latency.json"), "w") as f:
        json.dump(
            {"args": vars(args), "run": run, "complete": done, "results": results}, f, indent=1
        )

    L = []
    L.append("# chanprune CPU latency" + ("" if done else " — PARTIAL (run not finished)"))
    L.append("")
    L.append(f"- machine: {run['machine']}")
    L.append(f"- date: {run['date']}; wall time {run['wall_min']:.1f} min")
    L.append(f"- command: `{run['command']}`")
    if rewritten:
        L.append(f"- report rewritten from that run's JSON by `{rewritten}` (same timings)")
    L.append(f"- allocator: {run['allocator']}")
    L.append(
        f"- input {args.size}x{args.size}; warm-up {WARMUP}, then {args.reps} interleaved rounds "
        "(order per round: evaluation.timing.round_order(GROUPS, round), the contenders of each "
        "ratio adjacent); median per contender, ms; "
        "every ratio is paired: the median over rounds of the two times in the same round; "
        "torch.inference_mode"
    )
    L.append(
        "- masks: unconstrained, side=input, heuristic=l2, scope=local (baseline/reorder/ideal "
        "share them); constrained = constrained masks + baseline export"
    )
    L.append(
        "- upscale = apple-upscale 0.1.1 export of its own masks (input side, L2, unconstrained, "
        "local) at the row's amount, run on CPU through benchmarks/_upscale_shim.py "
        "(`.cuda()` no-op), `prune(is_not_ane=True)`; upscale_base = its `baseline=True` export; "
        "its output is checked against its masked model (|diff| <= 1e-4 max|y|); "
        "reorder of upscale's masks = chanprune's reorder export of apple-upscale's masked model "
        "(like-for-like with upscale)"
    )
    if args.note:
        L.append(f"- note: {args.note}")
    L.append("")

    batches = [str(b) for b in args.batches]
    summary = {}
    for b in batches:
        L.append(f"## Latency, batch {b} (median ms)")
        L.append("")
        L.append(
            "| model | amount | unpruned | constrained | baseline | reorder | ideal | upscale | "
            "upscale base | reorder/ideal | reorder/ideal 95% CI | 1 + gathers/ideal "
            "| baseline/reorder "
            "| upscale base/upscale "
            "| ort unpruned | ort baseline | ort reorder | ort baseline/reorder "
            "| reorder of upscale's masks | upscale/reorder, same masks |"
        )
        L.append("|---|---|" + "---:|" * 18)
        for res in results:
            for amount, row in res["amounts"].items():
                lat = row["latency"].get(b, {})
                up_missing = (
                    row.get("upscale_status") if row.get("upscale_status") != "ok" else None
                )
                cells = [_fmt(lat.get(c)) for c in CONTENDERS[:5]]
                if "upscale" in lat:
                    cells += [_fmt(lat["upscale"]), _fmt(lat.get("upscale_base"))]
                else:
                    cells += [up_missing or "n/a", "n/a"]
                r = _paired(row, b)
                r_ideal, r_base, r_up = (
                    r("reorder", "ideal"),
                    r("baseline", "reorder"),
                    r("upscale_base", "upscale"),
                )
                ci = _paired_ci(row, b, "reorder", "ideal")
                summary.setdefault((b, amount), []).append(
                    (res["model"], r_ideal, r_base, r_up, ci)
                )
                L.append(
                    f"| {res['model']} | {amount} | "
                    + " | ".join(cells)
                    + f" | {_fmt(r_ideal, '.3f')} | {_fmt_ci(ci)} | "
                    + f"{_fmt(_gather_bound(row, b), '.3f')} | "
                    + " | ".join(_fmt(v, ".3f") for v in (r_base, r_up))
                    + " | "
                    + " | ".join(_fmt(lat.get(c)) for c in ORT)
                    + f" | {_fmt(r('ort_baseline', 'ort_reorder'), '.3f')}"
                    + f" | {_fmt(lat.get('reorder_upm'))}"
                    + f" | {_fmt(r('upscale', 'reorder_upm'), '.3f')} |"
                )
        L.append("")
        for (bb, amount), vals in summary.items():
            if bb != b:
                continue
            ri = [(m, v, ci) for m, v, _, _, ci in vals if v is not None]
            rb = [(m, v) for m, _, v, _, _ in vals if v is not None]
            if ri:
                worst = max(ri, key=lambda t: t[1])
                above = [m for m, _, ci in ri if ci and ci[0] > 1.10]
                L.append(
                    f"**Summary batch {b}, amount {amount}:** median over models of reorder/ideal "
                    f"= {statistics.median(v for _, v, _ in ri):.3f} "
                    f"(worst {worst[1]:.3f}, {worst[0]}, 95% CI {_fmt_ci(worst[2])}; "
                    f"cells whose whole interval lies above 1.10: {', '.join(above) or 'none'}); "
                    f"median baseline/reorder = {statistics.median(v for _, v in rb):.3f} "
                    f"(min {min(v for _, v in rb):.3f}, max {max(v for _, v in rb):.3f})"
                )
                L.append("")

    L.extend(_overall(results, batches))
    L.extend(_speedup_table(results, batches))
    L.append("## Sizes (batch-1 MACs; copies = run-time gathers; copied bytes per sample)")
    L.append("")
    L.append(
        "| model | amount | params unpruned | params constrained | params reorder "
        "| params upscale | MACs unpruned | MACs constrained | MACs reorder | MACs upscale "
        "| copies baseline | "
        "copies reorder | copied B/sample baseline | copied B/sample reorder |"
    )
    L.append("|---|---|" + "---:|" * 12)
    for res in results:
        for amount, row in res["amounts"].items():
            s = row["sizes"]
            L.append(
                f"| {res['model']} | {amount} | "
                + " | ".join(
                    _fmt(s.get(k), ",")
                    for k in (
                        "unpruned_params",
                        "constrained_params",
                        "reorder_params",
                        "upscale_params",
                        "unpruned_macs",
                        "constrained_macs",
                        "reorder_macs",
                        "upscale_macs",
                        "baseline_copies",
                        "reorder_copies",
                        "baseline_copied_bytes",
                        "reorder_copied_bytes",
                    )
                )
                + " |"
            )
    L.append("")

    L.append("## Export time (s)")
    L.append("")
    L.append(
        "mask = chanprune.mask (includes the torch.export capture on the model's first amount); "
        "reorder/baseline = chanprune.export with the capture cached (includes verification); "
        "cold = mask + capture + reorder export on a fresh model (first amount only); "
        "upscale = apple-upscale compute+prune (its own trace each time)."
    )
    L.append("")
    L.append(
        "| model | amount | mask | reorder export | baseline export | constrained export | cold | "
        "upscale reorder | upscale baseline | upscale status |"
    )
    L.append("|---|---|" + "---:|" * 7 + "---|")
    for res in results:
        for amount, row in res["amounts"].items():
            e = row["export"]
            L.append(
                f"| {res['model']} | {amount} | "
                + " | ".join(
                    _fmt(e.get(k))
                    for k in (
                        "mask_s",
                        "reorder_s",
                        "baseline_s",
                        "constrained_s",
                        "cold_s",
                        "upscale_s",
                        "upscale_base_s",
                    )
                )
                + f" | {row.get('upscale_status')} |"
            )
    L.append("")
    errors = [e for r in results for e in r["errors"]]
    if errors:
        L.append("## Export failures")
        L.append("")
        L += [f"- {e}" for e in errors]
        L.append("")
    with open(os.path.join(args.out, "latency.md"), "w") as f:
        f.write("\n".join(L))
    _plot(results, args)


def _plot(results: list, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, amount = str(max(args.batches)), str(max(args.amounts))
    rows = [(r["model"], r["amounts"].get(amount, {}).get("latency", {}).get(b)) for r in results]
    rows = [(m, lat) for m, lat in rows if lat and lat.get("unpruned")]
    if not rows:
        return
    shown = [c for c in CONTENDERS[1:] if any(c in lat for _, lat in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 4.2))
    w = 0.8 / max(1, len(shown))
    for i, c in enumerate(shown):
        xs = [j + (i - (len(shown) - 1) / 2) * w for j in range(len(rows))]
        ys = [lat.get(c, float("nan")) / lat["unpruned"] for _, lat in rows]
        ax.bar(xs, ys, w, label=c)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([m for m, _ in rows], rotation=25, ha="right")
    ax.set_ylabel("latency / unpruned")
    ax.set_title(f"CPU ({args.threads} threads), batch {b}, amount {amount}, {args.size}px")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "latency.png"), dpi=120)
    plt.close(fig)


def rewrite_report(path: str, out: str, cmdline: str) -> int:
    """The report of an earlier run, from its JSON: for a change to the report alone, which
    should not cost a full rerun (nor pass off new timings as the old run's)."""
    with open(path) as f:
        saved = json.load(f)
    if "run" not in saved:
        print(f"{path} has no 'run' header (written before --report-from existed)", file=sys.stderr)
        return 2
    args = argparse.Namespace(**{**saved["args"], "out": out})
    write_report(saved["results"], args, saved["run"], saved["complete"], rewritten=cmdline)
    _log(f"rewrote {out}/latency.md, latency.png, latency.json from {path}")
    return 0


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--amounts", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: resnet18+mobilenet_v2, amount 0.5, batch 1, 3 reps, size 64",
    )
    ap.add_argument("--no-upscale", action="store_true", help="skip apple-upscale")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime contenders")
    ap.add_argument("--note", default="", help="free text added to the markdown header")
    ap.add_argument(
        "--report-from",
        metavar="JSON",
        help="time nothing: rewrite the report (markdown, plot, JSON) into --out from a "
        "latency.json a run wrote",
    )
    args = ap.parse_args(argv)
    cmdline = "python " + shlex.join(
        [os.path.relpath(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)]
    )
    if args.report_from:
        return rewrite_report(args.report_from, args.out, cmdline)
    if args.quick:
        args.models, args.amounts, args.batches = ["resnet18", "mobilenet_v2"], [0.5], [1]
        args.reps, args.size = 3, 64
    torch.set_num_threads(args.threads)
    started = time.time()
    _log(
        f"torch {torch.__version__}, {args.threads} threads, models {args.models}, "
        f"amounts {args.amounts}, batches {args.batches}, reps {args.reps}, size {args.size}"
    )

    results = []
    for name in args.models:
        t0 = time.perf_counter()
        _log(f"== {name}")
        try:
            results.append(bench_model(name, args))
        except Exception as e:
            traceback.print_exc()
            results.append(
                {"model": name, "amounts": {}, "errors": [f"{name}: {type(e).__name__}: {e}"]}
            )
        _log(f"== {name} done in {time.perf_counter() - t0:.0f}s")
        write_report(results, args, run_info(args, cmdline, started), done=False)
    write_report(results, args, run_info(args, cmdline, started), done=True)
    errors = [e for r in results for e in r["errors"]]
    minutes = (time.time() - started) / 60
    _log(f"wrote {args.out}/latency.md, latency.png, latency.json in {minutes:.1f} min")
    if errors:
        print("EXPORT FAILURES:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
