"""Where pruned models lose time in ONNX Runtime: its optimized graphs, its profiler, and the
latency of each export method against the unpruned model.

Per model (torchvision, random init, 224x224, batch 1, 2 threads) and side, 30% L1 masks
(unconstrained, and constrained for comparison) exported with ``reorder``, ``baseline``,
``dense`` (no run-time copies) and ``auto`` (dense only where cheap). For each contender:

- graph: the ORT-optimized graph's node counts (no timing): convolutions in the blocked NCHWc
  layout vs plain ones, NCHWc<->NCHW conversions (ReorderInput/ReorderOutput), and channel
  copies (Gather, Pad, Slice, ScatterND/ScatterElements);
- profile: ORT's own profiler, microseconds per run by op type, over ``--profile-runs`` runs;
- latency: time ratio to the unpruned model in ORT and eager PyTorch, paired per round
  (contenders interleaved), with MAC ratio and efficiency (time ratio over MAC ratio).

Time it with nothing else running on the machine (``--no-timing`` writes the graph columns
only).

    python benchmarks/ort_profile.py                  # writes results/ort_graphs.{json,md}
    python benchmarks/ort_profile.py --models resnet18 --rounds 9 --out /tmp/op
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0")
CONTENDERS = ("unpruned", "constrained", "reorder", "baseline", "dense", "auto")
AMOUNT = 0.3
COPY_OPS = ("Gather", "GatherElements", "Pad", "Slice", "ScatterND", "ScatterElements", "Concat")


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None).eval()


def contenders(name: str, side: str, x: torch.Tensor) -> dict[str, torch.nn.Module]:
    import chanprune

    base = build(name)
    masked = copy.deepcopy(base)
    chanprune.mask(masked, x, amount=AMOUNT, side=side)
    con = copy.deepcopy(base)
    chanprune.mask(con, x, amount=AMOUNT, side=side, constrained=True)
    return {
        "unpruned": base,
        "constrained": chanprune.export(con, x),
        "reorder": chanprune.export(masked, x),
        "baseline": chanprune.export(masked, x, method="baseline"),
        "dense": chanprune.export(masked, x, method="dense"),
        "auto": chanprune.export(masked, x, method="auto"),
    }


def session(path: Path, threads: int, profile: bool = False, optimized: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(path.with_suffix(""))
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def graph_counts(path: Path, threads: int) -> dict[str, int]:
    """Node counts of the ORT-optimized graph: what runs blocked, what converts, what copies."""
    import onnx

    opt = path.with_suffix(".opt.onnx")
    session(path, threads, optimized=opt)
    nodes = onnx.load(str(opt)).graph.node
    kinds = collections.Counter((n.domain or "ai.onnx") + ":" + n.op_type for n in nodes)
    blocked = sum(v for k, v in kinds.items() if k.endswith("nchwc:Conv"))
    plain = sum(v for k, v in kinds.items() if k.endswith((":Conv", ":FusedConv"))) - blocked
    return {
        "conv_nchwc": blocked,
        "conv_plain": plain,
        "reorders": sum(v for k, v in kinds.items() if ":Reorder" in k),
        "copies": sum(v for k, v in kinds.items() if k.split(":")[1] in COPY_OPS),
    }


def profile(path: Path, feed: dict, threads: int, runs: int) -> dict[str, float]:
    """Microseconds per run by op type, from ORT's profiler."""
    sess = session(path, threads, profile=True)
    for _ in range(3):
        sess.run(None, feed)
    sess.end_profiling()  # drop the warm-up runs' events
    sess = session(path, threads, profile=True)
    for _ in range(runs):
        sess.run(None, feed)
    out = sess.end_profiling()
    events = json.loads(Path(out).read_text())
    by_op: dict[str, float] = collections.defaultdict(float)
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            by_op[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0) / runs
    Path(out).unlink(missing_ok=True)
    return dict(by_op)


def bench(name: str, side: str, args, tmp: Path) -> list[dict]:
    from chanprune.deploy.onnx import to_onnx
    from chanprune.evaluation.stats import count_macs
    from chanprune.evaluation.timing import median_ci, round_order

    x = torch.randn(1, 3, 224, 224)
    mods = contenders(name, side, x)
    full_macs = count_macs(mods["unpruned"], x)
    rows, runners = {}, {}
    for c, m in mods.items():
        path = to_onnx(m, (x,), tmp / f"{name}-{side}-{c}.onnx")
        row = {"model": name, "side": side, "contender": c, "macs": count_macs(m, x) / full_macs}
        row.update(graph_counts(path, args.threads))
        if not args.no_timing:
            sess = session(path, args.threads)
            feed = {sess.get_inputs()[0].name: x.numpy()}
            row["profile"] = profile(path, feed, args.threads, args.profile_runs)
            runners[f"ort:{c}"] = lambda s=sess, f=feed: s.run(None, f)
            runners[f"eager:{c}"] = lambda m=m: m(x)
        rows[c] = row
    if not args.no_timing:
        times: dict[str, list[float]] = {k: [] for k in runners}
        with torch.inference_mode():
            for fn in runners.values():
                for _ in range(3):
                    fn()
            for r in range(args.rounds):
                groups = [[f"{b}:{c}" for c in CONTENDERS] for b in ("ort", "eager")]
                for key in round_order(groups, r):
                    t0 = time.perf_counter()
                    runners[key]()
                    times[key].append(time.perf_counter() - t0)
        for b in ("ort", "eager"):
            base = times[f"{b}:unpruned"]
            for c in CONTENDERS:
                ratios = [t / u for t, u in zip(times[f"{b}:{c}"], base, strict=True)]
                rows[c][f"{b}_ratio"] = statistics.median(ratios)
                rows[c][f"{b}_ci"] = median_ci(ratios)
                rows[c][f"{b}_ms"] = statistics.median(times[f"{b}:{c}"]) * 1e3
    for c in CONTENDERS:
        r = rows[c]
        print(
            f"{name} {side} {c:11s} macs {r['macs']:.3f} nchwc {r['conv_nchwc']} plain "
            f"{r['conv_plain']} reorders {r['reorders']} copies {r['copies']}"
            + (
                f" | ort {r['ort_ratio']:.3f} eager {r['eager_ratio']:.3f}"
                if "ort_ratio" in r
                else ""
            ),
            flush=True,
        )
    return list(rows.values())


