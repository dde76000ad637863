"""Depthwise convolutions: channel counts rounded up to a multiple of 8, or not; PyTorch and ORT.

    python benchmarks/studies/depthwise_quantum.py [--models mobilenet_v3_large] [--reps 15]

ONNX Runtime's CPU provider runs a convolution in its fast blocked (NCHWc) kernels only when the
channel counts are multiples of its block size; otherwise it falls back to a generic kernel,
which for a depthwise convolution is much slower. A pruned depthwise conv keeps whatever count
the masks leave, so the exporter rounds it up (``liveness.rounding.round_depthwise``,
``export``'s ``group_quantum``, default 8) by keeping a few zero or unread original channels.

These models have depthwise but no other grouped convolutions, so ``group_quantum`` 1 against 8
isolates the depthwise rounding. Per model and amount, from the same masked model (chanprune's
masks: input side, L2, unconstrained, local): the unpruned model and the reorder exports with
quantum 1 and 8, each in PyTorch and in ONNX Runtime (``chanprune.deploy``: CPU, same threads, no
spinning), batch 1 and 8. Interleaved rounds (order shuffled per round) after a warm-up; paired
ratios with distribution-free 95% intervals (``evaluation.timing.paired_ratio``). Also, from
ORT's optimised graph, how many convolutions run blocked. Writes ``<out>/depthwise_quantum.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from group_quantum import _ratio, _rounds  # same interleaved rounds and paired ratios

import chanprune
from chanprune.deploy import ort_session, to_onnx

RESULTS = Path(__file__).parent / "results"
MODELS = ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_v2_s", "convnext_tiny"]
KINDS = ("unpruned", "q1", "q8")


def _exports(name: str, amount: float, x: torch.Tensor) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    unpruned = copy.deepcopy(model)
    chanprune.mask(model, x, amount=amount, heuristic="l2", side="input")
    return {
        "unpruned": unpruned,
        "q1": chanprune.export(model, x, group_quantum=1),
        "q8": chanprune.export(model, x, group_quantum=8),
    }


def _depthwise_widths(module: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """Channel counts of the depthwise convolutions ``module`` runs on ``x``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    widths: list[int] = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default):
                w, at = args[1], 8 if func is torch.ops.aten.convolution.default else 6
                groups = args[at] if len(args) > at else (kwargs or {}).get("groups", 1)
                if groups > 1 and w.shape[1] == 1 and w.shape[0] == groups:
                    widths.append(int(groups))
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), Spy():
        module(x)
    return widths


def _ort(module: torch.nn.Module, x1: torch.Tensor, tmp: Path, tag: str):
    """An ORT session of ``module``, its input name, and how many convs its optimised graph
    runs blocked (NCHWc) and not."""
    import onnx
    import onnxruntime as ort

    path = to_onnx(module, (x1,), tmp / f"{tag}.onnx")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(tmp / f"{tag}.opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    nodes = onnx.load(opts.optimized_model_filepath).graph.node
    convs = [n for n in nodes if n.op_type in ("Conv", "FusedConv")]
    blocked = sum(n.domain == "com.microsoft.nchwc" for n in convs)
    session = ort_session(path)
    return session, session.get_inputs()[0].name, (blocked, len(convs) - blocked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--amounts", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import onnxruntime

    started = time.time()
    x1 = torch.randn(1, 3, 224, 224)
    sizes, lines = [], []
    for name in args.models:
        for amount in args.amounts:
            mods = _exports(name, amount, x1)
            with tempfile.TemporaryDirectory() as tmp:
                ort = {k: _ort(m, x1, Path(tmp), k) for k, m in mods.items()}
            dw = {k: _depthwise_widths(m, x1) for k, m in mods.items()}
            params = {k: sum(p.numel() for p in m.parameters()) for k, m in mods.items()}
            sizes.append(
                f"| {name} | {amount} | "
                + " | ".join(f"{params[k] / 1e6:.3f}" for k in KINDS)
                + " | "
                + " | ".join(f"{sum(w % 8 != 0 for w in dw[k])} of {len(dw[k])}" for k in KINDS)
                + " | "
                + " | ".join(f"{ort[k][2][0]} / {ort[k][2][1]}" for k in KINDS)
                + " |"
            )
            print(sizes[-1], file=sys.stderr, flush=True)
            for b in args.batches:
                x = torch.randn(b, 3, 224, 224)
                xn = x.numpy()
                calls = {}
                for k in KINDS:
                    calls[f"torch {k}"] = functools.partial(mods[k], x)
                    session, iname, _ = ort[k]
                    calls[f"ort {k}"] = functools.partial(session.run, None, {iname: xn})
                times = _rounds(calls, args.reps)
                med = {k: statistics.median(v) for k, v in times.items()}
                for rt in ("torch", "ort"):
                    lines.append(
                        f"| {name} | {amount} | {b} | {rt} | "
                        + " | ".join(f"{med[f'{rt} {k}']:.2f}" for k in KINDS)
                        + f" | {_ratio(times, f'{rt} q8', f'{rt} q1')} | "
                        f"{_ratio(times, f'{rt} q1', f'{rt} unpruned')} | "
                        f"{_ratio(times, f'{rt} q8', f'{rt} unpruned')} |"
                    )
                    print(lines[-1], file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    q8_ort = [ln for ln in lines if "| ort |" in ln]
    gains = [float(ln.split("|")[8].split()[0]) for ln in q8_ort]
    head = [
        "# Depthwise convolutions: channel counts rounded to a multiple of 8, or not",
        "",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, threads {args.threads}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"wall time {(time.time() - started) / 60:.1f} min",
        "- command: `python benchmarks/studies/depthwise_quantum.py"
        + f" {' '.join(sys.argv[1:])}".rstrip()
        + "`",
        "- input 224x224; chanprune's masks (input side, L2, unconstrained, local); reorder "
        "export with `group_quantum` 1 (depthwise counts as masked) and 8 (rounded up; the "
        "default) from the same masked model; these models have no other grouped convolutions. "
        f"{args.reps} interleaved rounds after 2 warm-up runs; medians (ms); ratios paired per "
        "round, 95% interval in brackets. ort = ONNX Runtime CPU (`chanprune.to_onnx`, "
        "`deploy.ort_session`)",
        "",
        f"**ONNX Runtime, q8 / q1 over all {len(gains)} cells:** median "
        f"{float(np.median(gains)):.3f}, range {min(gains):.3f}-{max(gains):.3f}."
        if gains
        else "",
        "",
        "## Sizes: parameters (M), depthwise convs whose width is not a multiple of 8, "
        "ORT convs blocked (NCHWc) / not",
        "",
        "| model | amount | params unpruned | params q1 | params q8 | dw odd, unpruned "
        "| dw odd, q1 | dw odd, q8 | ORT blocked / other, unpruned | q1 | q8 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *sizes,
        "",
        "## Latency (median ms)",
        "",
        "| model | amount | batch | runtime | unpruned | q1 | q8 | q8 / q1 | q1 / unpruned "
        "| q8 / unpruned |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        *lines,
    ]
    (out / "depthwise_quantum.md").write_text("\n".join(head) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
