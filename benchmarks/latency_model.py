"""The latency model against measured whole models, and latency targets met by measurement.

Part 1 (the model's error): per model (torchvision, random init, 224x224, batch 1, 2 threads),
masks at two amounts on both sides, unconstrained and constrained (L1), exported with
``reorder``; the latency model's predicted ratio to the unpruned model
(``chanprune.latency.LatencyModel``, its table measured in this run at first use) against the
measured ratio, paired per round with the unpruned model (``chanprune.latency.measure``), in eager
PyTorch and in ONNX Runtime (non-spinning sessions). The ONNX Runtime prediction is the CPU
table's (the model has no table of ORT's fused kernels), so its error shows what the target's
measured correction has to fix there.

Part 2 (targets): ``chanprune.mask(target_latency=t, backend=...)`` per model and target; the
export's measured ratio (mask's own final measurement, then an independent re-measurement) and
how far it is from the target.

Time it with nothing else running on the machine.

    python benchmarks/latency_model.py                 # writes results/latency_model.{json,md,png}
    python benchmarks/latency_model.py --models resnet18 --rounds 9 --out /tmp/lm
"""

from __future__ import annotations

import argparse
import copy
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
AMOUNTS = (0.25, 0.5)
TARGETS = (0.8, 0.6)


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None).eval()


def model_error(name: str, rounds: int, backends: list[str]) -> list[dict]:
    """Predicted vs measured ratio for each mask variant of ``name``."""
    import chanprune
    from chanprune.latency.measure import measure_calls, runner
    from chanprune.latency.model import LatencyModel

    base = build(name)
    x = torch.randn(1, 3, 224, 224)
    unpruned = {b: runner(base, (x,), {}, b) for b in backends}  # built once per backend
    lm = LatencyModel("eager")
    # the reference is the unmasked export: the same ATen ops as the pruned exports
    full = lm.predict(chanprune.export(base, x, check=False, width_quantum=1), x).seconds
    rows = []
    for side in ("output", "input"):
        for constrained in (False, True):
            for amount in AMOUNTS:
                model = copy.deepcopy(base)
                chanprune.mask(model, x, amount=amount, side=side, constrained=constrained)
                pruned = chanprune.export(model, x)
                pred = lm.predict(pruned, x).seconds / full
                row = {
                    "model": name,
                    "side": side,
                    "constrained": constrained,
                    "amount": amount,
                    "predicted": pred,
                }
                for backend in backends:
                    run = runner(pruned, (x,), {}, backend)
                    m = measure_calls(run, unpruned[backend], rounds=rounds)
                    row[backend] = m.ratio
                    row[f"{backend}_ci"] = m.interval
                rows.append(row)
                print(
                    f"{name} {side:6s} {'con' if constrained else 'unc'} {amount}: predicted "
                    f"{pred:.3f} " + " ".join(f"{b} {row[b]:.3f}" for b in backends),
                    flush=True,
                )
    return rows


def targets(name: str, rounds: int, backends: list[str]) -> list[dict]:
    """mask(target_latency=t) per target and backend: measured ratio against the target."""
    import chanprune
    from chanprune.latency.measure import measure_ratio

    base = build(name)
    x = torch.randn(1, 3, 224, 224)
    rows = []
    for backend in backends:
        for t in TARGETS:
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = chanprune.mask(model, x, target_latency=t, backend=backend)
            seconds = time.perf_counter() - t0
            pruned = chanprune.export(model, x)
            again = measure_ratio(pruned, base, x, backend=backend, rounds=rounds)
            rows.append(
                {
                    "model": name,
                    "backend": backend,
                    "target": t,
                    "amount": got.amount,
                    "predicted": got.predicted,
                    "measured": got.ratio,
                    "remeasured": again.ratio,
                    "remeasured_ci": again.interval,
                    "mask_s": seconds,
                    "warning": "; ".join(str(w.message) for w in caught)[:200],
                }
            )
            print(
                f"{name} {backend} target {t}: measured {got.ratio:.3f}, re-measured "
                f"{again.ratio:.3f} (predicted {got.predicted:.3f}) in {seconds:.0f} s",
                flush=True,
            )
    return rows


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"


