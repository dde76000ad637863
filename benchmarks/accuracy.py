"""Post-training pruning accuracy on Fashion-MNIST: constrained vs unconstrained masks.

    python benchmarks/accuracy.py                 # train (cached), run the grid (resumable), report
    python benchmarks/accuracy.py --stage train   # only train / load the base models
    python benchmarks/accuracy.py --stage report  # only rewrite accuracy.md / accuracy.png
    python benchmarks/accuracy.py --models resnet18 --amounts 0.3 --finetune-epochs 1

Base models: torchvision resnet18, densenet121, mobilenet_v2, efficientnet_b0 (random init,
num_classes=10), trained for ``--epochs`` (1) on the first ``--train-limit`` (30k) training
images at 32x32 (28x28 padded, grey repeated to RGB) with a fixed seed: what a shared 2-core
machine allowed. Checkpoints are cached outside the repo (``--cache``, default
~/.cache/chanprune/fmnist). Then, per model x heuristic x amount x {constrained,
unconstrained}, the trained model is masked (local scope, input side: the paper's main case;
HRank calibrated on 128 training images), exported with the reorder method, evaluated on the
test images with no fine-tuning (unless ``--finetune-epochs``), and restored to its trained
weights. All 10k test images by default (the committed results; rows of an earlier
``--test-limit 2000`` run stay in accuracy.jsonl and are reported apart).

Each finished config is appended as one JSON line to ``<out>/accuracy.jsonl`` (keyed by its
config); a rerun skips what is there, so the grid can be stopped and resumed, or split over
processes with ``--models``. ``--check`` decides for which configs the masked model is also
evaluated and its predictions compared with the export's (the table's top-1 is the export's;
where both ran, the predictions are compared image by image).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

import chanprune
from chanprune.evaluation.accuracy import evaluate
from chanprune.evaluation.data import FashionMNIST
from chanprune.evaluation.training import train

MODELS = ["resnet18", "densenet121", "mobilenet_v2", "efficientnet_b0"]
HEURISTICS = list(chanprune.HEURISTICS)
AMOUNTS = [0.1, 0.3, 0.5, 0.2, 0.4]  # this order: a partial run still spans the range
EPOCHS = 1  # on the first TRAIN_IMAGES training images: what the shared 2-core machine allowed
TRAIN_IMAGES = 30000
SEED = 0
HERE = Path(__file__).resolve().parent


def build(name: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None, num_classes=10)


def trained_model(name: str, args, train_set, test_set) -> tuple[torch.nn.Module, dict]:
    """The cached trained model, training it first if the cache has none."""
    epochs = args.epochs
    n = len(train_set)
    path = args.cache / f"{name}-{args.size}px-n{n}-e{epochs}-s{SEED}.pt"
    model = build(name)
    if path.exists():
        ck = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["state_dict"])
        return model.eval(), ck["meta"]
    torch.manual_seed(SEED)
    model = build(name)
    t0 = time.perf_counter()
    losses = train(model, train_set, epochs, seed=SEED, desc=name)
    seconds = time.perf_counter() - t0
    ev = evaluate(model, test_set, progress=True, desc=f"{name} test")
    meta = {
        "epochs": epochs,
        "losses": losses,
        "top1": ev.top1,
        "train_s": seconds,
        "seed": SEED,
        "size": args.size,
        "train_images": n,
    }
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
    print(f"{name}: trained {epochs} epoch(s) in {seconds:.0f} s, test top-1 {ev.top1:.2f}")
    return model.eval(), meta


LATENCY_BATCH, LATENCY_REPS = 32, 5
SIDE, SCOPE, METHOD = "input", "local", "reorder"
CALIBRATION = 128


def key_of(rec: dict) -> str:
    return "|".join(
        str(rec[k])
        for k in ("model", "heuristic", "amount", "constrained", "finetune_epochs", "test_images")
    )


def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[key_of(rec)] = rec
    return out


def append_result(path: Path, rec: dict) -> None:
    """One line per config, written with a single append so parallel runs do not interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def latency_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(LATENCY_REPS):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def should_check(args, name: str, heuristic: str, amount: float) -> bool:
    if args.check == "auto":
        return name == "resnet18" or (abs(amount - 0.3) < 1e-9 and heuristic == "l1")
    return args.check == "all"


