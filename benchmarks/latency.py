"""Latency of chanprune exports against the unpruned model, the copy-free limit and
apple-upscale: eager PyTorch, ONNX Runtime and torch.compile on the CPU, or PyTorch on a GPU.

    python benchmarks/latency.py [--models ...] [--amounts 0.25 0.5] [--batches 1 8]
                                 [--sides output input] [--reps 20] [--threads 2] [--size 224]
                                 [--no-compile] [--width-quantum Q] [--out benchmarks/results]
    python benchmarks/latency.py --quick      # smoke test: 2 models, 64x64, 3 reps, no compile
    python benchmarks/latency.py --device cuda   # the same on a GPU (benchmarks/gpu_check.sh)
    python benchmarks/latency.py --report-from benchmarks/results/latency.json  # no timing

For each torchvision model (random init, eval, ``torch.manual_seed(0)``), side, amount and batch
size it times these contenders, interleaved in a per-round shuffled order that keeps the
contenders of each reported ratio adjacent (``GROUPS``):

- ``unpruned``: the model itself;
- ``constrained``: constrained masks (coupled layers pruned together), baseline export;
- ``baseline`` / ``reorder``: unconstrained masks (heuristic ``HEURISTIC[side]``, scope local),
  exported both ways from the same masks;
- ``ideal``: ``chanprune.ideal`` of the reorder export (gathers replaced by slices: the
  copy-free physical limit of those layer sizes);
- ``upscale`` / ``upscale_base``: apple-upscale 0.1.1's own reorder and baseline exports of
  its own masks (input side, L2, unconstrained, local) at the same amount, where it runs (input
  side only: apple-upscale prunes no output side);
- ``reorder_upm`` / ``baseline_upm`` / ``ideal_upm``: chanprune's reorder and baseline exports
  of apple-upscale's masked model and the ideal of those sizes (the same masks as ``upscale``:
  the like-for-like comparison);
- ``ort_unpruned`` / ``ort_constrained`` / ``ort_baseline`` / ``ort_reorder``: the unpruned
  model and the three chanprune exports run in ONNX Runtime (CPU, same thread count;
  ``--no-ort`` skips them; not run with ``--device cuda``);
- ``compile_unpruned`` / ``compile_baseline`` / ``compile_reorder``: the same modules through
  ``torch.compile`` (inductor, static shapes; ``--no-compile`` skips them, ``--quick`` too
  unless ``--compile``). Compiling happens in a priming call before the warm-up and is not
  timed (its seconds are reported apart); a contender that fails to compile (or, with
  ``--device cuda``, to run on the GPU) is left out and its cell says why.

Sides: ``output`` masks (the CLI's default side, L1, the CLI's default heuristic) and ``input``
masks (L2, apple-upscale's defaults, so that its exports compare like for like) are separate
rows, each timed in its own rounds. Every export passes the same ``width_quantum`` (``--width-
quantum``; by default the product's, resolved once and recorded), so the contenders compare.

Every ratio in the report is paired (the median over rounds of the two contenders' times in
the same round) and its contenders run next to each other, because a shared VM speeds up and
slows down between rounds and in spells of seconds (docs/design.md, "Measuring it"): both sides
of a ratio then move alike. Medians of the raw times are reported as well, and reorder/ideal and
apple-upscale/chanprune with their distribution-free 95% intervals
(``evaluation.timing.median_ci``), so a worst cell can be told from noise. Every pruned
contender also gets its efficiency: its time over its backend's unpruned model's, divided by its
MACs over the unpruned model's (``chanprune.evaluation.stats.count_macs``).

With ``--device cuda`` exports are made on the CPU and moved to the GPU, apple-upscale runs
natively there (its ``.cuda()`` calls as written), every call is timed with CUDA events between
``torch.cuda.synchronize()`` calls, and the report names the GPU.

Writes ``<out>/latency.md``, ``<out>/latency.png`` and ``<out>/latency.json`` (raw numbers;
``latency_cuda.*`` with ``--device cuda``). The markdown is rewritten after every model,
labelled PARTIAL until the run completes.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable

import torch
import torchvision

import chanprune
import chanprune.deploy
from chanprune.api import check_width_quantum
from chanprune.evaluation.stats import count_macs
from chanprune.evaluation.timing import paired_ratio, round_order
from chanprune.rewrite.rewriter import gather_rows

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _upscale_shim

MODELS = [
    "resnet18",
    "resnet50",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_v2_s",
    "regnet_y_800mf",
    "convnext_tiny",
]
SIDES = ["output", "input"]
# output: the CLI's default heuristic; input: apple-upscale's, so its masks compare like for like
HEURISTIC = {"output": "l1", "input": "l2"}
CONTENDERS = [
    "unpruned",
    "constrained",
    "baseline",
    "reorder",
    "ideal",
    "upscale",
    "upscale_base",
    "reorder_upm",
    "baseline_upm",
    "ideal_upm",
]
ORT = ["ort_unpruned", "ort_constrained", "ort_baseline", "ort_reorder"]  # ONNX Runtime runs
COMPILED = ["compile_unpruned", "compile_baseline", "compile_reorder"]  # torch.compile(inductor)
BACKEND_PREFIXES = ("ort_", "compile_")
# contenders a reported ratio pairs: each group runs adjacent in every round
# (evaluation.timing.round_order)
GROUPS = [
    ("unpruned", "constrained", "baseline", "reorder", "ideal"),
    ("upscale", "upscale_base", "reorder_upm", "baseline_upm", "ideal_upm"),
    tuple(ORT),
    tuple(COMPILED),
]
# the pruned contenders whose efficiency the report gives, in its column order
PRUNED = [
    "constrained",
    "baseline",
    "reorder",
    "ideal",
    "upscale",
    "upscale_base",
    "ort_constrained",
    "ort_baseline",
    "ort_reorder",
    "compile_baseline",
    "compile_reorder",
]
# the exports that the target "faster than the unpruned model, eager and ORT" is about
EXPORTS = ["constrained", "baseline", "reorder", "ort_constrained", "ort_baseline", "ort_reorder"]
WARMUP = {"cpu": 3, "cuda": 10}
NO_CUDA = (
    "latency.py: --device cuda: no CUDA device is available (torch.cuda.is_available() is "
    "False); run it on a machine with an NVIDIA GPU and a CUDA build of torch: "
    "bash benchmarks/gpu_check.sh"
)


# --------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _restore(model: torch.nn.Module, state: dict) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def _safe(fn, *a, **k):
    try:
        return fn(*a, **k)
    except Exception:
        return None


def _fmt(v, spec=".2f", none="—"):
    if v is None:
        return none
    if isinstance(v, str):
        return v
    return format(v, spec)


def _why(e: Exception, width: int = 90) -> str:
    """``Type: last line of the message``, cut to ``width``: short enough for a table cell."""
    last = (str(e).strip().splitlines() or [""])[-1]
    return f"{type(e).__name__}: {last[:width]}"


def source_of(contender: str) -> str:
    """The eager module a backend contender runs (``ort_reorder`` -> ``reorder``)."""
    for p in BACKEND_PREFIXES:
        if contender.startswith(p):
            return contender[len(p) :]
    return contender


def reference_of(contender: str) -> str:
    """The unpruned contender of the same backend: a time ratio compares like with like."""
    for p in BACKEND_PREFIXES:
        if contender.startswith(p):
            return p + "unpruned"
    return "unpruned"


# --------------------------------------------------------------------------- clocks
Clock = Callable[[Callable, torch.Tensor], float]


def cpu_ms(fn: Callable, x: torch.Tensor) -> float:
    """Wall milliseconds of ``fn(x)``."""
    t0 = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t0) * 1e3


def cuda_ms(fn: Callable, x: torch.Tensor) -> float:
    """Milliseconds of ``fn(x)`` on the GPU, between two CUDA events. Why the synchronizes:
    the one before lets no earlier work (another contender's) into the interval, the one after
    (on the end event) waits for the kernels ``fn`` queued, which return before they ran."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def measure(
    contenders: dict, x: torch.Tensor, reps: int, clock: Clock = cpu_ms, warmup: int = 3
) -> tuple[dict, dict]:
    """(times in ms, minor page faults) per contender and round: warm-up, then ``reps``
    interleaved rounds in the order ``round_order(groups, round)``: groups shuffled, each kept
    adjacent. ``clock``: :func:`cpu_ms` or :func:`cuda_ms`. Faults: see :func:`_faults`."""
    names = list(contenders)
    groups = [[n for n in g if n in contenders] for g in GROUPS]
    groups += [[n] for n in names if not any(n in g for g in GROUPS)]
    times = {n: [] for n in names}
    faults = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:
            for _ in range(warmup):
                contenders[n](x)
        for r in range(reps):
            for n in round_order(groups, r):
                f0 = _faults()
                times[n].append(clock(contenders[n], x))
                faults[n].append(_faults() - f0)
    return times, faults


