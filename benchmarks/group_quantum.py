"""Grouped convolutions: per-group channel counts rounded up to a multiple of 8, or not.

    python benchmarks/group_quantum.py [--models regnet_y_800mf resnext50_32x4d] [--reps 12]

The exporter gives every group of a grouped convolution the same channel count, the fullest
group's (``rules/linear.py``). On this CPU (AVX-512, oneDNN) a grouped 3x3 convolution of 16
channels a group is up to 3x faster than one of 13 or 15, so a pruned RegNet could run slower
than the unpruned one. The exporter therefore rounds the per-group count up to a multiple of
``GROUP_QUANTUM`` (8; never above the group's original size), the extra slots filled with
zero-weight rows as before. This script times both settings on the same masks (chanprune's:
input side, L2, unconstrained, local), each against the unpruned model, in interleaved rounds
(order shuffled per round) after a warm-up; paired ratios with distribution-free 95% intervals
(``timing.median_ci``). Writes ``<out>/group_quantum.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

import chanprune
from chanprune.rules import linear as linear_rules
from chanprune.timing import median_ci

RESULTS = Path(__file__).parent / "results"
QUANTA = (1, 8)


def _exports(name: str, amount: float, x: torch.Tensor) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    unpruned = copy.deepcopy(model)
    chanprune.mask(model, x, amount=amount, heuristic="l2", side="input")
    mods = {"unpruned": unpruned}
    old = linear_rules.GROUP_QUANTUM
    try:
        for q in QUANTA:
            linear_rules.GROUP_QUANTUM = q
            mods[f"quantum {q}"] = chanprune.export(model, x)
    finally:
        linear_rules.GROUP_QUANTUM = old
    return mods


def _rounds(mods: dict, x: torch.Tensor, reps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in mods}
    with torch.inference_mode():
        for m in mods.values():
            for _ in range(2):
                m(x)
        for r in range(reps):
            order = list(mods)
            random.Random(r).shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                mods[k](x)
                times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def _ratio(times: dict, a: str, b: str) -> str:
    r = [x / y for x, y in zip(times[a], times[b], strict=True)]
    ci = median_ci(r)
    tail = "" if ci is None else f" ({ci[0]:.3f}-{ci[1]:.3f})"
    return f"{statistics.median(r):.3f}{tail}"


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
    lines = []
    for name in args.models:
        for amount in args.amounts:
            mods = _exports(name, amount, x1)
            params = {k: sum(p.numel() for p in m.parameters()) for k, m in mods.items()}
            for b in args.batches:
                times = _rounds(mods, torch.randn(b, 3, 224, 224), args.reps)
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
        f"- command: `python benchmarks/group_quantum.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- input 224x224; chanprune's masks (input side, L2, unconstrained, local); reorder "
        f"export with `GROUP_QUANTUM` 1 and 8 from the same masked model; {args.reps} interleaved "
        "rounds after 2 warm-up runs; medians (ms); ratios paired per round, 95% interval in "
        "brackets",
        "",
        "| model | amount | batch | unpruned | quantum 1 | quantum 8 | q8 / q1 | q1 / unpruned "
        "| q8 / unpruned | params q1 (M) | params q8 (M) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    (out / "group_quantum.md").write_text("\n".join(head + lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
