"""Copied bytes per inference: chanprune's exports against apple-upscale's, same masks.

    python benchmarks/copies.py [--models ...] [--amounts 0.25 0.5] [--size 224]

Bytes are counted, not estimated: each exported module runs once on a 1x3xSxS input under a
``TorchDispatchMode`` that sums the output bytes of every copying channel op it executes
(``index_select``, advanced indexing ``index.Tensor``, ``gather``, ``index_add``,
``constant_pad_nd``, ``narrow_copy``, ``clone``/``contiguous`` copies). ``cat`` is reported on
its own: it is part of the unpruned models too (DenseNet), so its bytes are not an export cost
but show where an export moves work into or out of concatenations.

Contenders per model and amount, all from ONE set of masks (apple-upscale 0.1.1's own masking:
input side, L2, unconstrained, local - so that its exporter runs on masks it supports):

- ``upscale`` / ``upscale_base``: apple-upscale's reorder / baseline exports of those masks;
- ``reorder`` / ``baseline``: chanprune.export of the very same masked model;
- ``proven``: chanprune's proven lower bound (``chanprune.plan``), where every segment's order
  is proven optimal the reorder export must equal it.

Writes ``<out>/copies.md`` and ``<out>/copies.json``. Deterministic: no timing involved.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings

import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

import chanprune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _upscale_shim
from latency import MODELS  # the same model set as the latency benchmark

aten = torch.ops.aten
COPY_OPS = {
    aten.index_select.default,
    aten.index.Tensor,
    aten.gather.default,
    aten.index_add.default,
    aten.constant_pad_nd.default,
    aten.narrow_copy.default,
    aten.clone.default,
    aten._unsafe_index.Tensor,
}
CAT_OPS = {aten.cat.default}


class CopyCounter(TorchDispatchMode):
    """Sums output bytes of copying ops (and, separately, of concatenations)."""

    def __init__(self):
        super().__init__()
        self.copy_bytes = 0
        self.copy_ops = 0
        self.cat_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = getattr(func, "overloadpacket", None)
        if func in COPY_OPS or packet in (aten.index_select, aten.index):
            self.copy_bytes += out.numel() * out.element_size()
            self.copy_ops += 1
        elif func in CAT_OPS:
            self.cat_bytes += out.numel() * out.element_size()
        return out


def count(module: torch.nn.Module, x: torch.Tensor) -> dict:
    counter = CopyCounter()
    with torch.inference_mode(), counter:
        module(x)
    return {"bytes": counter.copy_bytes, "ops": counter.copy_ops, "cat_bytes": counter.cat_bytes}


def bench_model(name: str, amount: float, size: int) -> dict:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, size, size)
    row: dict = {"model": name, "amount": amount}
    reason = _upscale_shim.available()
    if reason is not None:
        row["status"] = reason
        return row
    try:
        up = _upscale_shim.export(model, x, amount=amount, keep_masked=True)
    except Exception as e:  # apple-upscale's own failures are results, not crashes
        last = (str(e).strip().splitlines() or [""])[-1]
        row["status"] = f"upscale failed: {type(e).__name__}: {last[:90]}"
        up = None
    masked = up["masked"] if up and "masked" in up else None
    if up is not None:
        row["status"] = up["status"]
        if up["status"] == "ok":
            row["upscale"] = count(up["reorder"], x)
            row["upscale_base"] = count(up["baseline"], x)
    if masked is None:
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("baseline", "reorder"):
            exported = chanprune.export(copy.deepcopy(masked), x, method=method)
            row[method] = count(exported, x)
        p = chanprune.plan(masked, x, method="reorder")
    row["plan_bytes"] = p.copied_bytes
    row["proven_bytes"] = sum(s.lower_bound_bytes or 0 for s in p.segments)
    row["all_optimal"] = all(s.optimal is not False for s in p.segments)
    return row


def _kb(d: dict | None, key: str = "bytes") -> str:
    return "—" if not d else f"{d[key] / 1024:.1f}"


def write(rows: list, args) -> None:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "copies.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    L = [
        "# Copied bytes per inference (batch 1): chanprune vs apple-upscale, same masks",
        "",
        "- command: `python benchmarks/copies.py` (rows of later runs with `--models` replace "
        "earlier ones)",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}; input "
        f"1x3x{args.size}x{args.size}; masks: apple-upscale 0.1.1 MaskingManager (input side, "
        "L2, unconstrained, local) at the row's amount, applied once; every exporter gets them",
        "- copied = output bytes of index_select / index / gather / index_add / pad / clone ops "
        "actually executed (TorchDispatchMode), KiB; cat = bytes written by concatenations",
        "- proven = chanprune.plan's proven lower bound on copied bytes for these masks "
        "(where all segments are proven optimal, reorder must equal it)",
        "",
        "| model | amount | upscale base | upscale | chanprune baseline | chanprune reorder "
        "| proven lower bound | reorder <= upscale | gathers (upscale / reorder) "
        "| cat KiB (upscale / reorder) | note |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---|",
    ]
    for r in rows:
        ok = "—"
        if r.get("upscale") and r.get("reorder"):
            ok = "yes" if r["reorder"]["bytes"] <= r["upscale"]["bytes"] else "**no**"
        proven = f"{r['proven_bytes'] / 1024:.1f}" if "proven_bytes" in r else "—"
        if r.get("all_optimal"):
            proven += " (all proven)"
        gathers = (
            f"{r['upscale']['ops'] if r.get('upscale') else '—'} / "
            f"{r['reorder']['ops'] if r.get('reorder') else '—'}"
        )
        cats = f"{_kb(r.get('upscale'), 'cat_bytes')} / {_kb(r.get('reorder'), 'cat_bytes')}"
        L.append(
            f"| {r['model']} | {r['amount']} | {_kb(r.get('upscale_base'))} | "
            f"{_kb(r.get('upscale'))} | {_kb(r.get('baseline'))} | {_kb(r.get('reorder'))} | "
            f"{proven} | {ok} | {gathers} | {cats} | {r.get('status', '')} |"
        )
    with open(os.path.join(args.out, "copies.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def _rank(model: str) -> int:
    return MODELS.index(model) if model in MODELS else len(MODELS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--amounts", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    path = os.path.join(args.out, "copies.json")
    rows = []
    if os.path.exists(path):  # rerunning some models replaces their rows, keeps the others
        with open(path) as f:
            old = json.load(f)
        if old.get("args", {}).get("size") == args.size:
            rows = old["rows"]
    for name in args.models:
        for amount in args.amounts:
            row = bench_model(name, amount, args.size)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if (r["model"], r["amount"]) != (name, amount)] + [row]
            rows.sort(key=lambda r: (_rank(r["model"]), r["amount"]))
            write(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
