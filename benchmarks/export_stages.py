"""Where a cold export's time goes: each stage of ``chanprune.export``, timed on its own.

    python benchmarks/export_stages.py [--models resnet50 efficientnet_v2_s] [--reps 7]

Runs the stages as ``api.export`` does on its first (marker-batch) capture: the reference
forward of the masked model, capture (torch.export + the capture passes), channel analysis,
liveness, the layout solver (``SolvedOrder``), rewrite and the check against the reference.
Each round starts from a fresh deep copy of one masked model (chanprune's masks: input side,
L2, unconstrained, local, amount 0.25), so nothing is cached; rounds after a warm-up one,
medians. Writes ``<out>/export_stages.md``. For the comparison with apple-upscale, see
``export_time.py``; this script is for finding what to make faster.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

import chanprune
from chanprune.analysis import analyze
from chanprune.api import policy_for
from chanprune.capture import capture, gc_paused, run_model
from chanprune.liveness import liveness
from chanprune.rewrite import rewrite
from chanprune.verify import verify

RESULTS = Path(__file__).parent / "results"
STAGES = ("reference", "capture", "analysis", "liveness", "layout", "rewrite", "check")


@gc_paused  # as export runs
def _stages(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    times: dict[str, float] = {}

    def timed(stage, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times[stage] = time.perf_counter() - t0
        return out

    inputs = (x,)
    reference = timed("reference", run_model, model, inputs)
    cap = timed("capture", capture, model, inputs, dynamic_batch=True, marked=True)
    an = timed("analysis", analyze, cap)
    live = timed("liveness", liveness, an)
    policy = timed("layout", policy_for, "reorder", an, live)
    result = timed("rewrite", rewrite, an, live, policy)
    timed("check", verify, cap, result, inputs, reference)
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
            for s, t in times.items():
                runs[s].append(t)
            runs["total"].append(sum(times.values()))
        print(f"{name} round {r}: {sum(times.values()):.2f}s", file=sys.stderr, flush=True)
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
        f"- command: `python benchmarks/export_stages.py {' '.join(sys.argv[1:])}`".rstrip(),
        "- input 1x3x224x224, chanprune's masks (input side, L2, unconstrained, local, 0.25); "
        f"{args.reps} rounds after a warm-up, each on a fresh deep copy; the total is the sum "
        "of the stages per round (its median need not equal the sum of the medians)",
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
