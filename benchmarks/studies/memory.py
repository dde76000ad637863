"""Peak memory of masking and exporting a model, as a multiple of the model's own size.

    python benchmarks/studies/memory.py [--models vit_h_14 resnet50] [--amount 0.3]

Each model runs in a fresh process (peak RSS is per process): build (random init), mask
(output side, l1), then export baseline and reorder one after the other, dropping each, twice
(unconstrained, then constrained from the saved weights), as tests/test_zoo.py does. A dropped
export must be freed at once (its graph holds it weakly) and mask() must not copy the model, so
the peak stays near model + saved weights + one export. Writes benchmarks/studies/results/memory.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import warnings
from pathlib import Path

GiB = 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB  # ru_maxrss: KiB


def run_one(name: str, amount: float) -> dict:
    import torch
    import torchvision

    import chanprune

    warnings.simplefilter("ignore")
    model = torchvision.models.get_model(name).eval()
    size = 224 if name.startswith(("vit", "swin", "maxvit")) else 64
    x = torch.randn(2, 3, size, size)
    row = {"model": name, "model_gib": sum(p.numel() * 4 for p in model.parameters()) / GiB}
    row["built"] = peak_gib()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for constrained in (False, True):
        chanprune.mask(model, x, amount=amount, constrained=constrained)
        for method in ("baseline", "reorder"):
            exported = chanprune.export(model, x, method=method)
            del exported
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(state[k])
    row["peak"] = peak_gib()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vit_h_14", "resnet50"])
    ap.add_argument("--amount", type=float, default=0.3)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one model, JSON on stdout
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.amount)))
        return
    rows = []
    for name in args.models:
        cmd = [sys.executable, __file__, "--one", name, "--amount", str(args.amount)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        "# Peak memory of mask + export (GiB, peak RSS of a fresh process)",
        "",
        f"- command: `python benchmarks/studies/memory.py --models {' '.join(args.models)}`",
        f"- job: mask {args.amount:.0%} (output side, l1), export baseline then reorder (each "
        "dropped), unconstrained then constrained, the model's weights saved once for the reset",
        "- expected floor: after build + saved weights + one export (about 2x the weights more)",
        "",
        "| model | weights | after build | peak | peak / weights |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['model_gib']:.2f} | {r['built']:.2f} | {r['peak']:.2f} | "
            f"{r['peak'] / r['model_gib']:.1f}x |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'memory.md'}")


if __name__ == "__main__":
    main()