def _faults() -> int:
    """Minor page faults of this process so far. Why: under glibc's defaults freed large
    buffers go back to the kernel, so every forward pays freshly zeroed pages again, a cost and
    a source of noise shared by all contenders; counting them tells whether a gap to the ideal
    comes from there (the medians per contender are in ``latency.json``; docs/design.md)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def gather_ms(
    module: torch.fx.GraphModule, x: torch.Tensor, reps: int, clock: Clock = cpu_ms
) -> float:
    """Median ms of replaying, alone, every gather of ``module``'s forward on ``x``.

    Why: the ideal differs from the reorder export by these gathers (and by strided slices past
    batch 1), so ``1 + gather_ms / ideal`` is what reorder/ideal would be if copies cost only
    their own time: the share of the gap that no layout removes where the plan is minimal."""
    aten = torch.ops.aten
    kinds = (aten.index_select.default, aten.gather.default, gather_rows)
    calls = []

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and n.target in kinds:
                calls.append((n.target, [self.env.get(a, a) for a in n.args]))
            return out

    def replay(_):
        for f, a in calls:
            f(*a)

    with torch.inference_mode():
        Recorder(module).run(x)
        if not calls:
            return 0.0
        times = [clock(replay, x) for _ in range(reps + 1)]
    return statistics.median(times[1:])


def prime(contenders: dict, x: torch.Tensor) -> tuple[dict[str, float], dict[str, str]]:
    """One untimed call of each contender on ``x``: (seconds per contender that ran, reason per
    contender that failed). Why: ``torch.compile`` compiles on its first call at each input
    shape, and a module moved to a GPU may fail there only when run; either must be neither
    timed nor allowed to stop the other contenders."""
    seconds, failed = {}, {}
    with torch.inference_mode():
        for n, fn in contenders.items():
            try:
                seconds[n] = _timed(fn, x)[1]
            except Exception as e:
                what = "compile failed" if n.startswith("compile_") else "failed"
                failed[n] = f"{what}: {_why(e)}"
    return seconds, failed


def compiled(module: torch.nn.Module) -> Callable:
    """``module`` through torch.compile's inductor backend, one static graph per batch size
    (compiled on the first call at each, by :func:`prime`)."""
    return torch.compile(module, backend="inductor", dynamic=False)


def _macs(module: torch.nn.Module, x1: torch.Tensor) -> int | None:
    """Batch-1 MACs of ``module`` (on whatever device its parameters are), None if uncountable."""
    p = next(iter(module.parameters()), None)
    x = x1 if p is None else x1.to(p.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _safe(count_macs, module, x)


def efficiency(row: dict, b: str, contender: str) -> tuple[float | None, float | None]:
    """(time ratio, efficiency) of ``contender`` in ``row`` at batch ``b``: its time over its
    backend's unpruned model's (paired per round), and that over its MACs over the unpruned
    model's. Efficiency 1: time fell in proportion to MACs; above 1: the pruned model does less
    work per millisecond than the unpruned one."""
    t = _paired(row, b)(contender, reference_of(contender))
    s = row.get("sizes", {})
    macs, full = s.get(f"{source_of(contender)}_macs"), s.get("unpruned_macs")
    if t is None or not macs or not full:
        return t, None
    return t, t / (macs / full)


# --------------------------------------------------------------------------- one model
def unconstrained_exports(model, original: dict, x1, masking: dict, wq: int, row: dict) -> dict:
    """Unconstrained masks exported both ways, and the ideal of the reorder export; fills the
    row's export seconds and copy counts. Raises what masking or export raises."""
    _restore(model, original)
    _, t_mask = _timed(chanprune.mask, model, x1, constrained=False, **masking)
    # exports own copies of their weights: restoring the model later cannot touch them
    reorder, t_re = _timed(chanprune.export, model, x1, method="reorder", width_quantum=wq)
    baseline, t_base = _timed(chanprune.export, model, x1, method="baseline", width_quantum=wq)
    ideal = chanprune.ideal(reorder)
    for m in ("baseline", "reorder"):
        plan = chanprune.plan(model, x1, method=m, width_quantum=wq)
        row["sizes"][f"{m}_copied_bytes"] = plan.copied_bytes
    row["export"].update(mask_s=t_mask, reorder_s=t_re, baseline_s=t_base)
    row["sizes"]["baseline_copies"] = len(baseline.chanprune_copies)
    row["sizes"]["reorder_copies"] = len(reorder.chanprune_copies)
    row["sizes"]["ideal_copies"] = len(getattr(ideal, "chanprune_copies", []) or [])
    row["sizes"]["width_quantum"] = reorder.chanprune_width_quantum
    return {"baseline": baseline, "reorder": reorder, "ideal": ideal}


