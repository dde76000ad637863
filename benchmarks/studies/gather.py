"""Which op should copy a channel subset: ``index_select``, a broadcast ``gather`` or row copies.

    python benchmarks/studies/gather.py [--reps 30] [--threads 2] [--out benchmarks/studies/results]

The exporter copies the channels a consumer reads when no order makes them contiguous. For each
shape below (channels kept: 3/4, a sorted random subset) it times, interleaved, median per op:

- ``index_select``: ``x.index_select(dim, idx)``, what the exporter emits off the last dimension;
- ``gather``: ``torch.gather(x, dim, idx.view(1, .., k, .., 1).expand(...))``, the same elements
  through a broadcast index, what it emits along the last dimension;
- ``rows``: ``chanprune.rewrite.rewriter.gather_rows``, the same channels (dim 1) as whole rows
  of ``x.flatten(0, 1)`` through ``index_select`` along dim 0, with the row index built at run
  time as the exporter emits it (NCHW rows only);
- ``slice copy``: ``x.narrow(dim, 0, k).clone()``, a copy of as many contiguous channels
  (the floor of any copy of that size).

Rows: channels-last activations (ConvNeXt's Linear inputs), token features (ViT), and NCHW
channels with inner runs of 1-3136 elements, at batch 1 and 8 for the feature-map sizes of
ResNet and DenseNet. Writes ``<out>/gather.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

from chanprune.rewrite.rewriter import gather_rows

SHAPES = [  # (shape, dim)
    ((1, 56, 56, 96), 3),
    ((8, 56, 56, 96), 3),
    ((8, 28, 28, 192), 3),
    ((8, 7, 7, 768), 3),
    ((8, 197, 384), 2),
    ((8, 2048), 1),
    ((8, 512, 2, 2), 1),
    ((8, 512, 7, 7), 1),
    ((8, 256, 14, 14), 1),
    ((8, 64, 56, 56), 1),
    ((1, 64, 56, 56), 1),
    ((1, 256, 56, 56), 1),
    ((8, 256, 56, 56), 1),
    ((1, 512, 28, 28), 1),
    ((8, 512, 28, 28), 1),
    ((1, 1024, 14, 14), 1),
    ((8, 1024, 14, 14), 1),
    ((1, 1024, 7, 7), 1),
    ((8, 1024, 7, 7), 1),
    ((1, 96, 112, 112), 1),
]


def _ops(x: torch.Tensor, dim: int, idx: torch.Tensor) -> dict:
    k = len(idx)
    shape = [1] * x.dim()
    shape[dim] = k
    out = list(x.shape)
    out[dim] = k
    index = idx.view(shape).expand(out)
    ops = {
        "index_select": lambda: x.index_select(dim, idx),
        "gather": lambda: torch.gather(x, dim, index),
        "slice copy": lambda: x.narrow(dim, 0, k).clone(memory_format=torch.contiguous_format),
    }
    if dim == 1 and x.dim() > 2:
        ops["rows"] = lambda: gather_rows(x, idx)
    return ops


def measure(reps: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for shape, dim in SHAPES:
        x = torch.randn(shape, generator=g)
        c = shape[dim]
        idx = torch.randperm(c, generator=g)[: c * 3 // 4].sort().values
        ops = _ops(x, dim, idx)
        for name in ("gather", "rows"):
            if name in ops:
                assert torch.equal(ops["index_select"](), ops[name]()), name
        times: dict[str, list[float]] = {n: [] for n in ops}
        with torch.inference_mode():  # as the models run in the latency benchmark
            for f in ops.values():  # warm-up
                f()
            for _ in range(reps):  # interleaved rounds
                for name, f in ops.items():
                    t = time.perf_counter()
                    f()
                    times[name].append(time.perf_counter() - t)
        med = {n: statistics.median(v) * 1e6 for n, v in times.items()}
        inner = x[(0,) * (dim + 1)].numel() if dim + 1 < x.dim() else 1
        per_sample = x[0].numel() // c * len(idx) * x.element_size()  # the read's output
        rows.append(dict(shape=shape, dim=dim, inner=inner, k=len(idx), bytes=per_sample, us=med))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = measure(a.reps)
    L = [
        "# Copying a channel subset: index_select vs broadcast gather vs row copies",
        "",
        f"- torch {torch.__version__}, {platform.machine()}, threads {a.threads}, "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `python benchmarks/studies/gather.py --reps {a.reps} --threads {a.threads}`",
        "- 3/4 of the channels (sorted random subset); median of interleaved rounds, microseconds, "
        "under `torch.inference_mode()`",
        "",
        "| shape | dim | inner run | kept | bytes copied / sample | index_select | gather | rows "
        "| slice copy | index_select / gather | rows / index_select |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        us = r["us"]
        rows_us = f"{us['rows']:.0f}" if "rows" in us else ""
        ratio = f"{us['rows'] / us['index_select']:.2f}" if "rows" in us else ""
        L.append(
            f"| {'x'.join(map(str, r['shape']))} | {r['dim']} | {r['inner']} | {r['k']} "
            f"| {r['bytes']:,} | {us['index_select']:.0f} | {us['gather']:.0f} | {rows_us} "
            f"| {us['slice copy']:.0f} | {us['index_select'] / us['gather']:.2f} | {ratio} |"
        )
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "gather.md")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))
    print("wrote", path)


if __name__ == "__main__":
    main()
