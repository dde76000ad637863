"""What the layout solver's work budget buys: proofs, bytes and planning time per budget.

    python benchmarks/studies/solver_budget.py [--models ...] [--budgets 80000 300000 800000]
        [--reps 3]

For each torchvision model (random init, ``torch.manual_seed(0)``, masked 0.25 unconstrained,
input side, L2, local, as ``latency.py``) the capture, analysis and liveness are built once;
then ``SolvedOrder`` (the reorder export's planning stage) runs with each ``max_work``,
interleaved over ``--reps`` rounds: median seconds, segments still unproven, and the solver's
total cost (weighted copied channels) and bound. Writes ``<out>/solver_budget.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch
import torchvision

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from chanprune.layout.policy import SolvedOrder
from chanprune.liveness.flow import liveness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=["resnet50", "efficientnet_v2_s", "regnet_y_800mf", "convnext_tiny", "densenet121"],
    )
    ap.add_argument("--budgets", nargs="+", type=int, default=[80_000, 300_000, 800_000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    L = [
        "# Layout solver: work budget against proofs and planning time",
        "",
        f"- torch {torch.__version__}; {datetime.datetime.now().isoformat(timespec='seconds')}",
        "- command: `python benchmarks/studies/solver_budget.py "
        f"--budgets {' '.join(map(str, a.budgets))}"
        f" --reps {a.reps}`",
        "- masks: amount 0.25, unconstrained, side=input, l2, local; seconds = median over "
        "interleaved rounds of planning every segment (SolvedOrder); cost and bound in weighted "
        "copied channels (bytes per sample)",
        "",
        "| model | max_work | planning s | segments | unproven | cost | bound |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in a.models:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
        x = torch.randn(1, 3, 224, 224)
        chanprune.mask(
            model, x, amount=0.25, heuristic="l2", scope="local", side="input", constrained=False
        )
        an = analyze(capture(model, (x,)))
        live = liveness(an)
        times = {b: [] for b in a.budgets}
        last = {}
        for _ in range(a.reps):
            for b in a.budgets:
                t0 = time.perf_counter()
                last[b] = SolvedOrder(an, live, max_work=b)
                times[b].append(time.perf_counter() - t0)
        for b in a.budgets:
            segs = last[b].segments
            L.append(
                f"| {name} | {b:,} | {statistics.median(times[b]):.2f} | {len(segs)} | "
                f"{sum(not s.plan.optimal for s in segs)} | "
                f"{sum(s.plan.cost for s in segs):,.0f} | "
                f"{sum(s.plan.lower_bound for s in segs):,.0f} |"
            )
        print(*L[-len(a.budgets) :], sep="\n", flush=True)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "solver_budget.md")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
