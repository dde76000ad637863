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
from .prune import add_mask_arguments, add_model_arguments, example_input, own_warnings_only
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
    rp.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    from ..report.collect import collect
    from ..report.html import render

    for a in args.amounts:
        validate(a, args.heuristic, args.scope, args.side)
    amounts = sorted(set(args.amounts))
    detail = args.amount if args.amount is not None else amounts[len(amounts) // 2]
    if detail not in amounts:
        raise InputError(f"--amount {detail} must be one of --amounts {amounts}")
    html_path = check_writable(args.html, "--html", (".html", ".htm"))
    require("matplotlib", "chanprune report")
    steps = Steps(f"report {Path(args.model).name}", 2 + 2 * len(amounts), not args.quiet)
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
    print(f"wrote {html_path}")
    return 0
