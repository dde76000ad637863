"""``chanprune prune``: mask a model, export it physically pruned, measure it, save it."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..api import METHODS, export
from ..deps import require
from ..errors import InputError
from ..evaluation.stats import count_macs, count_params
from ..evaluation.timing import measure_latency
from ..latency.model import BACKENDS
from ..masking.heuristics import HEURISTICS
from ..masking.masks import mask, masking_kind, validate
from ..masking.targets import DEFAULT_AMOUNT, TOLERANCE, TargetMasks, resolve
from ..paths import check_writable
from ..plan import plan
from ..progress import Steps
from ..rewrite.rewriter import GROUP_QUANTUM
from .source import load_source


@contextlib.contextmanager
def own_warnings_only() -> Iterator[None]:
    """Hide the warnings of the libraries tracing runs through (torch.export's are many and not
    the user's to act on) but print chanprune's own, such as which ops are barriers and keep
    their channels, once each on stderr: nothing stays unpruned without a word."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            said = set()
            for w in caught:
                text = str(w.message)
                if text.startswith("chanprune") and text not in said:
                    said.add(text)
                    print(f"warning: {text}", file=sys.stderr)


def add_mask_arguments(p: argparse.ArgumentParser, side: str) -> None:
    """How channels are chosen: the options every command that masks shares."""
    p.add_argument("--heuristic", default="l1", choices=HEURISTICS)
    p.add_argument("--scope", default="local", choices=("local", "global"))
    p.add_argument(
        "--side",
        default=side,
        choices=("output", "input"),
        help="output: producers lose rows; input: consumers lose columns (the paper's main "
        "case, where consumers of one tensor disagree)",
    )


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def target_fraction(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        t = 0.0
    if not 0.0 < t <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return t


def add_pruning_arguments(
    p: argparse.ArgumentParser, amount: float | None, side: str, targets: bool = False
) -> None:
    """The masking and export options every pruning subcommand shares (defaults differ).
    ``targets``: also --target-macs and --target-params, exclusive with --amount (whose
    default ``None`` then means :data:`~chanprune.masking.targets.DEFAULT_AMOUNT`)."""
    how_much = p.add_mutually_exclusive_group() if targets else p
    how_much.add_argument(
        "--amount",
        type=float,
        default=amount,
        help="share of channels to prune"
        + (f" (default {DEFAULT_AMOUNT} unless a target is given)" if amount is None else ""),
    )
    if targets:
        for what, unit in (("macs", "MACs at the example input"), ("params", "parameters")):
            how_much.add_argument(
                f"--target-{what}",
                type=target_fraction,
                default=None,
                metavar="T",
                help=f"choose the amount so that the export keeps T of the unpruned model's "
                f"{unit} (within {TOLERANCE:g})",
            )
        how_much.add_argument(
            "--target-latency",
            type=target_fraction,
            default=None,
            metavar="T",
            help="choose the masks so that the export runs in T of the unpruned model's time "
            "on --backend, measured (within 5%%; time it on a quiet machine)",
        )
        p.add_argument(
            "--backend",
            choices=tuple(BACKENDS),
            default="eager",
            help="where --target-latency is predicted and measured: eager PyTorch on this CPU, "
            "ONNX Runtime, or CUDA",
        )
    add_mask_arguments(p, side)
    if not targets:
        p.add_argument("--constrained", action="store_true", help="prune coupled layers together")
    else:  # mask()'s constrained=None: see chanprune.masking.masks.masking_kind
        kind = p.add_mutually_exclusive_group()
        for flag, const, text in (
            ("--constrained", True, "prune coupled layers together"),
            ("--unconstrained", False, "every layer keeps its own channels"),
            (
                "--mixed",
                "mixed",
                "rank layers' own channels and whole segment channels by score per MAC saved "
                "(parameter with --target-params, second with --target-latency; --amount is "
                "then a share of the MACs). "
                "Default with a target: mixed with --heuristic taylor, constrained with any "
                "other; unconstrained without a target",
            ),
        ):
            kind.add_argument(
                flag,
                dest="constrained",
                action="store_const",
                const=const,
                default=None,
                help=text,
            )
    p.add_argument(
        "--method",
        default=None,
        choices=METHODS,
        help="export method (default: reorder; with --target-latency on --backend ort, dense, "
        "the export the target was measured with)",
    )
    p.add_argument(
        "--group-quantum",
        type=positive_int,
        default=GROUP_QUANTUM,
        metavar="N",
        help="grouped convs keep a multiple of N channels a group, depthwise convs a multiple "
        "of N channels (faster kernels); 1: fewest parameters",
    )
    p.add_argument(
        "--width-quantum",
        type=positive_int,
        default=None,
        metavar="N",
        help="dense layers with a private width round it up to a multiple of N where that adds "
        "at most a quarter of its channels (default: the CPU's vector width; 1: off)",
    )
    p.add_argument(
        "--round-to",
        type=positive_int,
        default=1,
        metavar="N",
        help="masking: move each layer's cut (each family's, constrained) so that it keeps a "
        "multiple of N channels, the nearest (--scope local, not --mixed; 1: off)",
    )


def quanta(args: argparse.Namespace) -> dict[str, int | None]:
    """The export's rounding arguments from the command line."""
    return {"group_quantum": args.group_quantum, "width_quantum": args.width_quantum}


def add_data_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """Which images to read (``what`` says what for)."""
    p.add_argument(
        "--dataset",
        default="fashion-mnist",
        choices=("fashion-mnist", "imagefolder"),
        help=f"data set of {what}",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="its folder (fashion-mnist: the IDX files, default the Debian package's; "
        "imagefolder: the tree's root, train/ used if present)",
    )


def add_calibrate_argument(p: argparse.ArgumentParser, batch: str) -> None:
    p.add_argument(
        "--calibrate",
        type=positive_int,
        default=None,
        metavar="N",
        help="recompute BatchNorm statistics of the masked model on N batches of training "
        f"images (drawn at random, seeded; batches of {batch}) before exporting",
    )


def calibration_set(args: argparse.Namespace, x: torch.Tensor, size: int):
    """The training images ``--calibrate`` draws from, at ``size``; refused (before any work)
    when they do not have the example input's shape."""
    from ..evaluation.data import load_dataset

    train_set = load_dataset(args.dataset, "train", args.data, size)
    shape = tuple(train_set[0][0].shape)
    if shape != tuple(x.shape[1:]):
        raise InputError(
            f"--calibrate: {args.dataset} images are {shape}, the model's input is "
            f"{tuple(x.shape[1:])}; pick the input size to match (--input-size, --size)"
        )
    return train_set


def calibrate_from_args(
    model: torch.nn.Module, train_set, batch_size: int, args: argparse.Namespace
) -> int:
    """``chanprune.recalibrate`` on ``args.calibrate`` random batches of ``train_set`` (seeded
    by ``--seed``); the number of images used (0: the model has no BatchNorm to recalibrate)."""
    from ..evaluation.recovery import recalibrate, sample_batches

    batches = list(sample_batches(train_set, args.calibrate, batch_size, args.seed))
    return sum(len(b) for b in batches) if recalibrate(model, batches) else 0


def mask_from_args(
    model: torch.nn.Module,
    x: torch.Tensor,
    args: argparse.Namespace,
    calibration: list[torch.Tensor] | None = None,
) -> dict:
    """``chanprune.mask`` with the options of :func:`add_pruning_arguments` (``calibration``:
    the batches HRank or Taylor score on)."""
    return mask(
        model,
        x,
        calibration=calibration,
        amount=args.amount,
        heuristic=args.heuristic,
        scope=args.scope,
        side=args.side,
        constrained=args.constrained,
        target_macs=getattr(args, "target_macs", None),
        target_params=getattr(args, "target_params", None),
        target_latency=getattr(args, "target_latency", None),
        backend=getattr(args, "backend", "eager"),
        round_to=args.round_to,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "prune",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="prune a model and export it physically smaller",
        description="Mask channels, export a smaller model whose outputs equal the masked "
        "model's, print a before/after summary and optionally save it (.pt2, .json spec + "
        ".safetensors, .onnx).",
    )
    add_model_arguments(pr)
    add_pruning_arguments(pr, amount=None, side="output", targets=True)
    pr.add_argument(
        "--out",
        type=Path,
        default=None,
        help="save the pruned model: FILE.pt2 (torch.export program) or FILE.json "
        "(pruning spec, weights in FILE.safetensors; chanprune.load_pruned reads it)",
    )
    pr.add_argument("--onnx", type=Path, default=None, help="also export FILE.onnx (checked)")
    pr.add_argument(
        "--runs", type=int, default=10, help="latency rounds (interleaved, median); 0: skip"
    )
    pr.add_argument("--plan", action="store_true", help="also print the segments and their copies")
    add_calibrate_argument(pr, "--calibrate-batch")
    pr.add_argument(
        "--calibrate-batch", type=positive_int, default=32, metavar="B", help="calibration batch"
    )
    add_data_arguments(pr, "the calibration images (--calibrate), at the model's input size")
    pr.set_defaults(func=prune_command)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL and input options shared by the commands that take a model."""
    p.add_argument(
        "model",
        help="a torchvision or timm model name (e.g. resnet50), or a saved model: "
        "FILE.pt2 or FILE.json (a chanprune pruning spec)",
    )
    p.add_argument(
        "--weights", type=Path, default=None, help="FILE.safetensors to load into a named model"
    )
    p.add_argument("--input-size", type=int, default=None, help="image side (default: model's)")
    p.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        default=None,
        metavar="DIM",
        help="one sample's shape without batch, e.g. 3 160 160 (overrides --input-size)",
    )
    p.add_argument(
        "--batch", type=int, default=1, help="example/calibration batch size (HRank scores it)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of random weights (zoo names) and inputs"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def example_input(args: argparse.Namespace, shape: tuple[int, ...]) -> torch.Tensor:
    if args.input_shape:
        shape = tuple(args.input_shape)
    elif args.input_size:
        shape = (*shape[:-2], args.input_size, args.input_size)
    gen = torch.Generator().manual_seed(args.seed)
    return torch.randn((max(args.batch, 1), *shape), generator=gen)


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail in seconds, before the minutes of work, on paths or missing packages."""
    if args.out is not None:
        check_writable(args.out, "--out", (".pt2", ".json"))
        if args.out.suffix.lower() == ".json":
            require("safetensors", "--out FILE.json (pruning spec + safetensors)")
    if args.onnx is not None:
        check_writable(args.onnx, "--onnx", (".onnx",))
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "--onnx")


def prune_command(args: argparse.Namespace) -> int:
    amount, _ = resolve(
        args.amount, args.target_macs, args.target_params, args.target_latency, args.backend
    )
    validate(amount, args.heuristic, args.scope, args.side)
    _check_outputs(args)
    calibrating = args.calibrate is not None
    if args.heuristic == "taylor" and not calibrating:
        raise InputError(
            "--heuristic taylor scores channels by gradients on real images: pass --calibrate N "
            "(with --dataset/--data), whose batches it scores on as well as recalibrates with"
        )
    n_steps = 4 + calibrating + (args.runs > 0) + (args.out is not None) + (args.onnx is not None)
    steps = Steps(f"prune {Path(args.model).name}", n_steps, enabled=not args.quiet)
    with steps.step("load model"):
        torch.manual_seed(args.seed)  # zoo models are random init: same seed, same model
        src = load_source(args.model, args.weights)
        model = src.model.eval()
        x = example_input(args, src.shape)
        params0, macs0 = count_params(model), count_macs(model, x)
        if calibrating:  # before the minutes of masking: missing or unfit data fails here
            train_set = calibration_set(args, x, x.shape[-1])
    calibrated = 0
    with own_warnings_only():
        with steps.step("mask (capture, score)"):
            scored = None
            if args.heuristic == "taylor":
                from ..evaluation.recovery import sample_batches

                scored = list(
                    sample_batches(train_set, args.calibrate, args.calibrate_batch, args.seed)
                )
            masks = mask_from_args(model, x, args, scored)
        args.method = export_method(args, masks)
        if calibrating:
            with steps.step("recalibrate BatchNorm"):
                calibrated = calibrate_from_args(model, train_set, args.calibrate_batch, args)
        with steps.step(f"export ({args.method}, verify)"):
            pruned = export(model, x, method=args.method, **quanta(args))
        with steps.step("plan copies"):
            p = plan(model, x, method=args.method, **quanta(args))
    latency = None
    if args.runs > 0:
        with steps.step("latency"):
            bar = steps.rounds("interleaved rounds", args.runs)
            latency = measure_latency(
                {"before": model, "after": pruned}, x, runs=args.runs, tick=bar.update
            )
            bar.close()
    saved = []
    if args.out is not None:
        with steps.step(f"save {args.out.name}"):
            saved += _save(pruned, model, x, args.out, src.name)
    if args.onnx is not None:
        with steps.step(f"ONNX {args.onnx.name}"):
            from ..deploy.onnx import to_onnx

            saved.append(to_onnx(pruned, x, args.onnx))
    steps.close()
    params1, macs1 = count_params(pruned), count_macs(pruned, x)
    recal = f"BatchNorm recalibrated on {calibrated} images; " if calibrated else ""
    print(
        f"{src.label}: input {tuple(x.shape)}, {sum(map(len, masks.values()))} channels masked in "
        f"{len(masks)} layers ({_how_much(masks, amount)}, {args.heuristic}, {args.scope}, "
        f"{args.side} side{_kind_word(args.constrained, masks, args.heuristic)}); "
        f"{recal}"
        f"exported with method={args.method}, outputs verified"
    )
    with_copies = [s for s in p.segments if s.gathers]
    rows = [
        ("params", _fmt(params0), _fmt(params1), f"{params1 / params0:.3f}"),
        ("MACs", _fmt(macs0), _fmt(macs1), f"{macs1 / max(macs0, 1):.3f}"),
    ]
    if latency is not None:
        b, a = latency["before"], latency["after"]
        rows.append(("latency ms", f"{b:.2f}", f"{a:.2f}", f"{a / b:.3f}"))
    rows += [
        ("copied bytes", "0", _fmt(p.copied_bytes) + "B", "per sample"),
        ("copies", "0", str(sum(s.gathers for s in p.segments)), "gathers + pads"),
        (
            "segs w/ copies",
            "0",
            str(len(with_copies)),
            f"of {sum(1 for s in p.segments if s.consumers)}",
        ),
    ]
    print(f"{'':16}{'before':>10}{'after':>10}  ratio")
    for name, before, after, ratio in rows:
        print(f"{name:16}{before:>10}{after:>10}  {ratio}")
    if latency is not None:
        print(f"(latency: batch {x.shape[0]}, median of {args.runs} interleaved rounds, CPU)")
    if args.plan:
        print(p.summary())
    for path in saved:
        print(f"wrote {path}")
    return 0


def export_method(args: argparse.Namespace, masks: dict) -> str:
    """``--method``, else the method a target was measured with (:attr:`TargetMasks.method`),
    else reorder."""
    if args.method is not None:
        return args.method
    return masks.method if isinstance(masks, TargetMasks) else "reorder"


def _kind_word(constrained: bool | str | None, masks: dict, heuristic: str = "l1") -> str:
    """How the masks were chosen, for the summary line (``None``: mask()'s default)."""
    if constrained is None:
        target = masks.target if isinstance(masks, TargetMasks) else None
        constrained = masking_kind(None, target, heuristic)
    return {True: ", constrained", "mixed": ", mixed"}.get(constrained, "")


def _how_much(masks: dict, amount: float) -> str:
    """The amount masked, and the target that chose it if any."""
    if isinstance(masks, TargetMasks):
        t = masks.target
        if masks.measured is not None:
            ci = masks.measured.interval
            within = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
            return (
                f"latency target {t.value:g} on {t.backend}: amount {masks.amount:.3f} measured "
                f"{masks.ratio:.3f}{within} (the latency model predicted {masks.predicted:.3f})"
            )
        return f"{t.what} target {t.value:g}: amount {masks.amount:.3f} gave {masks.ratio:.3f}"
    return f"amount {amount}"


def _save(pruned, model, x, out: Path, name: str | None) -> list[Path]:
    if out.suffix.lower() == ".json":
        from ..deploy.saving import save_pruned

        return list(save_pruned(pruned, model, x, out, model_name=name))
    from ..deploy.saving import save_program

    save_program(pruned, x, out)
    return [out]