def write_report(data: dict, out: Path) -> None:
    run, err, tgt = data["run"], data["error"], data["targets"]
    backends = run["backends"]
    lines = [
        "# Latency model: predicted vs measured, and latency targets",
        "",
        "Written by `benchmarks/latency_model.py` (rerun it to reproduce; time it with nothing "
        "else running on the machine). Measured with nothing else running on the machine.",
        "",
        f"- machine: {run['machine']}, torch {run['torch']}, {run['threads']} threads, "
        f"{run['rounds']} paired rounds per measurement, batch 1, 224x224, run took "
        f"{run['minutes']:.1f} min, {run['date']}",
        "- masks: L1, local scope, the amount of each row, both sides, unconstrained and "
        "constrained; exports: `reorder` with the CPU's width quantum (the defaults)",
        "- predicted: the latency model's ratio of the export to the unpruned model (its calls "
        "timed alone and summed); measured: the median of per-round paired ratios, 95% interval",
        "",
        "## The model's error",
        "",
        "| model | side | masks | amount | predicted | "
        + " | ".join(f"{b} measured | {b} error" for b in backends)
        + " |",
        "|---|---|---|---:|---:|" + "---:|---:|" * len(backends),
    ]
    for r in err:
        cells = []
        for b in backends:
            cells += [f"{r[b]:.3f} {_ci(r[b + '_ci'])}", f"{r['predicted'] - r[b]:+.3f}"]
        lines.append(
            f"| {r['model']} | {r['side']} | "
            f"{'constrained' if r['constrained'] else 'unconstrained'} | {r['amount']} | "
            f"{r['predicted']:.3f} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Summary (error = predicted - measured, in ratio points):", ""]
    for b in backends:
        e = [abs(r["predicted"] - r[b]) for r in err]
        rel = [abs(r["predicted"] / r[b] - 1) for r in err]
        lines.append(
            f"- {b}: median |error| {statistics.median(e):.3f}, max {max(e):.3f}; relative "
            f"median {statistics.median(rel):.1%}, max {max(rel):.1%} over {len(e)} exports"
        )
    if tgt:
        lines += [
            "",
            "## Latency targets (`chanprune.mask(target_latency=t, backend=b)`)",
            "",
            "| model | backend | target | amount | predicted | measured by mask | re-measured | "
            "within 5% | mask s | note |",
            "|---|---|---:|---:|---:|---:|---:|:-:|---:|---|",
        ]
        for r in tgt:
            ok = abs(r["remeasured"] / r["target"] - 1) <= 0.05
            lines.append(
                f"| {r['model']} | {r['backend']} | {r['target']} | {r['amount']:.3f} | "
                f"{r['predicted']:.3f} | {r['measured']:.3f} | {r['remeasured']:.3f} "
                f"{_ci(r['remeasured_ci'])} | {'yes' if ok else 'no'} | {r['mask_s']:.0f} | "
                f"{r['warning'] or ''} |"
            )
        n_ok = sum(abs(r["remeasured"] / r["target"] - 1) <= 0.05 for r in tgt)
        lines += ["", f"{n_ok} of {len(tgt)} re-measured ratios are within 5% of their target."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency_model.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for b, mk in zip(backends, "os", strict=False):
        ax.scatter([r[b] for r in err], [r["predicted"] for r in err], marker=mk, label=b)
    lo = min([r["predicted"] for r in err] + [r[b] for r in err for b in backends]) - 0.05
    ax.plot([lo, 1.05], [lo, 1.05], "k--", lw=0.8)
    ax.set_xlabel("measured ratio to unpruned")
    ax.set_ylabel("predicted ratio")
    ax.legend()
    ax.set_title("latency model vs measurement")
    fig.tight_layout()
    fig.savefig(out / "latency_model.png", dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", nargs="+", default=["eager", "ort"])
    p.add_argument("--no-targets", action="store_true", help="only the model's error")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="latency table folder (default: a new one, so the table is timed in this run)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["CHANPRUNE_CACHE"] = str(args.cache or tempfile.mkdtemp(prefix="chanprune-lm-"))
    t0 = time.perf_counter()
    err, tgt = [], []
    for name in args.models:
        err += model_error(name, args.rounds, args.backends)
        if not args.no_targets:
            tgt += targets(name, args.rounds, args.backends)
    run = {
        "machine": f"{platform.machine()}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "backends": args.backends,
        "minutes": (time.perf_counter() - t0) / 60,
        "date": time.strftime("%Y-%m-%d"),
    }
    data = {"run": run, "error": err, "targets": tgt}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency_model.json").write_text(json.dumps(data, indent=1))
    write_report(data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