def constrained_export(model, original: dict, x1, masking: dict, wq: int, row: dict):
    """Constrained masks, baseline export (no copies needed)."""
    _restore(model, original)
    try:
        chanprune.mask(model, x1, constrained=True, **masking)
        constrained, t_c = _timed(chanprune.export, model, x1, method="baseline", width_quantum=wq)
    finally:
        _restore(model, original)
    row["export"]["constrained_s"] = t_c
    row["sizes"]["constrained_copies"] = len(constrained.chanprune_copies)
    return constrained


def upscale_exports(unpruned, x1, amount: float, wq: int, device: str, row: dict) -> dict:
    """apple-upscale's own exports of its masks at ``amount`` (on ``device``: natively on a
    GPU), and chanprune's exports of the same masked model (made on the CPU)."""
    mods = {}
    up = _upscale_shim.export(unpruned, x1, amount=amount, keep_masked=True, device=device)
    row["upscale_status"] = up["status"]
    if "masked" in up:  # the same masks through chanprune: a like-for-like contender
        masked = up["masked"].cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mods["reorder_upm"] = chanprune.export(masked, x1, width_quantum=wq)
            mods["baseline_upm"] = chanprune.export(masked, x1, method="baseline", width_quantum=wq)
        mods["ideal_upm"] = chanprune.ideal(mods["reorder_upm"])
    row["export"]["upscale_s"] = up.get("reorder_export_s")
    row["export"]["upscale_base_s"] = up.get("baseline_export_s")
    if up["status"] == "ok":
        mods["upscale"] = up["reorder"]
        mods["upscale_base"] = up["baseline"]
    return mods


def bench_row(name: str, side: str, amount: float, ctx: dict) -> dict:
    """Exports, sizes and timings of one model at one side and amount. ``ctx``: the model's
    shared state (see :func:`bench_model`); errors are appended to ``ctx["errors"]``."""
    args, model, x1, wq = ctx["args"], ctx["model"], ctx["x1"], ctx["wq"]
    original, shared, dev = ctx["original"], ctx["shared"], args.device
    where = f"{name} {side} @{amount}"
    row = {"sizes": {}, "export": {}, "latency": {}, "rounds": {}, "upscale_status": None}
    row["masking"] = dict(amount=amount, heuristic=HEURISTIC[side], scope="local", side=side)
    row["status"] = {}
    masking = row["masking"]
    mods = {"unpruned": ctx["unpruned"]}

    def failed(what: str, e: Exception) -> None:
        msg = f"{where}: {what} failed: {type(e).__name__}: {e}"
        _log(msg)
        ctx["errors"].append(msg)

    try:
        mods.update(unconstrained_exports(model, original, x1, masking, wq, row))
        e = row["export"]
        e["cold_s"] = e["mask_s"] + e["reorder_s"] if ctx.pop("first", False) else None
        _log(
            f"{where}: unconstrained exports ok (mask {e['mask_s']:.1f}s, reorder "
            f"{e['reorder_s']:.1f}s, baseline {e['baseline_s']:.1f}s; copies "
            f"{row['sizes']['baseline_copies']} -> {row['sizes']['reorder_copies']})"
        )
    except Exception as e:
        failed("unconstrained export", e)
        traceback.print_exc()
    try:
        mods["constrained"] = constrained_export(model, original, x1, masking, wq, row)
    except Exception as e:
        failed("constrained export", e)

    if side != "input":
        row["upscale_status"] = "n/a: apple-upscale prunes the input side only"
    elif ctx["upscale_reason"] is not None:
        row["upscale_status"] = f"n/a: {ctx['upscale_reason']}"
    else:
        try:
            mods.update(upscale_exports(ctx["unpruned_cpu"], x1, amount, wq, dev, row))
        except Exception as e:
            row["upscale_status"] = f"failed: {_why(e, 80)}"
        _log(f"{where}: upscale {row['upscale_status']}")

    # ---- sizes, on the CPU modules but apple-upscale's (on ``dev``)
    for n, m in list(mods.items()):
        row["sizes"][f"{n}_params"] = _safe(lambda m=m: sum(p.numel() for p in m.parameters()))
        row["sizes"][f"{n}_macs"] = _macs(m, x1)

    # ---- the same modules in ONNX Runtime and through torch.compile
    if ctx["ort"]:
        for c in ORT:
            src = mods.get(source_of(c))
            try:
                if c == "ort_unpruned":  # one runner per model, for every side and amount
                    if c not in shared:
                        shared[c] = chanprune.deploy.ort_runner(src, x1, args.threads)
                    if isinstance(shared[c], str):
                        row["status"][c] = shared[c]
                    else:
                        mods[c] = shared[c]
                elif src is not None:
                    mods[c] = chanprune.deploy.ort_runner(src, x1, args.threads)
            except Exception as e:
                row["status"][c] = f"failed: {_why(e)}"
                if c == "ort_unpruned":
                    shared[c] = row["status"][c]
                failed(c, e)
    for n in list(mods):
        if n not in ORT and n != "unpruned":
            mods[n] = mods[n].to(dev)
    if args.compile:
        for c in COMPILED:
            src = mods.get(source_of(c))
            if c == "compile_unpruned" and c not in shared:
                shared[c] = compiled(src)  # compiled once per model and batch size
            if isinstance(shared.get(c), str):
                row["status"][c] = shared[c]
            elif c == "compile_unpruned":
                mods[c] = shared[c]
            elif src is not None:
                mods[c] = compiled(src)

    # ---- latency
    clock = cuda_ms if dev == "cuda" else cpu_ms
    for b in args.batches:
        xb = torch.randn(b, 3, args.size, args.size, device=dev)
        t0 = time.perf_counter()
        order = [c for c in CONTENDERS + ORT + COMPILED if c in mods]
        seconds, fails = prime({c: mods[c] for c in order}, xb)
        for c, why in fails.items():
            row["status"][c] = f"{why} (batch {b})"
            del mods[c]
            if c in shared:  # not worth another try on the next row
                shared[c] = row["status"][c]
            _log(f"{where} b{b}: {c} {why}")
        row.setdefault("compile_s", {})[str(b)] = {c: seconds[c] for c in COMPILED if c in seconds}
        order = [c for c in order if c in mods]
        rounds, faults = measure({c: mods[c] for c in order}, xb, args.reps, clock, WARMUP[dev])
        row["rounds"][str(b)] = rounds
        row.setdefault("faults", {})[str(b)] = {c: statistics.median(f) for c, f in faults.items()}
        row["latency"][str(b)] = lat = {c: statistics.median(t) for c, t in rounds.items()}
        if "reorder" in mods:
            row.setdefault("gathers_ms", {})[str(b)] = _safe(
                gather_ms, mods["reorder"], xb, args.reps, clock
            )
        _log(
            f"{where} b{b}: "
            + ", ".join(f"{c} {lat[c]:.1f}" for c in order)
            + f" ms  ({time.perf_counter() - t0:.0f}s)"
        )
    return row


