"""Width alignment: the same masks exported with dense widths rounded to the CPU's quantum and
without (``export(width_quantum=1)``), eager PyTorch and ONNX Runtime.

Per model (torchvision, random init, 224x224): 30% L1 on the output side (the CLI's default),
unconstrained, exported with ``reorder`` twice. Three contenders (unpruned, unaligned, aligned)
run interleaved in a shuffled order each round, paired per round, at batch 1 and 8 with 2
threads (ORT sessions from ``chanprune.deploy.ort_session``: no spinning). Reported per cell:
the median of the per-round ratio aligned/unaligned with its 95% interval, each export's time
and MACs relative to the unpruned model and its efficiency (time ratio over MAC ratio), and how
many layers changed width. Time it with nothing else running on the machine.

    python benchmarks/widths.py                      # writes results/widths.{json,md,png}
    python benchmarks/widths.py --models resnet18 --rounds 10 --out /tmp/w
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0")
CONTENDERS = ("unpruned", "unaligned", "aligned")


def _widths(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in module.named_parameters() if p.dim() > 1}


def _runner(module, x, backend: str, tmp: Path, name: str):
    if backend == "eager":
        return lambda: module(x)
    from chanprune.deploy.onnx import ort_session, to_onnx

    path = to_onnx(module, (x,), tmp / f"{name}.onnx")
    session = ort_session(path, threads=torch.get_num_threads())
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def bench_model(name: str, batches: list[int], rounds: int, backends: list[str]) -> dict:
    import torchvision

    import chanprune
    from chanprune.evaluation.stats import count_macs
    from chanprune.evaluation.timing import paired_ratio, round_order
    from chanprune.liveness.rounding import default_width_quantum

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        unpruned = torchvision.models.get_model(name, weights=None).eval()
        unpruned.load_state_dict(model.state_dict())
        chanprune.mask(model, x, amount=0.3)
        quantum = default_width_quantum()
        modules = {
            "unpruned": unpruned,
            "unaligned": chanprune.export(model, x, width_quantum=1),
            "aligned": chanprune.export(model, x, width_quantum=quantum),
        }
    macs = {k: count_macs(m, x) for k, m in modules.items()}
    a, b = _widths(modules["unaligned"]), _widths(modules["aligned"])
    row = {
        "model": name,
        "quantum": quantum,
        "changed_layers": sum(a[k] != b[k] for k in a),
        "layers": len(a),
        "macs": {k: v / macs["unpruned"] for k, v in macs.items()},
        "cells": [],
    }
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for batch in batches:
            xb = torch.randn(batch, 3, 224, 224)
            for backend in backends:
                run = {
                    k: _runner(m, xb, backend, Path(tmp), f"{k}{batch}") for k, m in modules.items()
                }
                for fn in run.values():  # warm-up
                    fn(), fn()
                times = {k: [] for k in CONTENDERS}
                for r in range(rounds):
                    for k in round_order([list(CONTENDERS)], r):
                        t0 = time.perf_counter()
                        run[k]()
                        times[k].append((time.perf_counter() - t0) * 1e3)
                cell = {"batch": batch, "backend": backend, "ms": times}
                ratio, ci = paired_ratio(times["aligned"], times["unaligned"])
                cell["aligned_over_unaligned"] = [ratio, ci]
                for k in ("unaligned", "aligned"):
                    r_, ci_ = paired_ratio(times[k], times["unpruned"])
                    cell[f"{k}_over_unpruned"] = [r_, ci_]
                    cell[f"{k}_efficiency"] = r_ / row["macs"][k]
                row["cells"].append(cell)
                print(
                    f"{name} b{batch} {backend}: aligned/unaligned {ratio:.3f} {ci}, "
                    f"aligned/unpruned {cell['aligned_over_unpruned'][0]:.3f}",
                    flush=True,
                )
    return row


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "—"


def write_report(results: list[dict], run: dict, out: Path) -> None:
    lines = [
        "# Width alignment: aligned vs unaligned exports of the same masks",
        "",
        "Written by `benchmarks/widths.py` (rerun it to reproduce; time it with nothing else "
        "running on the machine).",
        "",
        f"- machine: {run['machine']}, torch {run['torch']}, onnxruntime {run['ort']}, "
        f"{run['threads']} threads, CPU capability {run['capability']}",
        f"- {run['rounds']} rounds per cell, contenders interleaved in a shuffled order each "
        "round; ratios are medians of per-round ratios with 95% intervals",
        "- masks: 30% L1, output side, unconstrained; exports: `reorder`, "
        "`width_quantum=1` (unaligned) and the CPU's quantum (aligned)",
        f"- run took {run['minutes']:.1f} min, {run['date']}",
        "",
        "| model | quantum | layers changed | MACs unaligned | MACs aligned | batch | backend "
        "| aligned / unaligned | unaligned / unpruned | aligned / unpruned "
        "| efficiency unaligned | efficiency aligned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    changed = []
    for r in results:
        for c in r["cells"]:
            ratio, ci = c["aligned_over_unaligned"]
            if r["changed_layers"]:
                changed.append((c["backend"], ratio))
            lines.append(
                f"| {r['model']} | {r['quantum']} | {r['changed_layers']}/{r['layers']} "
                f"| {r['macs']['unaligned']:.3f} | {r['macs']['aligned']:.3f} | {c['batch']} "
                f"| {c['backend']} | {ratio:.3f} {_ci(ci)} "
                f"| {c['unaligned_over_unpruned'][0]:.3f} | {c['aligned_over_unpruned'][0]:.3f} "
                f"| {c['unaligned_efficiency']:.2f} | {c['aligned_efficiency']:.2f} |"
            )
    lines += ["", "## Summary", ""]
    for backend in sorted({b for b, _ in changed}):
        rs = [x for b, x in changed if b == backend]
        lines.append(
            f"- {backend}: median aligned/unaligned over the {len(rs)} cells where a width "
            f"changed: **{statistics.median(rs):.3f}** (range {min(rs):.3f}-{max(rs):.3f})"
        )
    lines += [
        "",
        "Efficiency is a pruned export's time ratio to the unpruned model over its MAC ratio "
        "(1: it runs exactly as much faster as it has fewer MACs).",
    ]
    (out / "widths.md").write_text("\n".join(lines) + "\n")
    (out / "widths.json").write_text(json.dumps({"run": run, "results": results}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels, values, lows, highs = [], [], [], []
    for r in results:
        for c in r["cells"]:
            ratio, ci = c["aligned_over_unaligned"]
            labels.append(f"{r['model']}\nb{c['batch']} {c['backend']}")
            values.append(ratio)
            lows.append(ratio - (ci[0] if ci else ratio))
            highs.append((ci[1] if ci else ratio) - ratio)
    ax.bar(range(len(values)), values, yerr=[lows, highs], color="tab:blue")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(values)), labels, fontsize=6, rotation=90)
    ax.set_ylabel("aligned / unaligned time")
    ax.set_title("Width alignment (lower is better)")
    fig.tight_layout()
    fig.savefig(out / "widths.png", dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--backends", nargs="+", default=["eager", "ort"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.pop("CHANPRUNE_WIDTH_QUANTUM", None)
    started = time.time()
    results = [bench_model(m, args.batches, args.rounds, args.backends) for m in args.models]
    import onnxruntime

    run = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "ort": onnxruntime.__version__,
        "threads": args.threads,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "rounds": args.rounds,
        "minutes": (time.time() - started) / 60,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(results, run, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
