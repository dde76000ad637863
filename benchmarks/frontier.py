"""The frontier study (issue 26, item 4): top-1 against measured latency of pruned models.

    python benchmarks/frontier.py --stage train                      # train the base models
    python benchmarks/frontier.py --stage train --models resnet18 --threads 2
    python benchmarks/frontier.py --stage report                     # rewrite frontier_base.md

Stage ``train``: the base models, torchvision resnet18, mobilenet_v2, efficientnet_b0 and
densenet121 (random init, num_classes=10), trained as a practitioner would before pruning, each
meant to reach >= 91% top-1 on the 10k Fashion-MNIST test images: all 60k training images at
``--size`` (28x28 padded with the background, grey repeated to RGB: unmodified torchvision
models), random shifts within the padding and horizontal flips, AdamW with a one-cycle schedule
over the epochs of ``EPOCHS``, batch 128, seed 0. After every epoch the test top-1 is measured
and a checkpoint (model, optimizer, scheduler, random state, epoch, history) replaces the last
one in ``--cache`` (default ~/.cache/chanprune/frontier), so a killed run resumes at the next
epoch; a finished model is also saved as safetensors weights, which :func:`base_model` loads.
The table of epochs, top-1 per epoch, wall seconds per epoch, commands and machines is
benchmarks/results/frontier_base.md (and .json), rewritten after every epoch.

Stages ``masks`` and ``ort`` (quiet machine: they measure), ``eval``, ``amounts`` and
``report``: see ``frontier_grid.py`` and ``frontier_report.py``; the report is
benchmarks/results/frontier.md.

Not done yet (issue 26): densenet121 trained and in the grid; efficientnet_b0 and mobilenet_v2
at >= 91% (more epochs); fine-tuning at more of the deciding targets (``--stage eval
--finetune T``); the masks aimed at ORT (``--stage masks --backend ort``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import Dataset

from chanprune.errors import InputError
from chanprune.evaluation.accuracy import evaluate
from chanprune.evaluation.data import FashionMNIST
from chanprune.evaluation.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import frontier_grid as grid
import frontier_report

MODELS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121"]
# Epochs of each model's one-cycle schedule, chosen so that >= 91% is likely: with the plain
# `train`, resnet18 reached 91.2% after 3 epochs and mobilenet_v2 88.3% (32x32, issue 26);
# shifts and flips slow the first epochs down, and the compact models learn slowest.
EPOCHS = {"resnet18": 6, "mobilenet_v2": 10, "efficientnet_b0": 15, "densenet121": 6}
TARGET_TOP1 = 91.0
LR, BATCH, WEIGHT_DECAY, SEED = 3e-3, 128, 5e-4, 0
SHIFT = 2  # pixels a training image moves at most, each way, inside its padding
HERE = Path(__file__).resolve().parent


def build(name: str) -> torch.nn.Module:
    """torchvision's ``name`` with random weights and 10 classes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None, num_classes=10)


class Augmented(Dataset):
    """``base``'s (C, H, W) images shifted by up to ``shift`` pixels each way (the uncovered
    border filled with ``fill``) and flipped left-right with probability 1/2. The draws use the
    global torch generator, which :func:`train` seeds and checkpoints, so a resumed run sees
    the same images as an uninterrupted one."""

    def __init__(self, base: Dataset, shift: int = SHIFT, fill: float = 0.0, flip: bool = True):
        if shift < 0:
            raise InputError(f"shift must be >= 0 pixels, got {shift}")
        self.base, self.shift, self.fill, self.flip = base, shift, fill, flip

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        x, y = self.base[i]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        s = self.shift
        if s:
            h, w = x.shape[-2:]
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            x = torch.nn.functional.pad(x, (s, s, s, s), value=self.fill)[
                ..., dy : dy + h, dx : dx + w
            ]
        return x, y


def background(ds: FashionMNIST) -> float:
    """The normalised value of a black pixel: what :class:`FashionMNIST` pads with."""
    return float(ds.transform(torch.zeros(28, 28, dtype=torch.uint8))[0, 0, 0])


