"""Grouped convolutions: per-group channel counts rounded up to a multiple of 8, or not.

    python benchmarks/studies/group_quantum.py [--models regnet_y_800mf resnext50_32x4d] [--reps 12]

The exporter gives every group of a grouped convolution the same channel count, the fullest
group's (``analysis/rules/linear.py``), and rounds it up to a multiple of ``export``'s
``group_quantum`` (default 8; never above the group's original size), the extra slots filled
with zero-weight rows. Two tables:

- kernels: one grouped 3x3 convolution at RegNet-Y-800MF's shapes (batch 8) with 16 channels a
  group (unpruned) and with fewer, time relative to 16: why the rounding exists;
- models: the reorder export with quantum 1 and 8 from the same masks (chanprune's: input side,
  L2, unconstrained, local), each against the unpruned model.

Interleaved rounds (order shuffled per round) after a warm-up; paired ratios with
distribution-free 95% intervals (``evaluation.timing.paired_ratio``). Writes
``<out>/group_quantum.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

import chanprune
from chanprune.evaluation.timing import paired_ratio

RESULTS = Path(__file__).parent / "results"
QUANTA = (1, 8)


def _exports(name: str, amount: float, x: torch.Tensor) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    unpruned = copy.deepcopy(model)
    chanprune.mask(model, x, amount=amount, heuristic="l2", side="input")
    mods = {"unpruned": unpruned}
    for q in QUANTA:
        mods[f"quantum {q}"] = chanprune.export(model, x, group_quantum=q)
    return mods


def _rounds(calls: dict, reps: int) -> dict:
    """ms per round of each zero-argument call: 2 warm-up runs, then interleaved rounds."""
    times: dict = {k: [] for k in calls}
    with torch.inference_mode():
        for call in calls.values():
            for _ in range(2):
                call()
        for r in range(reps):
            order = list(calls)
            random.Random(r).shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                calls[k]()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def _ratio(times: dict, a: str, b: str) -> str:
    r, ci = paired_ratio(times[a], times[b])
    return f"{r:.3f}" + ("" if ci is None else f" ({ci[0]:.3f}-{ci[1]:.3f})")


KERNEL_SHAPES = ((4, 56), (9, 28), (20, 14))  # (groups, size): RegNet-Y-800MF's 3x3 stages
WIDTHS = (16, 15, 13, 12, 8)  # channels a group, in and out


def _kernels(reps: int) -> list[str]:
    """Per-group width against time, one grouped convolution at a time (batch 8)."""
    rows = []
    for groups, size in KERNEL_SHAPES:
        calls = {}
        for w in WIDTHS:
            conv = torch.nn.Conv2d(groups * w, groups * w, 3, padding=1, groups=groups).eval()
            calls[w] = functools.partial(conv, torch.randn(8, groups * w, size, size))
        times = _rounds(calls, reps)
        cells = [f"{statistics.median(times[w]):.2f}" for w in WIDTHS]
        cells += [_ratio(times, w, 16) for w in WIDTHS[1:]]
        rows.append(f"| {groups} | {size}x{size} | " + " | ".join(cells) + " |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["regnet_y_800mf", "resnext50_32x4d"])
    ap.add_argument("--amounts", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.time()
    x1 = torch.randn(1, 3, 224, 224)
    kernels = _kernels(args.reps)
    lines = []
    for name in args.models:
        for amount in args.amounts:
            mods = _exports(name, amount, x1)
            params = {k: sum(p.numel() for p in m.parameters()) for k, m in mods.items()}
            for b in args.batches:
                x = torch.randn(b, 3, 224, 224)
                times = _rounds({k: functools.partial(m, x) for k, m in mods.items()}, args.reps)
                med = {k: statistics.median(v) for k, v in times.items()}
                lines.append(
                    f"| {name} | {amount} | {b} | {med['unpruned']:.1f} | "
                    f"{med['quantum 1']:.1f} | {med['quantum 8']:.1f} | "
                    f"{_ratio(times, 'quantum 8', 'quantum 1')} | "
                    f"{_ratio(times, 'quantum 1', 'unpruned')} | "
                    f"{_ratio(times, 'quantum 8', 'unpruned')} | "
                    f"{params['quantum 1'] / 1e6:.3f} | {params['quantum 8'] / 1e6:.3f} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = [
        "# Grouped convolutions: per-group counts rounded to a multiple of 8, or not",
        "",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"threads {args.threads}; {datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"wall time {(time.time() - started) / 60:.1f} min",
        "- command: `python benchmarks/studies/group_quantum.py"
        + f" {' '.join(sys.argv[1:])}".rstrip()
        + "`",
        f"- input 224x224; chanprune's masks (input side, L2, unconstrained, local); reorder "
        f"export with `group_quantum` 1 and 8 from the same masked model; {args.reps} interleaved "
        "rounds after 2 warm-up runs; medians (ms); ratios paired per round, 95% interval in "
        "brackets",
        "",
        "## Kernels: one grouped 3x3 convolution, batch 8, channels a group in and out",
        "",
        "| groups | size | "
        + " | ".join(f"{w} a group (ms)" for w in WIDTHS)
        + " | "
        + " | ".join(f"{w} / 16" for w in WIDTHS[1:])
        + " |",
        "|---|---|" + "---:|" * (2 * len(WIDTHS) - 1),
        *kernels,
        "",
        "## Models: reorder exports with and without the rounding",
        "",
        "| model | amount | batch | unpruned | quantum 1 | quantum 8 | q8 / q1 | q1 / unpruned "
        "| q8 / unpruned | params q1 (M) | params q8 (M) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    (out / "group_quantum.md").write_text("\n".join(head + lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
