"""Copied bytes per inference: chanprune's exports against apple-upscale's, same masks.

    python benchmarks/copies.py [--models ...] [--amounts 0.25 0.5] [--sides input output]
                                [--size 224]

Bytes are counted, not estimated: each exported module runs once on a 1x3xSxS input under a
``TorchDispatchMode`` that sums the output bytes of every copying channel op it executes
(``index_select``, advanced indexing ``index.Tensor``, ``gather``, ``index_add``,
``constant_pad_nd``, ``narrow_copy``, ``clone``/``contiguous`` copies; ``index_copy_``, a
residual stream's new buffer, like a pad). An in-place ``index_add_`` (a narrower residual
operand written into the stream through an index) counts its operand's bytes, not the whole
stream it returns; a slice add (``add_`` into a view) copies nothing. ``cat`` is reported on
its own: it is part of the unpruned models too (DenseNet), so its bytes are not an export cost
but show where an export moves work into or out of concatenations.

Input-side rows: per model and amount, all contenders get ONE set of masks (apple-upscale
0.1.1's own masking: input side, L2, unconstrained, local - so that its exporter runs on masks
it supports):

- ``upscale`` / ``upscale_base``: apple-upscale's reorder / baseline exports of those masks;
- ``reorder`` / ``baseline``: chanprune.export of the very same masked model;
- ``proven``: chanprune's proven lower bound (``chanprune.plan``): the readers' and writers'
  copies at the solver's proven minimum plus the copies no order changes (pads, a residual
  stream's new buffer); where every segment's order is proven optimal the reorder export must
  equal it.

Output-side rows: chanprune's own masks (``chanprune.mask``: output side, L1, unconstrained,
local: the CLI's default) for chanprune's exports; apple-upscale prunes no output side, so its
columns stay empty. There residual streams hold channels their adds' operands do not all hold,
which the baseline export pads and the reorder export writes (``docs/design.md``, Writers).

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
    aten.index_copy_.default,
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
        if func is aten.index_add_.default:  # a write into the stream: what it moves
            source = args[3]
            self.copy_bytes += source.numel() * source.element_size()
            self.copy_ops += 1
        elif func in COPY_OPS or packet in (aten.index_select, aten.index):
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


def bench_model(name: str, amount: float, size: int, side: str = "input") -> dict:
    if side == "output":
        return bench_output_side(name, amount, size)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, size, size)
    row: dict = {"model": name, "amount": amount, "side": "input"}
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
    return row | chanprune_counts(masked, x)


def bench_output_side(name: str, amount: float, size: int) -> dict:
    """chanprune's exports of its own output-side L1 masks (apple-upscale has no output side)."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, size, size)
    row: dict = {"model": name, "amount": amount, "side": "output"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=amount, heuristic="l1", side="output", constrained=False)
    row["status"] = "ok (chanprune's masks)"
    return row | chanprune_counts(model, x)


def chanprune_counts(masked: torch.nn.Module, x: torch.Tensor) -> dict:
    """Copies counted in chanprune's baseline and reorder exports of ``masked``, and its plan."""
    row = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("baseline", "reorder"):
            exported = chanprune.export(copy.deepcopy(masked), x, method=method)
            row[method] = count(exported, x)
        p = chanprune.plan(masked, x, method="reorder")
    row["plan_bytes"] = p.copied_bytes
    row["all_optimal"] = all(s.optimal is not False for s in p.segments)
    unknown = any(s.lower_bound_bytes is None and s.gathers for s in p.segments)
    if not unknown:  # else a segment's copies are not what the solver's sets describe
        row["proven_bytes"] = sum(s.lower_bound_bytes or 0 for s in p.segments)
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
        f"1x3x{args.size}x{args.size}; masks, input side: apple-upscale 0.1.1 MaskingManager "
        "(L2, unconstrained, local) at the row's amount, applied once, every exporter gets them; "
        "output side: chanprune.mask (L1, unconstrained, local; apple-upscale has no output "
        "side)",
        "- copied = output bytes of index_select / index / gather / index_add / pad / clone / "
        "index_copy_ ops actually executed (TorchDispatchMode), and the operand bytes of an "
        "in-place index_add_ (a residual write through an index), KiB; cat = bytes written by "
        "concatenations",
        "- proven = chanprune.plan's proven lower bound on copied bytes for these masks: "
        "readers' and writers' copies at the solver's proven minimum plus those no order "
        "changes (pads, a residual stream's new buffer); where all segments are proven optimal, "
        "reorder must equal it",
        "",
        "| model | amount | upscale base | upscale | chanprune baseline | chanprune reorder "
        "| proven lower bound | reorder <= upscale | copies (upscale / reorder) "
        "| cat KiB (upscale / reorder) | side | note |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---|---|",
    ]
    for r in rows:
        ok = "—"
        if r.get("upscale") and r.get("reorder"):
            ok = "yes" if r["reorder"]["bytes"] <= r["upscale"]["bytes"] else "**no**"
        proven = f"{r['proven_bytes'] / 1024:.1f}" if "proven_bytes" in r else "—"
        if "plan_bytes" in r and "proven_bytes" not in r:
            proven += " (unproven: see docs/design.md, Writers)"
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
            f"{proven} | {ok} | {gathers} | {cats} | {_side(r)} | {r.get('status', '')} |"
        )
    with open(os.path.join(args.out, "copies.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def _side(row: dict) -> str:
    return row.get("side", "input")  # rows written before output-side rows existed


def _key(row: dict) -> tuple:
    return (row["model"], row["amount"], _side(row))


def _rank(row: dict) -> tuple:
    model = row["model"]
    return (MODELS.index(model) if model in MODELS else len(MODELS), _side(row), row["amount"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--amounts", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--sides", nargs="+", choices=["input", "output"], default=["input", "output"])
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
        for side in args.sides:
            for amount in args.amounts:
                row = bench_model(name, amount, args.size, side)
                print(json.dumps(row), flush=True)
                rows = [r for r in rows if _key(r) != _key(row)] + [row]
                rows.sort(key=_rank)
                write(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
