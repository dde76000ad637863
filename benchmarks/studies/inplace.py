"""What in-place activations save an exported model (``chanprune/rewrite/inplace.py``).

    python benchmarks/studies/inplace.py [--models ...] [--amount 0.25] [--batches 1 8] [--reps 20]
                                 [--threads 2] [--out benchmarks/studies/results]

For each torchvision model (random init, ``torch.manual_seed(0)``), masked as in
``latency.py`` (unconstrained, side="input", l2, local), it times two modules, interleaved
(the order alternates per round), under ``torch.inference_mode()``:

- ``in place``: ``chanprune.export(model, x)`` as it is (activations in place where the pass
  proves it private);
- ``functional``: the same module with every in-place activation made functional again (what
  the export was before the pass).

Reports median ms of each, and the paired ratio functional / in place (median over rounds of
the two times of the same round) with its distribution-free 95% interval. Writes
``<out>/inplace.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings

import torch
import torchvision

import chanprune
from chanprune.evaluation.timing import paired_ratio
from chanprune.rewrite.inplace import INPLACE, undo_inplace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from latency import MODELS  # the latency benchmark's set


def bench(name: str, amount: float, batches: list[int], reps: int, size: int) -> dict:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x1 = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x1, amount=amount, heuristic="l2", scope="local", side="input")
        exported = chanprune.export(model, x1)
    acts = [n for n in exported.graph.nodes if n.op == "call_function"]
    done = sum(n.target in INPLACE.values() for n in acts)
    left = sum(n.target in INPLACE for n in acts)
    mods = {"in place": exported, "functional": undo_inplace(exported)}
    row = {"model": name, "inplace": done, "functional_left": left, "batches": {}}
    for b in batches:
        x = torch.randn(b, 3, size, size)
        times = {k: [] for k in mods}
        with torch.inference_mode():
            assert torch.equal(mods["in place"](x), mods["functional"](x))
            for m in mods.values():
                for _ in range(3):
                    m(x)
            for r in range(reps):
                for k in list(mods)[:: 1 if r % 2 else -1]:
                    t0 = time.perf_counter()
                    mods[k](x)
                    times[k].append((time.perf_counter() - t0) * 1e3)
        ratio, ci = paired_ratio(times["functional"], times["in place"])
        row["batches"][b] = dict(
            ms={k: statistics.median(v) for k, v in times.items()}, ratio=ratio, ci=ci
        )
        print(f"{name} b{b}: {row['batches'][b]}", file=sys.stderr, flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--amount", type=float, default=0.25)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    rows = [bench(m, a.amount, a.batches, a.reps, a.size) for m in a.models]
    args = argv if argv is not None else sys.argv[1:]
    cmd = " ".join(["python benchmarks/studies/inplace.py", *args])
    L = [
        "# In-place activations in the export",
        "",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{platform.machine()}, threads {a.threads}, "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"wall time {(time.perf_counter() - started) / 60:.1f} min",
        f"- command: `{cmd}`",
        f"- masks: unconstrained, side=input, l2, local, amount {a.amount}; reorder export; "
        f"input {a.size}x{a.size}; 3 warm-up calls each, then {a.reps} rounds, the order "
        "alternating; `torch.inference_mode()`",
        "- in place = the export as it is; functional = the same module with its in-place "
        "activations made functional (the export before `chanprune/rewrite/inplace.py`); "
        "ratio = median over rounds of functional / in place in the same round, with its "
        "95% interval",
        "",
        "| model | activations in place | left functional | batch | functional ms "
        "| in place ms | functional / in place | 95% CI |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        for b, v in r["batches"].items():
            ci = "-".join(f"{c:.3f}" for c in v["ci"]) if v["ci"] else ""
            L.append(
                f"| {r['model']} | {r['inplace']} | {r['functional_left']} | {b} "
                f"| {v['ms']['functional']:.2f} | {v['ms']['in place']:.2f} "
                f"| {v['ratio']:.3f} | {ci} |"
            )
    for b in a.batches:
        med = statistics.median(r["batches"][b]["ratio"] for r in rows)
        L.append("")
        L.append(f"**Batch {b}:** median functional / in place over the models = {med:.3f}")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "inplace.md")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))
    print("wrote", path)


if __name__ == "__main__":
    main()