def run_config(base, rec: dict, inputs: dict, args, train_set, test_set) -> dict:
    """Mask ``base`` in place, export (reorder), evaluate, restore ``base``; fill ``rec``.

    Masking the same module object each time (and restoring its weights afterwards) instead
    of a deep copy reuses its cached graph capture: the capture is the slowest stage. The
    export owns its weights, so evaluating or fine-tuning it leaves ``base`` alone.
    """
    x, calib, x1, xl = inputs["x"], inputs["calib"], inputs["x1"], inputs["xl"]
    saved = {k: v.clone() for k, v in base.state_dict().items()}
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masks = chanprune.mask(
                base,
                x,
                amount=rec["amount"],
                heuristic=rec["heuristic"],
                scope=SCOPE,
                side=SIDE,
                constrained=rec["constrained"],
                calibration=[calib],
            )
            t1 = time.perf_counter()
            exported = chanprune.export(base, x, method=METHOD)
        t2 = time.perf_counter()
        rec["masked_channels"] = sum(map(len, masks.values()))
        rec["mask_s"], rec["export_s"] = round(t1 - t0, 2), round(t2 - t1, 2)
        ev = evaluate(exported, test_set, keep_predictions=True, batch_size=500)
        rec["top1"], rec["correct"] = ev.top1, ev.correct
        if should_check(args, rec["model"], rec["heuristic"], rec["amount"]):
            em = evaluate(base, test_set, keep_predictions=True, batch_size=500)
            rec["masked_top1"] = em.top1
            rec["prediction_mismatches"] = int((em.predictions != ev.predictions).sum())
    finally:
        base.load_state_dict(saved)
    rec["params"], rec["macs"] = (
        chanprune.count_params(exported),
        chanprune.count_macs(exported, x1),
    )
    rec["copies"] = len(getattr(exported, "chanprune_copies", []) or [])
    rec["latency_ms"] = latency_ms(exported, xl)
    if rec["finetune_epochs"]:
        train(
            exported,
            train_set,
            rec["finetune_epochs"],
            lr=1e-3,
            seed=SEED,
            desc=f"finetune {rec['model']}",
        )
        rec["finetuned_top1"] = evaluate(exported, test_set, batch_size=500).top1
    return rec


def run_grid(args, train_set, test_set) -> None:
    from tqdm import tqdm

    path = args.out / "accuracy.jsonl"
    done = load_results(path)
    gen = torch.Generator().manual_seed(SEED)
    idx = torch.randperm(len(train_set), generator=gen)
    calib = torch.stack([train_set[int(i)][0] for i in idx[:CALIBRATION]])
    inputs = {"x": calib[:8], "calib": calib, "x1": calib[:1], "xl": calib[:LATENCY_BATCH]}
    n_test = len(test_set)
    for name in args.models:
        base, meta = trained_model(name, args, train_set, test_set)
        ref = {
            "model": name,
            "heuristic": "none",
            "amount": 0.0,
            "constrained": False,
            "finetune_epochs": 0,
            "test_images": n_test,
        }
        if key_of(ref) not in done:
            ref.update(
                top1=evaluate(base, test_set, batch_size=500).top1,
                params=chanprune.count_params(base),
                macs=chanprune.count_macs(base, inputs["x1"]),
                latency_ms=latency_ms(base, inputs["xl"]),
                train=meta,
            )
            append_result(path, ref)
            done[key_of(ref)] = ref
        todo = [
            {
                "model": name,
                "heuristic": h,
                "amount": a,
                "constrained": c,
                "finetune_epochs": args.finetune_epochs,
                "test_images": n_test,
            }
            for a in args.amounts
            for h in args.heuristics
            for c in (True, False)
        ]
        todo = [r for r in todo if key_of(r) not in done]
        for rec in tqdm(todo, desc=f"{name} grid", dynamic_ncols=True):
            if key_of(rec) in load_results(path):  # done meanwhile by a parallel run
                continue
            try:
                run_config(base, rec, inputs, args, train_set, test_set)
            except Exception as e:  # a failed config is recorded and the grid goes on
                rec["error"] = f"{type(e).__name__}: {e}"[:500]
                print(f"{key_of(rec)}: {rec['error']}", file=sys.stderr)
            rec["threads"], rec["host"] = torch.get_num_threads(), platform.node()
            append_result(path, rec)
            done[key_of(rec)] = rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--heuristics", nargs="+", default=HEURISTICS, choices=HEURISTICS)
    p.add_argument("--amounts", nargs="+", type=float, default=AMOUNTS)
    p.add_argument("--stage", default="all", choices=("train", "grid", "report", "all"))
    p.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs")
    p.add_argument("--finetune-epochs", type=int, default=0)
    p.add_argument(
        "--check",
        default="auto",
        choices=("all", "auto", "none"),
        help="auto: masked-vs-export predictions for every resnet18 config and "
        "l1 at amount 0.3 of the others",
    )
    p.add_argument("--data", type=Path, default=None, help="Fashion-MNIST folder")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--test-limit", type=int, default=None, help="first N test images only")
    p.add_argument("--train-limit", type=int, default=TRAIN_IMAGES, help="first N training images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache/chanprune/fmnist")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set = FashionMNIST(args.data, "train", args.size)
    test_set = FashionMNIST(args.data, "test", args.size)
    if args.train_limit:
        train_set = torch.utils.data.Subset(train_set, range(args.train_limit))
    if args.test_limit:
        test_set = torch.utils.data.Subset(test_set, range(args.test_limit))
    if args.stage in ("train", "all", "grid"):
        for name in args.models:
            trained_model(name, args, train_set, test_set)
    if args.stage in ("grid", "all"):
        run_grid(args, train_set, test_set)
    if args.stage in ("report", "all"):
        from accuracy_report import write_report

        write_report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
