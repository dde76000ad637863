"""Where a cold export's time goes: each stage of ``chanprune.export``, timed on its own.

    python benchmarks/studies/export_stages.py [--models resnet50 efficientnet_v2_s] [--reps 7]

Runs ``chanprune.export`` itself, with a timer around each stage function it calls (in
``chanprune.api``'s namespace, so nothing here repeats the pipeline): the reference forward of
the masked model, capture (torch.export + the capture passes), channel analysis, liveness, the
layout solver (``SolvedOrder``), rewrite and the check against the reference. A stage called
twice (export's recapture when the marker-batch capture fails its check) counts both times.
Each round starts from a fresh deep copy of one masked model (chanprune's masks: input side,
L2, unconstrained, local, amount 0.25), so nothing is cached; rounds after a warm-up one,
medians. Writes ``<out>/export_stages.md``. For the comparison with apple-upscale, see
``export_time.py``; this script is for finding what to make faster.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision

import chanprune
import chanprune.api as api

RESULTS = Path(__file__).parent / "results"
STAGES = {  # column -> the function api.export calls for it
    "reference": "run_model",
    "capture": "capture",
    "analysis": "analyze",
    "liveness": "liveness",
    "layout": "policy_for",
    "rewrite": "rewrite",
    "check": "verify",
}


@contextlib.contextmanager
def _timed_stages(times: dict[str, float]) -> Iterator[None]:
    """Wrap each stage function in ``chanprune.api`` with a timer adding to ``times``."""
    originals = {fn: getattr(api, fn) for fn in STAGES.values()}

    def timer(stage: str, fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[stage] = times.get(stage, 0.0) + time.perf_counter() - t0

        return run

    for stage, name in STAGES.items():
        setattr(api, name, timer(stage, originals[name]))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(api, name, fn)


def _stages(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    times: dict[str, float] = {}
    with _timed_stages(times):
        t0 = time.perf_counter()
        chanprune.export(model, x)
        times["total"] = time.perf_counter() - t0
    return times


def bench(name: str, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    masked = torchvision.models.get_model(name).eval()
    chanprune.mask(masked, x, amount=0.25, heuristic="l2", side="input")
    runs: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    for r in range(reps + 1):  # round 0 warms up
        times = _stages(copy.deepcopy(masked), x)
        if r:
            for s in runs:
                runs[s].append(times.get(s, 0.0))
        print(f"{name} round {r}: {times['total']:.2f}s", file=sys.stderr, flush=True)
    return {s: statistics.median(v) for s, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_v2_s"])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {name: bench(name, args.reps) for name in args.models}
    cols = (*STAGES, "total")
    lines = [
        "# Export time by stage, cold (seconds, median)",
        "",
        f"- torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        "- command: `python benchmarks/studies/export_stages.py"
        + f" {' '.join(sys.argv[1:])}".rstrip()
        + "`",
        "- input 1x3x224x224, chanprune's masks (input side, L2, unconstrained, local, 0.25); "
        f"{args.reps} rounds after a warm-up, each on a fresh deep copy; total = the whole "
        "export call (the stages' medians need not add up to its median)",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name, med in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{med[c]:.3f}" for c in cols) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_stages.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
