"""Export time, cold: chanprune vs apple-upscale on the same masked model, side by side.

Every contender starts from its own deep copy of one masked model (apple-upscale 0.1.1's own
masks: input side, L2, unconstrained, local), so nothing is cached between runs:

- ``chanprune``: ``chanprune.export(model, x)`` (capture with torch.export, analysis, layout
  solver, rewrite, and the check against the masked model);
- ``chanprune, symbolic batch``: the same with the marker-batch capture off
  (``capture/batch.py``: torch.export traces a symbolic batch instead of a static one);
- ``chanprune, symbolic + run_decompositions``: the same with both capture shortcuts off
  (``capture/functional.py`` too: what every capture cost before either);
- ``upscale``: apple-upscale's ``PruningManager(model).compute([x])`` + ``prune(is_not_ane=True)``
  (its own trace, its reorder export);
- ``chanprune mask+export``: ``chanprune.mask`` then ``export`` on a fresh unmasked copy (the
  whole job from a model, one capture shared by both steps).

Rounds are interleaved (order shuffled per round), after one untimed warm-up round; medians.

    python benchmarks/export_time.py [--models resnet50 efficientnet_v2_s] [--reps 5]
    chanprune bench export-time -- --reps 9
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

import chanprune
import chanprune.capture.trace as capture_mod
from chanprune.evaluation.timing import median_ci

sys.path.insert(0, str(Path(__file__).parent))
import _upscale_shim

RESULTS = Path(__file__).parent / "results"
TARGETS = {"resnet50": 1.0, "efficientnet_v2_s": 3.0}  # issue 3's targets, seconds
CONTENDERS = (
    "chanprune",
    "chanprune, symbolic batch",
    "chanprune, symbolic + run_decompositions",
    "upscale",
    "chanprune mask+export",
)


def _masked(name: str, x: torch.Tensor, amount: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(unpruned, masked) with apple-upscale's masks, or chanprune's same-kind masks without it."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    masked = copy.deepcopy(model)
    if _upscale_shim.available() is None:
        from upscale import MaskingManager

        with _upscale_shim.cpu_only(x.shape[-1]), torch.no_grad():
            MaskingManager(masked).importance().mask(amount=amount)
    else:
        chanprune.mask(masked, x, amount=amount, heuristic="l2", side="input")
    return model, masked


def _run(contender: str, model, masked, x, amount) -> float:
    if contender == "upscale":
        from upscale import PruningManager

        net = copy.deepcopy(masked)
        with _upscale_shim.cpu_only(x.shape[-1]), torch.no_grad():
            t0 = time.perf_counter()
            PruningManager(net).compute([x]).prune(is_not_ane=True)
            return time.perf_counter() - t0
    if contender == "chanprune mask+export":
        net = copy.deepcopy(model)
        t0 = time.perf_counter()
        chanprune.mask(net, x, amount=amount, heuristic="l2", side="input")
        chanprune.export(net, x)
        return time.perf_counter() - t0
    net = copy.deepcopy(masked)
    capture_mod.MARKED_PATH = contender == "chanprune"
    capture_mod.FAST_PATH = "run_decompositions" not in contender
    try:
        t0 = time.perf_counter()
        chanprune.export(net, x)
        return time.perf_counter() - t0
    finally:
        capture_mod.FAST_PATH = capture_mod.MARKED_PATH = True


def bench(name: str, args) -> dict:
    x = torch.randn(1, 3, args.size, args.size)
    model, masked = _masked(name, x, args.amount)
    contenders = [c for c in CONTENDERS if c != "upscale" or _upscale_shim.available() is None]
    times: dict[str, list[float]] = {c: [] for c in contenders}
    status: dict[str, str] = {}
    for r in range(args.reps + 1):  # round 0 warms up
        order = list(contenders)
        random.Random(r).shuffle(order)
        for c in order:
            if c in status:
                continue
            try:
                dt = _run(c, model, masked, x, args.amount)
            except Exception as e:  # a contender that cannot export this model: say why
                status[c] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
                continue
            if r:
                times[c].append(dt)
        print(
            f"{name} round {r}: "
            + ", ".join(f"{c} {times[c][-1]:.2f}s" for c in contenders if r and times[c]),
            file=sys.stderr,
            flush=True,
        )
    return {
        "model": name,
        "median_s": {c: statistics.median(v) for c, v in times.items() if v},
        "runs_s": times,
        "status": status,
    }


def write(results: list[dict], args, started: float) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_time.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Export time, cold (seconds, median)",
        "",
        f"- machine: `{platform.machine()}` ({platform.platform()}), torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, threads {torch.get_num_threads()}",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"wall time {(time.time() - started) / 60:.1f} min",
        f"- command: `python benchmarks/export_time.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- input 1x3x{args.size}x{args.size}; masks: apple-upscale 0.1.1's own (input side, L2, "
        f"unconstrained, local, amount {args.amount}), the same masked model for every contender; "
        f"{args.reps} interleaved rounds after a warm-up round, each from a fresh deep copy "
        "(nothing cached); see the script's docstring for what each column times",
        "",
        "| model | " + " | ".join(CONTENDERS) + " | chanprune 95% CI | target | "
        "chanprune meets it | upscale / chanprune |",
        "|---|" + "---:|" * (len(CONTENDERS) + 2) + ":-:|---:|",
    ]
    for res in results:
        med = res["median_s"]
        cells = [f"{med[c]:.2f}" if c in med else res["status"].get(c, "—") for c in CONTENDERS]
        target = TARGETS.get(res["model"])
        ours = med.get("chanprune", float("nan"))
        ci = median_ci(res["runs_s"].get("chanprune", []))
        ok = "—" if target is None else _verdict(ours, ci, target)
        ratio = med.get("upscale", float("nan")) / ours
        lines.append(
            f"| {res['model']} | "
            + " | ".join(cells)
            + " | "
            + ("—" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}")
            + f" | {target or '—'} | {ok} | {ratio:.1f}x |"
        )
    lines += [
        "",
        "'chanprune meets it': yes or no where the median's whole 95% interval "
        "(`evaluation.timing.median_ci`) lies on one side of the target, else the median's side "
        "and 'within noise'.",
    ]
    (out / "export_time.md").write_text("\n".join(lines) + "\n")
    _plot(results, out)


def _verdict(median: float, ci: tuple[float, float] | None, target: float) -> str:
    """Whether a median time meets a target, and whether noise could reverse that."""
    side = "yes" if median <= target else "no"
    if ci is not None and (ci[1] <= target or ci[0] > target):
        return side
    return f"{side} (within noise)"


def _plot(results: list[dict], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(results), 3.6))
    width = 0.8 / len(CONTENDERS)
    for i, c in enumerate(CONTENDERS):
        xs = [j + i * width for j in range(len(results))]
        ax.bar(xs, [r["median_s"].get(c, 0) for r in results], width, label=c)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))])
    ax.set_xticklabels([r["model"] for r in results], fontsize=8)
    ax.set_ylabel("export time, cold (s, median)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "export_time.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_v2_s"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--amount", type=float, default=0.25)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS), help="folder for the table, json and plot")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.time()
    results = [bench(name, args) for name in args.models]
    write(results, args, started)
    print((Path(args.out) / "export_time.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