def bench_model(name: str, args, wq: int) -> list[dict]:
    """All work for one model: one result per side, each with a row per amount and errors."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x1 = torch.randn(1, 3, args.size, args.size)
    unpruned_cpu = copy.deepcopy(model).eval()
    ctx = dict(args=args, model=model, x1=x1, wq=wq, first=True, shared={})
    ctx.update(original={k: v.clone() for k, v in model.state_dict().items()})
    ctx.update(unpruned_cpu=unpruned_cpu, ort=not args.no_ort and args.device == "cpu")
    ctx["unpruned"] = copy.deepcopy(unpruned_cpu).to(args.device)
    ctx["upscale_reason"] = (
        _upscale_shim.available() if not args.no_upscale else "disabled (--no-upscale)"
    )
    results = []
    try:
        for side in args.sides:
            ctx["errors"] = []
            result = {"model": name, "side": side, "amounts": {}, "errors": ctx["errors"]}
            results.append(result)
            for amount in args.amounts:
                result["amounts"][str(amount)] = bench_row(name, side, amount, ctx)
    finally:
        torch.compiler.reset()  # frees the compiled graphs of this model's modules
    return results


# --------------------------------------------------------------------------- reporting
def side_of(result: dict) -> str:
    """The side of a result's masks (JSON written before sides were timed: input)."""
    return result.get("side", "input")


def _ratio(a, b):
    return a / b if a is not None and b else None


def _paired(row: dict, b: str):
    """``ratio(x, y)`` for one row and batch: the median over rounds of x's time / y's time in
    the same round (the ratio of medians where a run kept no rounds, as older JSON did)."""
    rounds, lat = row.get("rounds", {}).get(b), row["latency"].get(b, {})

    def ratio(x: str, y: str):
        if rounds and x in rounds and y in rounds:
            return paired_ratio(rounds[x], rounds[y])[0]
        return _ratio(lat.get(x), lat.get(y))

    return ratio


def _paired_ci(row: dict, b: str, x: str, y: str) -> tuple[float, float] | None:
    """95% interval of the paired median ratio x/y (``evaluation.timing.median_ci``); None
    without rounds."""
    rounds = row.get("rounds", {}).get(b) or {}
    if x not in rounds or y not in rounds:
        return None
    return paired_ratio(rounds[x], rounds[y])[1]


def _gather_bound(row: dict, b: str) -> float | None:
    """1 + (the reorder export's gathers replayed alone) / (the ideal's median)."""
    g, ideal = row.get("gathers_ms", {}).get(b), row["latency"].get(b, {}).get("ideal")
    return None if g is None or not ideal else 1 + g / ideal


def _fault_note(f: dict) -> str:
    """Median minor page faults per forward, reorder against ideal, where measured."""
    if "reorder" not in f or "ideal" not in f:
        return ""
    return f"; page faults per forward {f['reorder']:,.0f} against the ideal's {f['ideal']:,.0f}"


def _fmt_ci(ci) -> str:
    return "—" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def _overall(results: list, batches: list[str]) -> list[str]:
    """The issue's latency targets over the whole benchmark set (every model, amount, batch)."""
    cells, faults = [], {}
    for b in batches:
        for res in results:
            for amount, row in res["amounts"].items():
                v = _paired(row, b)("reorder", "ideal")
                if v is not None:
                    ci = _paired_ci(row, b, "reorder", "ideal")
                    m = f"{res['model']} ({side_of(res)})"
                    cells.append((v, ci, _gather_bound(row, b), m, amount, b))
                    faults[(m, amount, b)] = row.get("faults", {}).get(b, {})
    if not cells:
        return []
    over = sorted((c for c in cells if c[0] > 1.10), reverse=True)
    L = [
        "## Targets over the whole set",
        "",
        f"- reorder/ideal, median over all {len(cells)} cells (models x sides x amounts x "
        f"batches): "
        f"**{statistics.median(c[0] for c in cells):.3f}** (target <= 1.03)",
        "- cells above 1.10 (target: none): "
        + (
            "; ".join(
                f"{m} @{a} b{b} {v:.3f} (95% CI {_fmt_ci(ci)}; 1 + gathers/ideal {_fmt(g, '.3f')}"
                f"{_fault_note(faults.get((m, a, b), {}))})"
                for v, ci, g, m, a, b in over
            )
            if over
            else "none"
        ),
        "- cells whose whole 95% interval lies above 1.10: "
        + (
            ", ".join(f"{m} @{a} b{b}" for _, ci, _, m, a, b in cells if ci and ci[0] > 1.10)
            or "none"
        ),
        "",
    ]
    return L


