"""The frontier study's grid (issue 26, item 4): masks for latency targets, then their top-1.

Two stages, so that the one that times runs alone (``frontier.py`` calls them):

- :func:`masks_stage` (``--stage masks``, **needs a quiet machine**): for every base model,
  contender, heuristic and latency target, ``chanprune.mask(target_latency=t, backend="eager")``
  on the trained model at 224x224, batch 1, which measures the chosen export against the
  unpruned model paired per round (``chanprune.masking.targets.refine``). The measured ratio,
  its interval and the prediction go to ``frontier_masks.jsonl``; which parameter entries the
  mask zeroed goes to the cache (``masks/<key>.npz``), so the second stage replays it exactly.
- :func:`eval_stage` (``--stage eval``, times nothing): replays each mask on the base model and
  measures Fashion-MNIST top-1 post-training, after BatchNorm recalibration (``SEEDS``
  calibration samples) and, for the configs ``--finetune`` names, after one epoch of
  fine-tuning per seed; the recalibrated model is exported and its predictions on the test set
  checked against the masked model's. One line per config in ``frontier_eval.jsonl``.

Both stages resume: a config already in its file is skipped. :func:`amounts_stage` (``--stage
amounts``, times nothing) adds the paper's view: top-1 at equal pruning amount, and
:func:`ort_stage` (``--stage ort``, **quiet machine**) the same exports' latency in ONNX Runtime.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import chanprune
from chanprune.errors import MaskError
from chanprune.evaluation.accuracy import evaluate
from chanprune.evaluation.recovery import recalibrate, sample_batches
from chanprune.evaluation.training import train
from chanprune.masking.targets import LATENCY_TOLERANCE

# What each contender passes to chanprune.mask besides the target.
CONTENDERS: dict[str, dict[str, Any]] = {
    "constrained": {"constrained": True, "side": "output"},
    "input": {"constrained": False, "side": "input"},
    "output": {"constrained": False, "side": "output"},
    "mixed": {"constrained": None, "side": "output"},  # the default for a target
}
TARGETS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5)  # the paper's view: the same share of channels
HEURISTICS = ("l1", "l2", "lamp", "fpgm")
SEEDS = (0, 1, 2)  # calibration samples (and fine-tuning orders)
CALIBRATION = (20, 128)  # batches x images per recalibration
LATENCY_SIZE = 224  # the latency is measured at 224x224, batch 1


def key(
    model: str,
    contender: str,
    heuristic: str,
    target: float,
    mask_seed: int = 0,
    backend: str = "eager",
) -> str:
    """A config's name; a Taylor mask scored on another calibration sample than seed 0's gets
    ``-m<seed>`` (one more draw of the same config), a target on another backend than eager
    ``-<backend>``."""
    return (
        f"{model}-{contender}-{heuristic}-{target:g}"
        + (f"-m{mask_seed}" if mask_seed else "")
        + (f"-{backend}" if backend != "eager" else "")
    )


def backend_of(rec: dict[str, Any]) -> str:
    """The backend a mask record's target was measured on (records before backends: eager)."""
    return rec.get("backend", "eager")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def zeros_of(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """{parameter: boolean array} of the entries that are zero now but were not in ``before``:
    what a mask zeroed (trained weights have no exact zeros of their own)."""
    out = {}
    for n, p in model.named_parameters():
        z = (p.detach() == 0) & ~before[n]
        if bool(z.any()):
            out[n] = z.numpy()
    return out


def replay(model: torch.nn.Module, zeros: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Zero the saved entries of ``model`` in place; return them as held-zero masks."""
    params = dict(model.named_parameters())
    held = {n: torch.from_numpy(np.asarray(z, dtype=bool)) for n, z in zeros.items()}
    with torch.no_grad():
        for n, z in held.items():
            params[n].masked_fill_(z, 0)
    return held


def masks_stage(
    models: Iterable[str],
    base_model,
    cache: Path,
    out: Path,
    contenders: Iterable[str] = tuple(CONTENDERS),
    heuristics: Iterable[str] = ("l1",),
    targets: Iterable[float] = TARGETS,
    calibration_set=None,
    redo_missed: bool = False,
    redo: bool = False,
    mask_seeds: Iterable[int] = (0,),
    backend: str = "eager",
) -> None:
    """Mask every config not yet in ``out/frontier_masks.jsonl`` (see the module docstring).
    ``heuristic="taylor"`` scores on ``calibration_set`` (20 x 64 of its images drawn with
    each of ``mask_seeds``: the training images at the accuracy's size, not the 224x224 latency
    input); every seed's mask is a config of its own (:func:`key`), so the report can show
    how much the mask itself varies with its calibration sample.
    ``redo_missed`` masks again the configs whose latest measured ratio missed its target (a
    new line, which replaces the old one for the eval stage and the report); ``redo`` masks
    every selected config again (after a change to masking). ``backend="ort"`` aims the
    targets at ONNX Runtime instead (``chanprune.mask(backend="ort")``: the dense export),
    each a config of its own (:func:`key`)."""
    path = out / "frontier_masks.jsonl"
    last = latest(read_jsonl(path))
    done = (
        set()
        if redo
        else {k for k, r in last.items() if not (redo_missed and r.get("met") is False)}
    )
    calibration = {
        s: list(sample_batches(calibration_set, 20, 64, s)) if calibration_set is not None else None
        for s in mask_seeds
    }
    torch.manual_seed(0)
    x = torch.randn(1, 3, LATENCY_SIZE, LATENCY_SIZE)
    grid = itertools.product(mask_seeds, models, heuristics, contenders, targets)
    for seed, name, heuristic, contender, t in grid:
        k = key(name, contender, heuristic, t, seed, backend)
        if (seed and heuristic != "taylor") or k in done:
            continue  # weight heuristics draw no calibration sample: one mask per config
        model = base_model(name)
        rec = mask_one(
            name, contender, heuristic, t, model, x, cache, calibration[seed], seed, backend
        )
        append_jsonl(path, rec)
        said = (
            f"ratio {rec['ratio']:.3f} (predicted {rec['predicted']:.3f}), "
            + ("met" if rec["met"] else "MISSED")
            if "ratio" in rec
            else "unreachable"
        )
        print(f"{rec['key']}: {said}, {rec['seconds']:.0f} s", flush=True)


def mask_one(
    name: str,
    contender: str,
    heuristic: str,
    t: float,
    model: torch.nn.Module,
    x: torch.Tensor,
    cache: Path,
    calibration: list[torch.Tensor] | None,
    mask_seed: int = 0,
    backend: str = "eager",
) -> dict[str, Any]:
    """Mask ``model`` (the trained ``name``) for latency target ``t``; save what it zeroed in
    ``cache`` and return the record: the measured ratio, its interval, the prediction, the
    warnings, or why the target was unreachable. ``mask_seed``: which calibration sample a
    Taylor mask scored on."""
    before = {n: p.detach() == 0 for n, p in model.named_parameters()}
    rec: dict[str, Any] = {
        "key": key(name, contender, heuristic, t, mask_seed, backend),
        "model": name,
        "contender": contender,
        "heuristic": heuristic,
        "target": t,
        "mask_seed": mask_seed,
        "backend": backend,
        "threads": torch.get_num_threads(),
        "run": time.time_ns() // 1_000_000,  # names this mask's file
    }
    extra = {"calibration": calibration} if heuristic == "taylor" else {}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = chanprune.mask(
                model,
                x,
                heuristic=heuristic,
                target_latency=t,
                backend=backend,
                **CONTENDERS[contender],
                **extra,
            )
        except MaskError as e:
            m = None
            rec["unreachable"] = str(e)
    rec["seconds"] = round(time.perf_counter() - start, 1)
    rec["warnings"] = sorted({str(w.message) for w in caught})
    if m is not None:
        meas = m.measured
        rec.update(
            amount=m.amount,
            method=m.method,  # the export the ratio holds for
            ratio=m.ratio,
            predicted=m.predicted,
            interval=list(meas.interval) if meas and meas.interval else None,
            rounds=meas.rounds if meas else None,
            met=abs(m.ratio / t - 1) <= LATENCY_TOLERANCE,
            attempts=m.attempts,  # (predicted, measured) of each measurement of the search
        )
        (cache / "masks").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(mask_file(cache, rec), **zeros_of(model, before))
    return rec


def mask_file(cache: Path, rec: dict[str, Any]) -> Path:
    """Where a mask record's zeroed entries are (records before ``run`` ids: by key alone)."""
    run = rec.get("run")
    return cache / "masks" / (f"{rec['key']}-{run}.npz" if run else f"{rec['key']}.npz")


def latest(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last line per key: a redone mask, or an evaluation with fine-tuning added."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out[r["key"]] = r
    return out


def _batches(dataset, seed: int) -> Iterator:
    count, size = CALIBRATION
    return sample_batches(dataset, count, size, seed=seed)


def eval_stage(
    base_model,
    cache: Path,
    out: Path,
    train_set,
    calib_set,
    test_set,
    size: int,
    finetune: set[tuple[str, str, str, float]] | None = None,
    models: Iterable[str] | None = None,
    contenders: Iterable[str] | None = None,
) -> None:
    """Top-1 of every masked config in ``frontier_masks.jsonl`` not yet in
    ``frontier_eval.jsonl`` (see the module docstring). ``finetune`` holds (model, contender,
    heuristic, target) tuples that also get one epoch of fine-tuning per seed; such a config is
    evaluated again if its line has no fine-tuned numbers yet. ``models`` and ``contenders``, if
    given, limit it to those (two processes can then share the work)."""
    finetune = finetune or set()
    models = set(models) if models is not None else None
    contenders = set(contenders) if contenders is not None else None
    path = out / "frontier_eval.jsonl"
    have = latest(read_jsonl(path))
    x = torch.zeros(1, 3, size, size)
    for rec in latest(read_jsonl(out / "frontier_masks.jsonl")).values():
        k = rec["key"]
        if "ratio" not in rec or (models is not None and rec["model"] not in models):
            continue
        if contenders is not None and rec["contender"] not in contenders:
            continue
        cfg = (rec["model"], rec["contender"], rec["heuristic"], rec["target"])
        tune = cfg in finetune
        same = k in have and have[k].get("mask_run") == rec.get("run")
        if same and (not tune or "finetuned" in have[k]):
            continue
        start = time.perf_counter()
        zeros = dict(np.load(mask_file(cache, rec)))
        masked = base_model(rec["model"])
        held = replay(masked, zeros)
        post = evaluate(masked, test_set, batch_size=500, keep_predictions=True)
        row: dict[str, Any] = {
            "key": k,
            "mask_run": rec.get("run"),
            "post": post.top1,
            "recalibrated": [],
        }
        for seed in SEEDS:
            m = copy.deepcopy(masked)
            recalibrate(m, _batches(calib_set, seed))
            ev = evaluate(m, test_set, batch_size=500, keep_predictions=True)
            row["recalibrated"].append(ev.top1)
            if seed == SEEDS[0]:
                # The deployed artifact: the recalibrated model's export, checked on every image.
                exp = chanprune.export(m, x, method=rec.get("method", "reorder"))
                ex = evaluate(exp, test_set, batch_size=500, keep_predictions=True)
                row["export_identical"] = bool(torch.equal(ex.predictions, ev.predictions))
                row["export_top1"] = ex.top1
        if tune:
            row["finetuned"] = []
            for seed in SEEDS:
                m = copy.deepcopy(masked)
                recalibrate(m, _batches(calib_set, seed))
                train(m, train_set, 1, lr=1e-3, seed=seed, progress=False, keep_zero=held)
                row["finetuned"].append(evaluate(m, test_set, batch_size=500).top1)
        row["seconds"] = round(time.perf_counter() - start, 1)
        append_jsonl(path, row)
        have[k] = row
        print(
            f"{k}: post {row['post']:.2f}, recalibrated "
            + ", ".join(f"{v:.2f}" for v in row["recalibrated"])
            + (", fine-tuned " + ", ".join(f"{v:.2f}" for v in row["finetuned"]) if tune else "")
            + f", export identical {row['export_identical']}, {row['seconds']:.0f} s",
            flush=True,
        )


def amounts_stage(
    models: Iterable[str],
    base_model,
    out: Path,
    calib_set,
    test_set,
    size: int,
    amounts: Iterable[float] = AMOUNTS,
    contenders: Iterable[str] = ("constrained", "input", "output"),
    heuristic: str = "l1",
) -> None:
    """The paper's view, at equal pruning *amount* (``--stage amounts``, times nothing): mask
    each model with ``amount`` of each layer's channels per contender, export it (which checks
    the export against the masked model), count the export's MACs against the unpruned
    model's, and measure top-1 post-training and after recalibration (``SEEDS``). One line per
    config in ``frontier_amounts.jsonl``; configs already there are skipped."""
    path = out / "frontier_amounts.jsonl"
    have = {r["key"] for r in read_jsonl(path)}
    x = torch.zeros(1, 3, size, size)
    for name, contender, a in itertools.product(models, contenders, amounts):
        k = f"{name}-{contender}-{heuristic}-a{a:g}"
        if k in have:
            continue
        start = time.perf_counter()
        model = base_model(name)
        macs = chanprune.count_macs(model, x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a low prunable share: the report shows the MACs
            chanprune.mask(model, x, amount=a, heuristic=heuristic, **CONTENDERS[contender])
        pruned = chanprune.export(model, x)
        row: dict[str, Any] = {
            "key": k,
            "model": name,
            "contender": contender,
            "heuristic": heuristic,
            "amount": a,
            "macs_ratio": chanprune.count_macs(pruned, x) / macs,
            "post": evaluate(model, test_set, batch_size=500).top1,
            "recalibrated": [],
        }
        for seed in SEEDS:
            m = copy.deepcopy(model)
            recalibrate(m, _batches(calib_set, seed))
            row["recalibrated"].append(evaluate(m, test_set, batch_size=500).top1)
        row["seconds"] = round(time.perf_counter() - start, 1)
        append_jsonl(path, row)
        print(
            f"{k}: MACs {row['macs_ratio']:.3f}, post {row['post']:.2f}, recalibrated "
            + ", ".join(f"{v:.2f}" for v in row["recalibrated"]),
            flush=True,
        )


ORT_CONTENDERS = ("constrained", "mixed")  # one per family: the baseline and the default
# Export methods measured in ORT: reorder (the default) and dense, which keeps ORT's blocked
# layout (no run-time copies: benchmarks/results/ort_graphs.md). A constrained mask has no
# copies to avoid, so it gets the first only.
ORT_METHODS = ("reorder", "dense")


def ort_stage(
    models: Iterable[str],
    base_model,
    cache: Path,
    out: Path,
    contenders: Iterable[str] = ORT_CONTENDERS,
    rounds: int = 31,
    keys: set[str] | None = None,
    methods: tuple[str, ...] = ORT_METHODS,
) -> None:
    """ONNX Runtime latency of the masks the masks stage made (``--stage ort``, **needs a quiet
    machine**): each mask of ``contenders`` is replayed on its base model and exported with
    each of ``methods`` (a constrained mask with the first only), and the export runs in ONNX
    Runtime (no spinning threads) against the unpruned model's ONNX file at 224x224, batch 1,
    paired per round like the eager measurement. The masks were aimed at eager PyTorch, so this
    shows how their speed carries over to ORT. ``keys``, if given, limits it to those masks
    (``frontier_report.deciding_keys``). One line per mask and method in
    ``frontier_ort.jsonl``; those already measured there are skipped."""
    from chanprune.latency.measure import measure_calls, runner

    path = out / "frontier_ort.jsonl"
    have = {(r["key"], r.get("method", "reorder")): r for r in read_jsonl(path)}
    contenders, models = set(contenders), list(models)
    todo = [
        (r, method)
        for r in latest(read_jsonl(out / "frontier_masks.jsonl")).values()
        if "ratio" in r
        and backend_of(r) == "eager"
        and r["model"] in models
        and r["contender"] in contenders
        and (keys is None or r["key"] in keys)
        for method in (methods[:1] if r["contender"] == "constrained" else methods)
        if have.get((r["key"], method), {}).get("mask_run", -1) != r.get("run")
    ]
    torch.manual_seed(0)
    x = torch.randn(1, 3, LATENCY_SIZE, LATENCY_SIZE)
    for name in models:
        mine = [(r, m) for r, m in todo if r["model"] == name]
        if not mine:
            continue
        unpruned = runner(base_model(name).eval(), (x,), {}, "ort")  # one ONNX file per model
        for rec, method in mine:
            start = time.perf_counter()
            masked = base_model(name)
            replay(masked, dict(np.load(mask_file(cache, rec))))
            pruned = chanprune.export(masked, x, method=method)
            got = measure_calls(runner(pruned, (x,), {}, "ort"), unpruned, rounds=rounds)
            row = {
                "key": rec["key"],
                "method": method,
                "mask_run": rec.get("run"),
                "ort_ratio": got.ratio,
                "interval": list(got.interval) if got.interval else None,
                "rounds": got.rounds,
                "threads": torch.get_num_threads(),
                "eager_ratio": rec["ratio"],
                "seconds": round(time.perf_counter() - start, 1),
            }
            append_jsonl(path, row)
            print(
                f"{rec['key']} ({method}): ORT {got.ratio:.3f} (eager {rec['ratio']:.3f}), "
                f"{row['seconds']:.0f} s",
                flush=True,
            )