def stem(name: str, size: int, epochs: int, seed: int = SEED) -> str:
    """A base model's file name in the cache: everything that changes its weights."""
    return f"{name}-{size}px-e{epochs}-s{seed}-b{BATCH}-lr{LR:g}-shift{SHIFT}"


def machine(threads: int) -> dict[str, Any]:
    """Where a run ran: host, processor, cores, torch, intra-op threads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (plain tensors and numbers: loaded with weights_only)."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_checkpoint(path: Path, ck: dict[str, Any]) -> None:
    """Write ``ck`` next to ``path`` and rename it over: a kill mid-write keeps the last one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)


class _Stop(Exception):
    """Raised after a checkpoint to end a run early (``stop_after``)."""


def fit(
    model: torch.nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    epochs: int,
    path: Path,
    *,
    lr: float = LR,
    batch_size: int = BATCH,
    seed: int = SEED,
    run: dict[str, Any] | None = None,
    stop_after: int | None = None,
    after_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs, checkpointing to ``path`` after each; resume from
    ``path`` if it holds a checkpoint (a finished one only loads its weights). Returns the
    checkpoint: ``model``, ``train`` (the state :func:`train` resumes from), ``history`` (one
    entry per epoch: loss, test top-1, wall seconds of training), ``runs`` (``run`` of each
    start, with the epoch it started from) and ``config``. ``stop_after`` ends the call after
    that epoch as a kill would; ``after_epoch(ck)`` runs after each checkpoint."""
    config = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    ck = load_checkpoint(path)
    if ck is None:
        ck = {"model": None, "train": None, "history": [], "runs": [], "config": config}
    elif ck["config"] != config:
        raise InputError(
            f"checkpoint {path} was trained with {ck['config']}, not {config}; "
            "delete it or pass another --cache"
        )
    else:
        model.load_state_dict(ck["model"])
    done = ck["train"]["epoch"] if ck["train"] is not None else 0
    if done >= epochs:
        return ck
    ck["runs"].append({**(run or {}), "from_epoch": done})
    mark = time.perf_counter()

    def on_epoch(epoch: int, loss: float, state: dict[str, Any]) -> None:
        nonlocal mark
        seconds = time.perf_counter() - mark
        top1 = evaluate(model, test_set, batch_size=500).top1
        entry = {"epoch": epoch, "loss": loss, "top1": top1, "seconds": round(seconds, 1)}
        ck["history"].append(entry)
        ck["model"], ck["train"] = model.state_dict(), state
        save_checkpoint(path, ck)
        print(
            f"{desc} epoch {epoch}/{epochs}: loss {loss:.4f}, test top-1 {top1:.2f}%, "
            f"{seconds:.0f} s wall",
            flush=True,
        )
        if after_epoch is not None:
            after_epoch(ck)
        if stop_after is not None and epoch >= stop_after:
            raise _Stop
        mark = time.perf_counter()

    with contextlib.suppress(_Stop):  # the checkpoint is written: stop as a kill would
        train(
            model,
            train_set,
            epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=WEIGHT_DECAY,
            seed=seed,
            progress=progress,
            desc=desc,
            on_epoch=on_epoch,
            resume=ck["train"],
        )
    return ck


def weights_path(cache: Path, name: str, size: int, epochs: int | None = None) -> Path:
    return cache / f"{stem(name, size, epochs or EPOCHS[name])}.safetensors"


def base_model(name: str, cache: Path, size: int = 32, epochs: int | None = None):
    """The finished base model ``name`` (eval mode), from its safetensors weights."""
    from safetensors.torch import load_file

    path = weights_path(cache, name, size, epochs)
    if not path.exists():
        raise InputError(
            f"no trained {name} at {path}; run benchmarks/frontier.py --stage train "
            f"--models {name} first"
        )
    model = build(name)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def train_base(name: str, args, train_set: Dataset, test_set: Dataset) -> dict[str, Any]:
    """Train (or resume, or load) base model ``name``; save its weights once finished."""
    from safetensors.torch import save_file

    epochs = args.epochs or EPOCHS[name]
    path = args.cache / f"{stem(name, args.size, epochs)}.pt"
    torch.manual_seed(SEED)
    model = build(name)
    run = {"command": args.command, "machine": machine(args.threads)}
    print(f"{name}: {epochs} epochs, checkpoint {path}", flush=True)
    ck = fit(
        model,
        train_set,
        test_set,
        epochs,
        path,
        run=run,
        desc=name,
        after_epoch=lambda _ck: write_report(args.out, args.cache, args.size),
    )
    out = weights_path(args.cache, name, args.size, epochs)
    if ck["train"]["epoch"] >= epochs and not out.exists():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    write_report(args.out, args.cache, args.size)
    return ck


def records(cache: Path, size: int) -> list[dict[str, Any]]:
    """One record per base model with a checkpoint in ``cache`` (its table epochs, or any)."""
    out = []
    for name in MODELS:
        paths = sorted(cache.glob(f"{name}-{size}px-e*-s{SEED}-*.pt"))
        table = [p for p in paths if p.name == f"{stem(name, size, EPOCHS[name])}.pt"]
        for path in table or paths[-1:]:
            ck = load_checkpoint(path)
            hist = ck["history"]
            top1 = [h["top1"] for h in hist]
            seconds = [h["seconds"] for h in hist]
            out.append(
                {
                    "model": name,
                    "checkpoint": str(path),
                    "epochs": ck["config"]["epochs"],
                    "epochs_done": len(hist),
                    "top1": top1,
                    "loss": [h["loss"] for h in hist],
                    "seconds": seconds,
                    "final_top1": top1[-1] if top1 else None,
                    "reached_target": bool(top1) and top1[-1] >= TARGET_TOP1,
                    "config": ck["config"],
                    "runs": ck["runs"],
                }
            )
    return out


def write_report(out: Path, cache: Path, size: int) -> None:
    """frontier_base.md and .json from the checkpoints in ``cache``."""
    recs = records(cache, size)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier_base.json").write_text(json.dumps(recs, indent=1) + "\n")
    lines = [
        "# Frontier study: the base models",
        "",
        "Written by `benchmarks/frontier.py --stage train` after every epoch. **Times are wall "
        "time on a shared machine (other jobs running, training niced): not a benchmark.** "
        f"Each model: torchvision, random init, 10 classes, all 60k Fashion-MNIST training "
        f"images at {size}x{size} (28x28 padded, grey repeated to RGB), shifts of up to "
        f"{SHIFT} px and horizontal flips, AdamW (lr {LR:g}, weight decay {WEIGHT_DECAY:g}) "
        f"with a one-cycle schedule, batch {BATCH}, seed {SEED}. Top-1 on the 10k test images "
        f"after every epoch; the target is >= {TARGET_TOP1:g}%.",
        "",
        "| model | epochs done / scheduled | final top-1 | >= target | wall s per epoch "
        "(median) | wall s in all |",
        "|---|---|---|---|---|---|",
    ]
    for r in recs:
        final = f"{r['final_top1']:.2f}" if r["final_top1"] is not None else "-"
        med = f"{statistics.median(r['seconds']):.0f}" if r["seconds"] else "-"
        done = r["epochs_done"] >= r["epochs"]
        reached = "yes" if r["reached_target"] else ("no" if done else "(running)")
        lines.append(
            f"| {r['model']} | {r['epochs_done']} / {r['epochs']} | {final} | {reached} | "
            f"{med} | {sum(r['seconds']):.0f} |"
        )
    for r in recs:
        lines += ["", f"## {r['model']}", ""]
        lines.append("| epoch | " + " | ".join(str(i + 1) for i in range(len(r["top1"]))) + " |")
        lines.append("|---|" + "---|" * len(r["top1"]))
        lines.append("| test top-1 (%) | " + " | ".join(f"{t:.2f}" for t in r["top1"]) + " |")
        lines.append("| train loss | " + " | ".join(f"{v:.3f}" for v in r["loss"]) + " |")
        lines.append("| wall s | " + " | ".join(f"{s:.0f}" for s in r["seconds"]) + " |")
        lines.append("")
        for run in r["runs"]:
            m = run.get("machine", {})
            lines.append(
                f"- from epoch {run['from_epoch']}: `{run.get('command', '?')}` on "
                f"{m.get('host', '?')} ({m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                f"{m.get('threads', '?')} thread(s), torch {m.get('torch', '?')})"
            )
    tmp = out / "frontier_base.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "frontier_base.md")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--stage", default="train", choices=("train", "masks", "eval", "amounts", "ort", "report")
    )
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--epochs", type=int, default=None, help="override the EPOCHS table (trials)")
    p.add_argument("--size", type=int, default=32, help="input size (28x28 padded)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--data", type=Path, default=None, help="Fashion-MNIST folder")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache/chanprune/frontier")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument(
        "--contenders", nargs="+", default=list(grid.CONTENDERS), choices=grid.CONTENDERS
    )
    p.add_argument("--heuristics", nargs="+", default=["l1"], choices=(*grid.HEURISTICS, "taylor"))
    p.add_argument("--targets", nargs="+", type=float, default=list(grid.TARGETS))
    p.add_argument(
        "--redo-missed", action="store_true", help="masks: again where the target was missed"
    )
    p.add_argument("--redo", action="store_true", help="masks: every selected config again")
    p.add_argument(
        "--backend",
        default="eager",
        choices=("eager", "ort"),
        help="masks: where the latency targets are measured (ort: configs of their own)",
    )
    p.add_argument(
        "--mask-seeds",
        nargs="+",
        type=int,
        default=[0],
        help="masks: Taylor calibration samples, one mask each (weight heuristics: seed 0 only)",
    )
    p.add_argument(
        "--finetune",
        nargs="*",
        type=float,
        default=[],
        metavar="TARGET",
        help="eval: also fine-tune 1 epoch per seed at these targets (every contender, "
        "the --heuristics given)",
    )
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {args.epochs}")
    args.command = shlex.join(["python", "benchmarks/frontier.py", *(argv or sys.argv[1:])])
    torch.set_num_threads(args.threads)
    if args.stage == "report":
        write_report(args.out, args.cache, args.size)
        frontier_report.write(args.out, args.models)
        return 0
    load = lambda name: base_model(name, args.cache, args.size)  # noqa: E731
    plain = FashionMNIST(args.data, "train", args.size)
    if args.stage == "masks":
        grid.masks_stage(
            args.models,
            load,
            args.cache,
            args.out,
            args.contenders,
            args.heuristics,
            args.targets,
            calibration_set=plain,
            redo_missed=args.redo_missed,
            redo=args.redo,
            mask_seeds=args.mask_seeds,
            backend=args.backend,
        )
        return 0
    if args.stage == "ort":
        keys = frontier_report.deciding_keys(args.out, args.models)
        grid.ort_stage(args.models, load, args.cache, args.out, keys=keys)
        return 0
    train_set = Augmented(plain, SHIFT, fill=background(plain))
    test_set = FashionMNIST(args.data, "test", args.size)
    if args.stage == "amounts":
        grid.amounts_stage(args.models, load, args.out, plain, test_set, args.size)
        return 0
    if args.stage == "eval":
        tune = {
            (m, c, h, t)
            for m in args.models
            for c in args.contenders
            for h in args.heuristics
            for t in args.finetune
        }
        grid.eval_stage(
            load,
            args.cache,
            args.out,
            train_set,
            plain,
            test_set,
            args.size,
            tune,
            args.models,
            args.contenders,
        )
        return 0
    for name in args.models:
        train_base(name, args, train_set, test_set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
