"""Where a cold capture's time goes: torch.export, then run_decompositions({}) (the fallback) or
chanprune's functionalize (the fast path), then the rest of chanprune.export. Prints one line per
model; a rerunnable source for the split quoted in docs/design.md.

    python benchmarks/studies/capture_split.py [--models efficientnet_v2_s resnet50] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

import chanprune
from chanprune.capture.functional import functionalize


def split(name: str) -> tuple[float, float, float, float]:
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(2, 3, 224, 224)  # batch of two: the dynamic batch the capture traces with

    def program() -> torch.export.ExportedProgram:
        return torch.export.export(
            model, (x,), strict=False, dynamic_shapes=({0: torch.export.Dim.AUTO},)
        )

    t0 = time.perf_counter()
    ep = program()
    t1 = time.perf_counter()
    ep.run_decompositions({})
    t2 = time.perf_counter()
    ep = program()
    t_fast = time.perf_counter()
    fast = functionalize(ep) is not None
    t_fast = time.perf_counter() - t_fast if fast else float("nan")
    fresh = getattr(torchvision.models, name)().eval()
    chanprune.mask(fresh, x[:1], amount=0.3)  # captures (again) and masks
    t3 = time.perf_counter()
    chanprune.export(fresh, x[:1])  # capture cached: analysis, plan, rewrite, verify
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t_fast, t4 - t3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_v2_s"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    split(args.models[0])  # warm-up: torch.export's one-time set-up
    for name in args.models:
        e, d, f, rest = split(name)
        print(
            f"{name}: torch.export {e:.2f} s, run_decompositions {d:.2f} s, "
            f"functionalize {f:.2f} s (nan: falls back), export after mask {rest:.2f} s"
        )


if __name__ == "__main__":
    main()