def _ci(ci) -> str:
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def write_report(data: dict, out: Path) -> None:
    run, rows = data["run"], data["rows"]
    timed = any("ort_ratio" in r for r in rows)
    lines = [
        "# ONNX Runtime: where pruned models lose time",
        "",
        "Written by `benchmarks/ort_profile.py` (rerun it to reproduce; time it with nothing "
        "else running on the machine)."
        + (" Measured with nothing else running on the machine." if timed else ""),
        "",
        f"- machine: {run['machine']}, torch {run['torch']}, onnxruntime {run['ort']}, "
        f"{run['threads']} threads, batch 1, 224x224, {run['date']}, run took "
        f"{run['minutes']:.1f} min",
        f"- masks: {AMOUNT:.0%} L1, local scope; `constrained`: constrained masks at the same "
        "amount (reorder export); `reorder` / `baseline` / `dense` / `auto`: the unconstrained "
        "masks "
        "exported with that method",
        "- graph columns count nodes of ORT's optimized graph: convolutions in the blocked "
        "NCHWc layout / plain, NCHWc<->NCHW conversions, channel copies (Gather, Pad, Slice, "
        "Scatter, Concat)",
    ]
    if timed:
        lines += [
            f"- latency: {run['rounds']} rounds, all contenders of both backends interleaved "
            "(each backend's contenders adjacent in a shuffled order), ratio = median of "
            "per-round ratios to the unpruned model, 95% interval; efficiency = time ratio / "
            "MAC ratio",
            "- profile: ORT's profiler, microseconds per run spent in conversions (Reorder*), "
            "channel copies, and convolutions",
        ]
    head = "| model | side | contender | MACs | NCHWc convs | plain convs | reorders | copies |"
    sep = "|---|---|---|---:|---:|---:|---:|---:|"
    if timed:
        head += (
            " ORT ratio | ORT eff. | eager ratio | eager eff. | ORT us reorder | ORT us copy"
            " | ORT us conv |"
        )
        sep += "---:|---:|---:|---:|---:|---:|---:|"
    lines += ["", head, sep]
    for r in rows:
        cells = (
            f"| {r['model']} | {r['side']} | {r['contender']} | {r['macs']:.3f} | "
            f"{r['conv_nchwc']} | {r['conv_plain']} | {r['reorders']} | {r['copies']} |"
        )
        if timed:
            p = r["profile"]
            reorder = sum(v for k, v in p.items() if k.startswith("Reorder"))
            copy_us = sum(v for k, v in p.items() if k in COPY_OPS)
            conv = sum(v for k, v in p.items() if "Conv" in k)
            cells += (
                f" {r['ort_ratio']:.3f}{_ci(r['ort_ci'])} | {r['ort_ratio'] / r['macs']:.2f} | "
                f"{r['eager_ratio']:.3f}{_ci(r['eager_ci'])} | "
                f"{r['eager_ratio'] / r['macs']:.2f} | {reorder:.0f} | {copy_us:.0f} | "
                f"{conv:.0f} |"
            )
        lines.append(cells)
    if timed:
        lines += ["", "## Summary", ""]
        for c in CONTENDERS[1:]:
            sel = [r for r in rows if r["contender"] == c]
            for b in ("ort", "eager"):
                vals = [r[f"{b}_ratio"] for r in sel]
                lines.append(
                    f"- {c}, {b}: time ratio to unpruned median {statistics.median(vals):.3f} "
                    f"(max {max(vals):.3f}); slower than unpruned in "
                    f"{sum(v > 1 for v in vals)} of {len(vals)} cells"
                )
        for a, b in (
            ("dense", "reorder"),
            ("auto", "reorder"),
            ("auto", "dense"),
            ("reorder", "baseline"),
            ("dense", "constrained"),
        ):
            for be in ("ort", "eager"):
                pairs = [
                    (r[f"{be}_ratio"], s[f"{be}_ratio"])
                    for r in rows
                    for s in rows
                    if r["contender"] == a
                    and s["contender"] == b
                    and (r["model"], r["side"]) == (s["model"], s["side"])
                ]
                q = [x / y for x, y in pairs]
                lines.append(
                    f"- {a} / {b}, {be}: median {statistics.median(q):.3f} "
                    f"(range {min(q):.3f}-{max(q):.3f})"
                )
    out.mkdir(parents=True, exist_ok=True)
    (out / "ort_graphs.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    import onnxruntime

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--sides", nargs="+", default=["output", "input"])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile-runs", type=int, default=3)
    p.add_argument("--no-timing", action="store_true", help="graph columns only")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for side in args.sides:
                rows += bench(name, side, args, Path(tmp))
    run = {
        "machine": f"{platform.machine()}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}",
        "torch": torch.__version__,
        "ort": onnxruntime.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "minutes": (time.perf_counter() - t0) / 60,
        "date": time.strftime("%Y-%m-%d"),
    }
    data = {"run": run, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ort_graphs.json").write_text(json.dumps(data, indent=1))
    write_report(data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