def _speedup_table(results: list, batches: list[str]) -> list[str]:
    """Speed-up of reorder over baseline, chanprune vs apple-upscale, and over which baseline.

    The two exporters' baselines differ: on the same masks, with the same gathers,
    apple-upscale's baseline is slower than chanprune's (it gathers by advanced indexing with a
    Python list, chanprune by index_select, gather or gather_rows), which inflates its own
    ratio. So besides each one's own ratio the table gives that baseline gap, the ceiling of
    chanprune's own ratio (baseline/ideal: no export of these sizes copies less than none),
    both reorder exports against one common baseline, apple-upscale's, on apple-upscale's
    masks, and both against the copy-free ideal of those masks.
    """
    L = [
        "## Speed-up of reorder over baseline: own baselines, and one common baseline",
        "",
        "All ratios paired per round (see the header). own = each exporter's baseline / its "
        "reorder (its own masks); ceiling = chanprune baseline / ideal (the most any reorder of "
        "chanprune's baseline could gain: ideal has no copies at all); baseline gap = "
        "apple-upscale's baseline / chanprune's baseline on the same (apple-upscale's) masks: "
        "both gather per consumer and the layer sizes agree to within 1% (chanprune also drops "
        "channels it proves zero), so this is mostly the cost of the gather itself; common = "
        "apple-upscale's baseline / chanprune's reorder export of apple-upscale's masks (for "
        "apple-upscale its own ratio); upscale / chanprune = apple-upscale's reorder / "
        "chanprune's reorder on the same masks (>= 1: chanprune's speed-up over the common "
        "baseline is at least apple-upscale's); x / ideal = each reorder export of "
        "apple-upscale's masks against the copy-free ideal of those sizes.",
        "",
        "| batch | model | amount | chanprune own | ceiling | upscale own | baseline gap | "
        "chanprune, common baseline | upscale / chanprune, same masks | "
        "upscale / chanprune 95% CI | "
        "chanprune >= upscale (common) | upscale / ideal | chanprune / ideal |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|",
    ]
    wins = {}
    for b in batches:
        for res in results:
            for amount, row in res["amounts"].items():
                lat = row["latency"].get(b, {})
                if "upscale" not in lat:
                    continue
                r = _paired(row, b)
                same = r("upscale", "reorder_upm")
                ok = None if same is None else same >= 1.0
                ci = _paired_ci(row, b, "upscale", "reorder_upm")
                wins.setdefault(b, []).append((ok, same, res["model"], amount, ci, b))
                cells = (
                    r("baseline", "reorder"),
                    r("baseline", "ideal"),
                    r("upscale_base", "upscale"),
                    r("upscale_base", "baseline_upm"),
                    r("upscale_base", "reorder_upm"),
                    same,
                )
                L.append(
                    f"| {b} | {res['model']} | {amount} | "
                    + " | ".join(_fmt(v, ".3f") for v in cells)
                    + f" | {_fmt_ci(ci)} | {'—' if ok is None else 'yes' if ok else 'no'} | "
                    f"{_fmt(r('upscale', 'ideal_upm'), '.3f')} | "
                    f"{_fmt(r('reorder_upm', 'ideal_upm'), '.3f')} |"
                )
    L.append("")
    for b, oks in wins.items():
        vals = [o for o in oks if o[1] is not None]
        worst = min(vals, key=lambda o: o[1]) if vals else None
        L.append(
            f"**Batch {b}:** against the common baseline chanprune's reorder export is at least "
            f"as fast as apple-upscale's in {sum(bool(o[0]) for o in oks)} of {len(oks)} cells"
            + (
                f" (median upscale / chanprune {statistics.median(o[1] for o in vals):.3f}, "
                f"lowest {worst[1]:.3f}: {worst[2]} @{worst[3]})."
                if worst
                else "."
            )
        )
    every = [o for oks in wins.values() for o in oks]
    slower = [o for o in every if o[4] and o[4][1] < 1.0]
    faster = [o for o in every if o[4] and o[4][0] > 1.0]
    if every:
        L += [
            "",
            f"**Beyond noise (whole 95% interval of upscale / chanprune on one side of 1), over "
            f"all {len(every)} cells:** chanprune's reorder export faster in {len(faster)}, "
            "slower in "
            + (", ".join(f"{m} @{a} b{b} ({_fmt_ci(ci)})" for *_, m, a, ci, b in slower) or "none")
            + "; the rest are within noise.",
        ]
    L.append("")
    return L


def run_info(args, cmdline: str, started: float, wq: int | None = None) -> dict:
    """Where and how the timings were taken: the report's header, kept in the JSON too so a
    report rewritten later (``--report-from``) still names the run it shows."""
    tuned = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else None
    if args.no_ort or args.device == "cuda":
        ort = "off (--no-ort)" if args.no_ort else "off (ONNX Runtime runs on the CPU)"
    else:
        ort = f"CPU, {args.threads} threads"
    return {
        "machine": f"`{platform.processor() or platform.machine()}` ({platform.platform()}), "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"threads {args.threads}" + (f", GPU {gpu}" if gpu else ""),
        "device": "cuda" if gpu else "cpu",
        "gpu": gpu,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "wall_min": round((time.time() - started) / 60, 1),
        "command": cmdline,
        "allocator": ", ".join(f"{k}={v}" for k, v in sorted(tuned.items())) or "glibc defaults",
        "width_quantum": {"asked": args.width_quantum, "used": wq},
        "ort": ort,
        "compile": "inductor, static shapes" if args.compile else "off",
    }


def _stem(args) -> str:
    """File name of the report: a GPU run does not overwrite the CPU one."""
    return "latency_cuda" if getattr(args, "device", "cpu") == "cuda" else "latency"


def _sides(results: list) -> list[str]:
    found = {side_of(r) for r in results}
    return [s for s in SIDES if s in found]


def _width_line(run: dict) -> str:
    wq = run.get("width_quantum")
    if wq is None:
        return "- width quantum: not recorded (run made before the benchmark passed one)"
    asked = wq["asked"]
    return f"- width quantum: {wq['used']}, passed to every export " + (
        "(--width-quantum not given: the product's default for this CPU)"
        if asked is None
        else f"(--width-quantum {asked})"
    )


