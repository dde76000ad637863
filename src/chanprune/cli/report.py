"""``chanprune report``: an HTML page on what pruning does to a model, with plots."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from ..deps import require
from ..errors import InputError
from ..masking.masks import validate
from ..paths import check_writable
from ..progress import Steps
from .prune import (
    add_data_arguments,
    add_mask_arguments,
    add_model_arguments,
    calibration_set,
    example_input,
    own_warnings_only,
    positive_int,
    target_fraction,
)
from .source import load_source


def add_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser(
        "report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="HTML report: latency vs amount per method, kept channels, copies per segment",
        description="Prune MODEL at several amounts, time the unpruned model and the "
        "constrained, baseline, reorder and ideal exports side by side, and write a "
        "self-contained HTML page with PNG plots.",
    )
    add_model_arguments(rp)
    rp.add_argument("--html", type=Path, required=True, help="write the report to FILE.html")
    rp.add_argument(
        "--amounts", type=float, nargs="+", default=[0.1, 0.3, 0.5], help="pruning amounts"
    )
    rp.add_argument(
        "--amount",
        type=float,
        default=None,
        help="amount for the per-layer detail (default: the middle one of --amounts)",
    )
    add_mask_arguments(rp, side="input")
    rp.add_argument("--runs", type=int, default=5, help="latency rounds per amount (median)")
    rp.add_argument(
        "--targets",
        type=target_fraction,
        nargs="+",
        default=None,
        metavar="T",
        help="also draw top-1 against measured latency at these latency targets (fractions of "
        "the unpruned model's time): the default masks for a target (mixed, Taylor scores) and "
        "constrained masks of --heuristic, each recalibrated, on --dataset/--data images",
    )
    add_data_arguments(rp, "the top-1 view (--targets), at the model's input size")
    rp.add_argument(
        "--calibrate",
        type=positive_int,
        default=20,
        metavar="N",
        help="--targets: batches of training images that Taylor scores on and BatchNorm is "
        "recalibrated on",
    )
    rp.add_argument(
        "--calibrate-batch", type=positive_int, default=32, metavar="B", help="calibration batch"
    )
    rp.add_argument(
        "--limit",
        type=positive_int,
        default=2000,
        metavar="N",
        help="--targets: score on N evaluation images drawn at random (seeded by --seed)",
    )
    rp.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    from ..report.collect import collect
    from ..report.frontier import accuracy_view
    from ..report.html import render

    for a in args.amounts:
        validate(a, args.heuristic, args.scope, args.side)
    amounts = sorted(set(args.amounts))
    detail = args.amount if args.amount is not None else amounts[len(amounts) // 2]
    if detail not in amounts:
        raise InputError(f"--amount {detail} must be one of --amounts {amounts}")
    html_path = check_writable(args.html, "--html", (".html", ".htm"))
    if args.targets is None and args.data is not None:
        raise InputError(
            "--data gives the images of the top-1 view; pass --targets T [T ...] (latency "
            "targets) to draw it"
        )
    require("matplotlib", "chanprune report")
    views = 1 + 2 * len(args.targets) if args.targets else 0
    steps = Steps(f"report {Path(args.model).name}", 2 + 2 * len(amounts) + views, not args.quiet)
    with steps.step("load model"):
        torch.manual_seed(args.seed)
        src = load_source(args.model, args.weights)
        x = example_input(args, src.shape)

    @contextlib.contextmanager
    def step(label: str):
        with steps.step(label):
            yield

    with own_warnings_only():
        data = collect(
            src.model.eval(),
            x,
            src.label,
            amounts,
            detail,
            runs=args.runs,
            step=step,
            heuristic=args.heuristic,
            scope=args.scope,
            side=args.side,
        )
    if args.targets:
        with steps.step("load images"), own_warnings_only():
            calibration, test_set = _view_images(args, x)
        with own_warnings_only():
            data.accuracy = accuracy_view(
                src.model.eval(),
                x,
                sorted(set(args.targets), reverse=True),
                calibration,
                test_set,
                args.dataset,
                heuristic=args.heuristic,
                step=step,
            )
    with steps.step("render"):
        html_path.write_text(render(data), encoding="utf-8")
    steps.close()
    i = amounts.index(detail)
    lat = {m: v[i] for m, v in data.latency.items()}
    print(
        f"{src.label} at amount {detail}: "
        + ", ".join(f"{m} {ms:.2f} ms" for m, ms in lat.items())
        + f"; copies baseline {sum(s.gathers for s in data.plans['baseline'].segments)}"
        f" -> reorder {sum(s.gathers for s in data.plans['reorder'].segments)}"
    )
    if data.accuracy is not None:
        print(
            f"top-1 unpruned {data.accuracy.unpruned_top1:.2f}%; "
            + ", ".join(
                f"{p.contender} at {p.target:g}: "
                + ("unreachable" if p.top1 is None else f"{p.top1:.2f}% (ratio {p.ratio:.3f})")
                for p in data.accuracy.points
            )
        )
    print(f"wrote {html_path}")
    return 0


def _view_images(args: argparse.Namespace, x: torch.Tensor):
    """The calibration batches and the evaluation images of the top-1 view, at the example
    input's size (refused before any masking when the images do not fit the model)."""
    from ..evaluation.data import load_dataset
    from ..evaluation.recovery import sample_batches

    train_set = calibration_set(args, x, x.shape[-1])
    calibration = list(sample_batches(train_set, args.calibrate, args.calibrate_batch, args.seed))
    test_set = load_dataset(args.dataset, "test", args.data, x.shape[-1])
    if args.limit < len(test_set):
        gen = torch.Generator().manual_seed(args.seed)
        pick = torch.randperm(len(test_set), generator=gen)[: args.limit].tolist()
        test_set = torch.utils.data.Subset(test_set, pick)
    return calibration, test_set
