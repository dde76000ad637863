"""``chanprune prune``: mask a zoo model and export the physically pruned model."""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from ..api import export
from ..errors import ChanpruneError
from ..heuristics import HEURISTICS
from ..masking import mask
from ..models import load_model
from ..saving import save_program
from ..stats import count_macs, count_params


def add_parser(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("prune", help="mask a zoo model and export the physically pruned model")
    pr.add_argument("model", help="a torchvision or timm model name, e.g. resnet50")
    pr.add_argument("--amount", type=float, default=0.3, help="share of channels to prune")
    pr.add_argument("--heuristic", default="l1", choices=HEURISTICS)
    pr.add_argument("--scope", default="local", choices=("local", "global"))
    pr.add_argument("--side", default="output", choices=("output", "input"))
    pr.add_argument("--constrained", action="store_true", help="prune coupled layers together")
    pr.add_argument("--method", default="reorder", choices=("reorder", "baseline"))
    pr.add_argument("--input-size", type=int, default=None, help="image side (default: model's)")
    pr.add_argument("--batch", type=int, default=1, help="example batch size")
    pr.add_argument("--out", type=Path, default=None, help="write the pruned model (.pt2)")
    pr.set_defaults(func=prune_command)


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def prune_command(args: argparse.Namespace) -> int:
    if args.out is not None:
        if args.out.suffix != ".pt2":
            raise ChanpruneError(f"--out {args.out}: only .pt2 (torch.export) files are written")
        if not args.out.parent.exists():
            raise ChanpruneError(f"--out {args.out}: folder {args.out.parent} does not exist")
    model, (c, h, w) = load_model(args.model)
    if args.input_size:
        h = w = args.input_size
    x = torch.randn(args.batch, c, h, w)
    params0, macs0 = count_params(model), count_macs(model, x)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = mask(
            model,
            x,
            amount=args.amount,
            heuristic=args.heuristic,
            scope=args.scope,
            side=args.side,
            constrained=args.constrained,
        )
        t1 = time.perf_counter()
        pruned = export(model, x, method=args.method)
    t2 = time.perf_counter()
    params1, macs1 = count_params(pruned), count_macs(pruned, x)
    print(
        f"{args.model}: input {tuple(x.shape)}, {sum(map(len, masks.values()))} channels masked "
        f"in {len(masks)} layers ({t1 - t0:.1f} s), exported with method={args.method} "
        f"({t2 - t1:.1f} s, outputs verified)"
    )
    print(f"{'':8}{'params':>12}{'MACs':>12}")
    print(f"{'before':8}{_fmt(params0):>12}{_fmt(macs0):>12}")
    print(f"{'after':8}{_fmt(params1):>12}{_fmt(macs1):>12}")
    print(f"{'ratio':8}{params1 / params0:>12.3f}{macs1 / max(macs0, 1):>12.3f}")
    if args.out is not None:
        save_program(pruned, x, args.out)
        print(f"wrote {args.out}")
    return 0