def _header(args, run: dict, sides: list[str], done: bool, rewritten: str) -> list[str]:
    cuda = run.get("device") == "cuda"
    L = [
        f"# chanprune {'CUDA' if cuda else 'CPU'} latency"
        + ("" if done else " — PARTIAL (run not finished)"),
        "",
        f"- machine: {run['machine']}",
    ]
    if cuda:
        L.append(f"- GPU: **{run['gpu']}** (torch.cuda.get_device_name)")
    L.append(f"- date: {run['date']}; wall time {run['wall_min']:.1f} min")
    L.append(f"- command: `{run['command']}`")
    if rewritten:
        L.append(f"- report rewritten from that run's JSON by `{rewritten}` (same timings)")
    L.append(f"- allocator: {run['allocator']}")
    clock = (
        "CUDA events around each call, torch.cuda.synchronize() before it and on its end event"
        if cuda
        else "time.perf_counter"
    )
    L.append(
        f"- input {args.size}x{args.size}; one untimed priming call (torch.compile compiles "
        f"there), warm-up {WARMUP['cuda' if cuda else 'cpu']}, then {args.reps} interleaved "
        "rounds (order per round: evaluation.timing.round_order(GROUPS, round), the contenders "
        f"of each ratio adjacent); {clock}; median per contender, ms; every ratio is paired: "
        "the median over rounds of the two times in the same round; torch.inference_mode"
    )
    L.append(
        "- masks, each side its own rows and rounds: "
        + "; ".join(
            f"{s} side heuristic {HEURISTIC[s]}"
            + (" (the CLI's default side and heuristic)" if s == "output" else "")
            + (" (apple-upscale's, so its exports compare like for like)" if s == "input" else "")
            for s in sides
        )
        + "; unconstrained, scope=local (baseline/reorder/ideal share them); constrained = "
        "constrained masks + baseline export"
    )
    L.append(_width_line(run))
    L.append(
        f"- ONNX Runtime: {run.get('ort', 'CPU')}; torch.compile: {run.get('compile', 'not run')}"
    )
    where = (
        "natively on the GPU (its `.cuda()` calls as written)"
        if cuda
        else "on CPU through benchmarks/_upscale_shim.py (`.cuda()` no-op)"
    )
    L.append(
        "- upscale = apple-upscale 0.1.1 export of its own masks (input side, L2, unconstrained, "
        f"local) at the row's amount, run {where}, `prune(is_not_ane=True)`; upscale_base = "
        "its `baseline=True` export; its output is checked against its masked model (|diff| "
        "<= 1e-4 max|y|); reorder of upscale's masks = chanprune's reorder export of "
        "apple-upscale's masked model (like-for-like with upscale)"
    )
    L.append(
        "- efficiency = time ratio / MAC ratio: a pruned contender's time over its backend's "
        "unpruned model's (paired), over its MACs over the unpruned model's (count_macs, batch "
        "1). 1: time fell with the MACs; above 1: less work per millisecond than unpruned"
    )
    if args.note:
        L.append(f"- note: {args.note}")
    L.append("")
    return L


def _cell(row: dict, lat: dict, c: str) -> str:
    """A contender's median ms, or why it has none."""
    if c in lat:
        return _fmt(lat[c])
    return row.get("status", {}).get(c, "—")


def _latency_table(results: list, side: str, b: str) -> tuple[list[str], dict]:
    """The median ms of every contender, and the ratios between exports of the same masks;
    also (model, reorder/ideal, baseline/reorder, upscale base/upscale, CI) per amount."""
    L = [
        f"## Latency, {side} side, batch {b} (median ms)",
        "",
        "| model | amount | unpruned | constrained | baseline | reorder | ideal | upscale | "
        "upscale base | reorder/ideal | reorder/ideal 95% CI | 1 + gathers/ideal "
        "| baseline/reorder | upscale base/upscale "
        "| ort unpruned | ort constrained | ort baseline | ort reorder | ort baseline/reorder "
        "| compiled unpruned | compiled baseline | compiled reorder | compiled baseline/reorder "
        "| reorder of upscale's masks | upscale/reorder, same masks |",
        "|---|---|" + "---:|" * 23,
    ]
    summary = {}
    for res in (r for r in results if side_of(r) == side):
        for amount, row in res["amounts"].items():
            lat = row["latency"].get(b, {})
            up_missing = row.get("upscale_status") if row.get("upscale_status") != "ok" else None
            cells = [_cell(row, lat, c) for c in CONTENDERS[:5]]
            if "upscale" in lat:
                cells += [_fmt(lat["upscale"]), _fmt(lat.get("upscale_base"))]
            else:
                cells += [up_missing or "n/a", "n/a"]
            r = _paired(row, b)
            r_ideal, r_base = r("reorder", "ideal"), r("baseline", "reorder")
            r_up = r("upscale_base", "upscale")
            ci = _paired_ci(row, b, "reorder", "ideal")
            summary.setdefault(amount, []).append((res["model"], r_ideal, r_base, r_up, ci))
            L.append(
                f"| {res['model']} | {amount} | "
                + " | ".join(cells)
                + f" | {_fmt(r_ideal, '.3f')} | {_fmt_ci(ci)} | "
                + f"{_fmt(_gather_bound(row, b), '.3f')} | "
                + " | ".join(_fmt(v, ".3f") for v in (r_base, r_up))
                + " | "
                + " | ".join(_cell(row, lat, c) for c in ORT)
                + f" | {_fmt(r('ort_baseline', 'ort_reorder'), '.3f')} | "
                + " | ".join(_cell(row, lat, c) for c in COMPILED)
                + f" | {_fmt(r('compile_baseline', 'compile_reorder'), '.3f')}"
                + f" | {_fmt(lat.get('reorder_upm'))}"
                + f" | {_fmt(r('upscale', 'reorder_upm'), '.3f')} |"
            )
    L.append("")
    for amount, vals in summary.items():
        ri = [(m, v, ci) for m, v, _, _, ci in vals if v is not None]
        rb = [(m, v) for m, _, v, _, _ in vals if v is not None]
        if ri:
            worst = max(ri, key=lambda t: t[1])
            above = [m for m, _, ci in ri if ci and ci[0] > 1.10]
            L.append(
                f"**Summary {side} side, batch {b}, amount {amount}:** median over models of "
                f"reorder/ideal = {statistics.median(v for _, v, _ in ri):.3f} "
                f"(worst {worst[1]:.3f}, {worst[0]}, 95% CI {_fmt_ci(worst[2])}; "
                f"cells whose whole interval lies above 1.10: {', '.join(above) or 'none'}); "
                f"median baseline/reorder = {statistics.median(v for _, v in rb):.3f} "
                f"(min {min(v for _, v in rb):.3f}, max {max(v for _, v in rb):.3f})"
            )
            L.append("")
    return L, summary


LABELS = {
    "upscale_base": "upscale base",
    **{c: "ORT " + source_of(c) for c in ORT},
    **{c: "compiled " + source_of(c) for c in COMPILED},
}


