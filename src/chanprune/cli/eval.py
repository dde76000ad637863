"""``chanprune eval``: top-1 of a model before and after pruning, optionally recalibrated
(``--calibrate``) and fine-tuned (``--finetune-epochs``).

Runs on one process, or on several under ``torchrun`` (each rank evaluates a shard; counts are
summed; fine-tuning is data-parallel), e.g. on an ImageNet tree:
``torchrun --nproc_per_node 4 -m chanprune.cli eval resnet50 --checkpoint r50.pth
--dataset imagefolder --data /imagenet --size 224 --amount 0.3``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from ..api import export
from ..errors import InputError
from ..evaluation.accuracy import evaluate, init_from_env
from ..evaluation.data import load_dataset
from ..evaluation.recovery import finetune
from ..evaluation.stats import count_macs, count_params
from ..models import load_model
from .prune import (
    add_calibrate_argument,
    add_pruning_arguments,
    calibrate_from_args,
    export_method,
    mask_from_args,
    own_warnings_only,
    quanta,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="top-1 of a model before and after pruning (torchrun-aware)")
    ev.add_argument("model", help="a torchvision or timm model name, e.g. resnet18")
    ev.add_argument("--checkpoint", type=Path, default=None, help="state_dict file to load")
    ev.add_argument("--num-classes", type=int, default=None, help="build the model with N classes")
    ev.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "imagefolder"))
    ev.add_argument("--data", type=Path, default=None, help="dataset folder")
    ev.add_argument("--size", type=int, default=32, help="image side")
    ev.add_argument("--limit", type=int, default=None, help="first N evaluation images only")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument(
        "--seed", type=int, default=0, help="seed of the random init (same on every rank)"
    )
    add_pruning_arguments(ev, amount=0.0, side="input")
    add_calibrate_argument(ev, "--batch-size")
    ev.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="fine-tune the masked model N epochs in training mode (BatchNorm batch statistics, "
        "dropout; pruned channels held at zero), then export it again; data-parallel under "
        "torchrun (--batch-size is the global batch)",
    )
    ev.add_argument("--finetune-limit", type=int, default=None, help="first N training images")
    ev.add_argument("--finetune-lr", type=float, default=1e-3)
    ev.set_defaults(func=eval_command)


def build(
    name: str, num_classes: int | None, checkpoint: Path | None, seed: int = 0
) -> torch.nn.Module:
    """A zoo model, with ``num_classes`` outputs if given, and the checkpoint's weights.

    The random init is seeded just before the model is built, so every rank of a torchrun
    job (and a later run) builds the same weights when no checkpoint is given."""
    if num_classes is None:
        torch.manual_seed(seed)
        model, _ = load_model(name)
    else:
        load_model(name)  # validates the name with a helpful message
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import torchvision

                model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
            except ValueError:
                import timm

                model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise InputError(f"--checkpoint {checkpoint} does not exist")
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise InputError(f"--checkpoint {checkpoint} does not fit {name}: {e}") from e
    return model.eval()


def _subset(ds, limit: int | None):
    if limit is None or limit >= len(ds):
        return ds
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    return torch.utils.data.Subset(ds, range(limit))


def eval_command(args: argparse.Namespace) -> int:
    distributed = init_from_env()
    try:
        return _run(args, distributed)
    finally:
        if distributed:
            dist.destroy_process_group()


def _run(args: argparse.Namespace, distributed: bool) -> int:
    rank0 = not distributed or dist.get_rank() == 0
    say = print if rank0 else (lambda *a, **k: None)
    test = _subset(load_dataset(args.dataset, "test", args.data, args.size), args.limit)
    model = build(args.model, args.num_classes, args.checkpoint, args.seed)
    x = torch.stack([test[i][0] for i in range(min(8, len(test)))])
    kw = {"batch_size": args.batch_size, "progress": rank0}
    base = evaluate(model, test, desc="unpruned", **kw)
    procs = dist.get_world_size() if distributed else 1
    say(f"{args.model}: {base.total} {args.dataset} images, {procs} process(es)")
    say(
        f"unpruned  top-1 {base.top1:6.2f}  params {count_params(model):>11,}  "
        f"MACs {count_macs(model, x[:1]):>14,}"
    )
    if args.amount <= 0:
        return 0
    train_set = None
    taylor = args.heuristic == "taylor"
    if args.calibrate or args.finetune_epochs or taylor:  # before masking: data fails fast
        train_set = load_dataset(args.dataset, "train", args.data, args.size)
    scored = None
    if taylor:  # Taylor scores on training images, never on the test images
        from ..evaluation.recovery import sample_batches

        scored = list(sample_batches(train_set, args.calibrate or 20, 64, args.seed))
    t0 = time.perf_counter()
    with own_warnings_only():
        masks = mask_from_args(model, x, args, scored)
    args.method = export_method(args, masks)
    seconds = time.perf_counter() - t0
    if args.calibrate:
        before = evaluate(model, test, desc="masked, not recalibrated", **kw)
        n = calibrate_from_args(model, train_set, args.batch_size, args)
        say(f"masked    top-1 {before.top1:6.2f}  (before BatchNorm recalibration on {n} images)")
    t0 = time.perf_counter()
    with own_warnings_only():
        pruned = export(model, x, method=args.method, **quanta(args))
    seconds += time.perf_counter() - t0
    kind = "constrained" if args.constrained else "unconstrained"
    masked = evaluate(model, test, keep_predictions=True, desc="masked", **kw)
    got = evaluate(pruned, test, keep_predictions=True, desc="pruned", **kw)
    same = bool(torch.equal(masked.predictions, got.predictions))
    say(
        f"pruned    top-1 {got.top1:6.2f}  params {count_params(pruned):>11,}  "
        f"MACs {count_macs(pruned, x[:1]):>14,}  ({kind} {args.heuristic} {args.amount}, "
        f"{args.method} export in {seconds:.1f} s; masked model top-1 "
        f"{masked.top1:.2f}, predictions {'identical' if same else 'DIFFER'})"
    )
    if args.finetune_epochs:
        tune_set = _subset(train_set, args.finetune_limit)
        batch = max(min(args.batch_size, len(tune_set)) // procs, 1) * procs  # global batch
        with own_warnings_only():
            finetune(
                model,
                tune_set,
                args.finetune_epochs,
                x,
                masks,
                side=args.side,
                lr=args.finetune_lr,
                batch_size=batch,
                seed=args.seed,
                progress=rank0,
                desc="finetune",
            )
            tuned = export(model, x, method=args.method, **quanta(args))
        masked = evaluate(model, test, keep_predictions=True, desc="masked, finetuned", **kw)
        got = evaluate(tuned, test, keep_predictions=True, desc="finetuned", **kw)
        same = bool(torch.equal(masked.predictions, got.predictions))
        say(
            f"finetuned top-1 {got.top1:6.2f}  params {count_params(tuned):>11,}  "
            f"({args.finetune_epochs} epoch(s) on {len(tune_set)} images, batch {batch}, "
            f"{procs} process(es), training mode; masked model fine-tuned and exported again, "
            f"predictions {'identical' if same else 'DIFFER'})"
        )
    return 0