def _eff_cell(row: dict, b: str, c: str) -> str:
    """``time ratio (efficiency)``, or why the contender has none."""
    t, e = efficiency(row, b, c)
    if t is not None:
        return f"{t:.2f}" + ("" if e is None else f" ({e:.2f})")
    if c == "upscale":
        status = row.get("upscale_status")
        return "n/a" if status in (None, "ok") else status
    if c == "upscale_base":
        return "n/a"
    return row.get("status", {}).get(c, "—")


def slower_exports(row: dict, b: str) -> list[str] | None:
    """The exports (``EXPORTS``: eager and ORT) not faster than their unpruned model in this
    cell; None where none of them was timed."""
    ratios = {c: efficiency(row, b, c)[0] for c in EXPORTS}
    timed = {c: t for c, t in ratios.items() if t is not None}
    if not timed:
        return None
    return [LABELS.get(c, c) for c, t in timed.items() if t >= 1.0]


def _efficiency_table(results: list, side: str, b: str) -> list[str]:
    """Every pruned contender against its backend's unpruned model: time ratio (efficiency)."""
    L = [
        f"### Against the unpruned model, {side} side, batch {b}: time ratio (efficiency)",
        "",
        "Each cell: the contender's time / its backend's unpruned model's (eager, ORT or "
        "compiled; paired per round) and, in brackets, that ratio / the MAC ratio.",
        "",
        "| model | amount | MACs kept constrained | MACs kept reorder | "
        + " | ".join(LABELS.get(c, c) for c in PRUNED)
        + " | not faster than unpruned (eager, ORT) |",
        "|---|---|" + "---:|" * (len(PRUNED) + 2) + "---|",
    ]
    tally, effs = [], {c: [] for c in PRUNED}
    for res in (r for r in results if side_of(r) == side):
        for amount, row in res["amounts"].items():
            s = row.get("sizes", {})
            kept = [
                _ratio(s.get(f"{c}_macs"), s.get("unpruned_macs"))
                for c in ("constrained", "reorder")
            ]
            slower = slower_exports(row, b)
            if slower is not None:
                tally.append((res["model"], amount, slower))
            for c in PRUNED:
                e = efficiency(row, b, c)[1]
                if e is not None:
                    effs[c].append(e)
            L.append(
                f"| {res['model']} | {amount} | "
                + " | ".join(_fmt(k, ".0%") for k in kept)
                + " | "
                + " | ".join(_eff_cell(row, b, c) for c in PRUNED)
                + f" | {'—' if slower is None else ', '.join(slower) or 'none'} |"
            )
    L.append("")
    if tally:
        faster = sum(1 for *_, sl in tally if not sl)
        medians = ", ".join(
            f"{LABELS.get(c, c)} {statistics.median(v):.2f}" for c, v in effs.items() if v
        )
        L.append(
            f"**{side} side, batch {b}:** every pruned export (constrained, baseline, reorder; "
            f"eager and ORT) faster than its unpruned model in {faster} of {len(tally)} cells. "
            f"Median efficiency: {medians or '—'}."
        )
        L.append("")
    return L


def _faster_overall(results: list, batches: list[str]) -> list[str]:
    """The target "every pruned export faster than the unpruned model, eager and ORT", over the
    whole set."""
    cells = [
        (f"{res['model']} ({side_of(res)}) @{amount} b{b}", slower_exports(row, b))
        for b in batches
        for res in results
        for amount, row in res["amounts"].items()
    ]
    cells = [(where, sl) for where, sl in cells if sl is not None]
    if not cells:
        return []
    missed = [f"{where}: {', '.join(sl)}" for where, sl in cells if sl]
    return [
        f"- every pruned export (constrained, baseline, reorder; eager and ORT) faster than the "
        f"unpruned model: {len(cells) - len(missed)} of {len(cells)} cells; not faster: "
        + ("; ".join(missed) or "none"),
        "",
    ]


def _sizes_table(results: list) -> list[str]:
    L = [
        "## Sizes (batch-1 MACs; copies = run-time gathers; copied bytes per sample)",
        "",
        "| model | side | amount | params unpruned | params constrained | params reorder "
        "| params upscale | MACs unpruned | MACs constrained | MACs reorder | MACs upscale "
        "| copies baseline | copies reorder | copied B/sample baseline "
        "| copied B/sample reorder |",
        "|---|---|---|" + "---:|" * 12,
    ]
    keys = (
        "unpruned_params",
        "constrained_params",
        "reorder_params",
        "upscale_params",
        "unpruned_macs",
        "constrained_macs",
        "reorder_macs",
        "upscale_macs",
        "baseline_copies",
        "reorder_copies",
        "baseline_copied_bytes",
        "reorder_copied_bytes",
    )
    for res in results:
        for amount, row in res["amounts"].items():
            s = row["sizes"]
            L.append(
                f"| {res['model']} | {side_of(res)} | {amount} | "
                + " | ".join(_fmt(s.get(k), ",") for k in keys)
                + " |"
            )
    L.append("")
    return L


def _compile_note(row: dict) -> str:
    """Compile seconds per batch of the compiled contenders, e.g. ``b1 12/30/28``."""
    per = row.get("compile_s") or {}
    return "; ".join(
        f"b{b} " + "/".join(_fmt(s.get(c), ".0f") for c in COMPILED) for b, s in per.items() if s
    )


def _export_table(results: list) -> list[str]:
    L = [
        "## Export time (s)",
        "",
        "mask = chanprune.mask (includes the torch.export capture on the model's first amount); "
        "reorder/baseline = chanprune.export with the capture cached (includes verification); "
        "cold = mask + capture + reorder export on a fresh model (first row only); "
        "upscale = apple-upscale compute+prune (its own trace each time); compile = the "
        "priming call of the compiled unpruned/baseline/reorder modules per batch (the "
        "unpruned model's compiles once per model and batch), not timed as latency.",
        "",
        "| model | side | amount | mask | reorder export | baseline export | constrained export "
        "| cold | upscale reorder | upscale baseline | upscale status | compile |",
        "|---|---|---|" + "---:|" * 7 + "---|---|",
    ]
    keys = ("mask_s", "reorder_s", "baseline_s", "constrained_s", "cold_s")
    keys += ("upscale_s", "upscale_base_s")
    for res in results:
        for amount, row in res["amounts"].items():
            e = row["export"]
            L.append(
                f"| {res['model']} | {side_of(res)} | {amount} | "
                + " | ".join(_fmt(e.get(k)) for k in keys)
                + f" | {row.get('upscale_status')} | {_compile_note(row) or '—'} |"
            )
    L.append("")
    return L


def _left_out(results: list) -> list[str]:
    """Contenders that did not run (failed to compile, to run on the GPU, to export to ONNX)."""
    lines = [
        f"- {res['model']} ({side_of(res)}) @{amount}: {c}: {why}"
        for res in results
        for amount, row in res["amounts"].items()
        for c, why in row.get("status", {}).items()
    ]
    return ["## Contenders left out", "", *lines, ""] if lines else []


def write_report(results: list, args, run: dict, done: bool, rewritten: str = "") -> None:
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, _stem(args))
    with open(stem + ".json", "w") as f:
        json.dump(
            {"args": vars(args), "run": run, "complete": done, "results": results}, f, indent=1
        )
    sides, batches = _sides(results), [str(b) for b in args.batches]
    L = _header(args, run, sides, done, rewritten)
    for side in sides:
        for b in batches:
            L += _latency_table(results, side, b)[0]
            L += _efficiency_table(results, side, b)
    overall = _overall(results, batches)
    if overall:
        overall[-1:] = _faster_overall(results, batches) or [""]
    L += overall
    L += _speedup_table(results, batches)
    L += _sizes_table(results)
    L += _export_table(results)
    L += _left_out(results)
    errors = [e for r in results for e in r["errors"]]
    if errors:
        L += ["## Export failures", "", *[f"- {e}" for e in errors], ""]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(L))
    _plot(results, args, run)


def _plot(results: list, args, run: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = _sides(results)
    if not sides:
        return
    side, b, amount = sides[0], str(max(args.batches)), str(max(args.amounts))
    rows = [
        (r["model"], r["amounts"].get(amount, {}).get("latency", {}).get(b))
        for r in results
        if side_of(r) == side
    ]
    rows = [(m, lat) for m, lat in rows if lat and lat.get("unpruned")]
    if not rows:
        return
    shown = [c for c in CONTENDERS[1:] if any(c in lat for _, lat in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 4.2))
    w = 0.8 / max(1, len(shown))
    for i, c in enumerate(shown):
        xs = [j + (i - (len(shown) - 1) / 2) * w for j in range(len(rows))]
        ys = [lat.get(c, float("nan")) / lat["unpruned"] for _, lat in rows]
        ax.bar(xs, ys, w, label=c)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([m for m, _ in rows], rotation=25, ha="right")
    ax.set_ylabel("latency / unpruned")
    where = run.get("gpu") or f"CPU ({args.threads} threads)"
    ax.set_title(f"{where}, {side} side, batch {b}, amount {amount}, {args.size}px")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, _stem(args) + ".png"), dpi=120)
    plt.close(fig)


def rewrite_report(path: str, out: str, cmdline: str) -> int:
    """The report of an earlier run, from its JSON: for a change to the report alone, which
    should not cost a full rerun (nor pass off new timings as the old run's). Options the run
    predates take their defaults."""
    with open(path) as f:
        saved = json.load(f)
    if "run" not in saved:
        print(f"{path} has no 'run' header (written before --report-from existed)", file=sys.stderr)
        return 2
    defaults = vars(build_parser().parse_args([]))
    args = argparse.Namespace(**{**defaults, **saved["args"], "out": out})
    write_report(saved["results"], args, saved["run"], saved["complete"], rewritten=cmdline)
    _log(f"rewrote {out}/{_stem(args)}.md, .png, .json from {path}")
    return 0


# --------------------------------------------------------------------------- main
def _quantum(text: str) -> int:
    q = int(text)
    if q < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1: no rounding), got {q}")
    return q


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=None, help=f"default: {' '.join(MODELS)}")
    ap.add_argument("--amounts", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument(
        "--sides",
        nargs="+",
        choices=SIDES,
        default=list(SIDES),
        help="mask sides, each its own rows (default: both; output is the CLI's default)",
    )
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: time the PyTorch contenders on the GPU (CUDA events); writes latency_cuda.*",
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time torch.compile (inductor) of unpruned/baseline/reorder "
        "(default: on, off with --quick)",
    )
    ap.add_argument(
        "--width-quantum",
        type=_quantum,
        default=None,
        help="width_quantum passed to every export (default: the product's, for this CPU)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: resnet18+mobilenet_v2 (unless --models), amount 0.5, batch 1, "
        "3 reps, size 64, no torch.compile (unless --compile)",
    )
    ap.add_argument("--no-upscale", action="store_true", help="skip apple-upscale")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime contenders")
    ap.add_argument("--note", default="", help="free text added to the markdown header")
    ap.add_argument(
        "--report-from",
        metavar="JSON",
        help="time nothing: rewrite the report (markdown, plot, JSON) into --out from a "
        "latency.json a run wrote",
    )
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cmdline = "python " + shlex.join(
        [os.path.relpath(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)]
    )
    if args.report_from:
        return rewrite_report(args.report_from, args.out, cmdline)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.quick:
        args.models = args.models or ["resnet18", "mobilenet_v2"]
        args.amounts, args.batches, args.reps, args.size = [0.5], [1], 3, 64
        args.compile = bool(args.compile)
    args.models = args.models or list(MODELS)
    args.compile = args.compile is not False
    wq = check_width_quantum(args.width_quantum)
    torch.set_num_threads(args.threads)
    started = time.time()
    _log(
        f"torch {torch.__version__}, {args.device}, {args.threads} threads, models "
        f"{args.models}, sides {args.sides}, amounts {args.amounts}, batches {args.batches}, "
        f"reps {args.reps}, size {args.size}, width quantum {wq}, compile {args.compile}"
    )

    results = []
    for name in args.models:
        t0 = time.perf_counter()
        _log(f"== {name}")
        try:
            results.extend(bench_model(name, args, wq))
        except Exception as e:
            traceback.print_exc()
            results.append(
                {"model": name, "amounts": {}, "errors": [f"{name}: {type(e).__name__}: {e}"]}
            )
        _log(f"== {name} done in {time.perf_counter() - t0:.0f}s")
        write_report(results, args, run_info(args, cmdline, started, wq), done=False)
    write_report(results, args, run_info(args, cmdline, started, wq), done=True)
    errors = [e for r in results for e in r["errors"]]
    minutes = (time.time() - started) / 60
    _log(f"wrote {args.out}/{_stem(args)}.md, .png, .json in {minutes:.1f} min")
    if errors:
        print("EXPORT FAILURES:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
