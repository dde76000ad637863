"""Capture shortcuts against the full path on the zoo: same pruning, less time.

Two shortcuts, each compared with the capture it replaces (``--shortcut``):

- ``functional``: the fast path of ``capture/functional.py`` against ``run_decompositions({})``
  (``chanprune.capture.trace.FAST_PATH``); writes results/capture_paths.md;
- ``marker``: the static trace at a marker batch, generalised (``capture/batch.py``), against
  the symbolic-batch trace (``chanprune.capture.trace.MARKED_PATH``); writes
  results/capture_marker.md.

For each model, the whole job (mask 30%, output side, l1, unconstrained, then the reorder
export) runs twice, with the shortcut and without, and the two results must agree: the same
masks, the same parameter shapes, the same copies, the same outputs on a second input batch of
another size (1e-5). Also recorded: whether the shortcut vouched for the graph (else it fell
back: then the two runs are the same code) and the mask + export time of each.

    python benchmarks/studies/capture_paths.py [--shortcut functional|marker]
        [--zoo torchvision timm] [--n 100] [--models NAME ...]

Rows of zoos not run, and with --models of models not rerun, are kept from earlier runs (the
.json next to the .md). Models are built as in benchmarks/coverage.py (same sizes, same timm
sample).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

import chanprune
import chanprune.capture.trace as capture_mod

sys.path.insert(0, str(Path(__file__).parents[1]))
import coverage  # the zoo's model list and sizes

RESULTS = Path(__file__).parent / "results"
# shortcut -> (flag in chanprune.capture.trace, results file stem, title, name of the full path)
SHORTCUTS = {
    "functional": (
        "FAST_PATH",
        "capture_paths",
        "Capture fast path vs run_decompositions",
        "run_decompositions",
    ),
    "marker": (
        "MARKED_PATH",
        "capture_marker",
        "Capture at a marker batch (generalised) vs a symbolic batch",
        "symbolic batch",
    ),
}


def _job(model_fn, size: tuple[int, ...], flag: str, on: bool) -> dict:
    setattr(capture_mod, flag, on)
    try:
        model = model_fn()
        x = torch.randn(2, *size, generator=torch.Generator().manual_seed(1))
        x2 = torch.randn(3, *size, generator=torch.Generator().manual_seed(2))
        t0 = time.perf_counter()
        masks = chanprune.mask(model, x, amount=0.3, heuristic="l1", side="output")
        exported = chanprune.export(model, x)
        dt = time.perf_counter() - t0
        with torch.no_grad():
            out = exported(x2)
        return {
            "time": dt,
            "masks": {k: sorted(int(i) for i in v) for k, v in masks.items()},
            "shapes": {k: tuple(v.shape) for k, v in exported.state_dict().items()},
            "copies": [
                (c.kind, c.channels, c.elements, c.positions) for c in exported.chanprune_copies
            ],
            "out": out,
            "marker": capture_mod._CACHE[model][1].marker,  # None: the symbolic trace served
        }
    finally:
        setattr(capture_mod, flag, True)


def compare(zoo: str, name: str, max_params: float, shortcut: str) -> dict:
    from chanprune.capture.functional import functionalize

    rec: dict = {"zoo": zoo, "model": name}
    try:
        model, size = coverage._build(zoo, name)
        params = sum(p.numel() for p in model.parameters())
        if params > max_params:
            rec["status"] = f"skipped: {params / 1e6:.0f}M parameters (--max-params)"
            return rec
        flag = SHORTCUTS[shortcut][0]
        # a new object each time, so the capture cache cannot serve the second run
        slow = _job(lambda: copy.deepcopy(model), size, flag, False)
        fast = _job(lambda: copy.deepcopy(model), size, flag, True)
        if shortcut == "marker":
            rec["fast_path"] = fast["marker"] is not None
        else:
            x = torch.randn(2, *size)
            ep = torch.export.export(
                model, (x,), strict=False, dynamic_shapes=({0: torch.export.Dim.AUTO},)
            )
            rec["fast_path"] = functionalize(ep) is not None
        rec["time_fast"], rec["time_slow"] = fast["time"], slow["time"]
        rec["same"] = {
            "masks": fast["masks"] == slow["masks"],
            "shapes": fast["shapes"] == slow["shapes"],
            "copies": fast["copies"] == slow["copies"],
            "outputs": bool(torch.allclose(fast["out"], slow["out"], atol=1e-5, rtol=1e-5)),
        }
        rec["status"] = "ok" if all(rec["same"].values()) else "DIFFERENT"
    except Exception as e:
        rec["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
        traceback.print_exc()
    return rec


def write(records: list[dict], started: float, shortcut: str, rerun: int = 0) -> None:
    _, stem, title, full = SHORTCUTS[shortcut]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(records, indent=1))
    ok = [r for r in records if r["status"] == "ok"]
    ran = [r for r in records if not r["status"].startswith("skipped")]
    taken = [r for r in ok if r.get("fast_path")]
    speed = sorted(r["time_slow"] / r["time_fast"] for r in taken)
    lines = [
        f"# {title}",
        "",
        "- command: `python benchmarks/studies/capture_paths.py"
        + f" {' '.join(sys.argv[1:])}".rstrip()
        + "`",
        f"- torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"wall time {(time.time() - started) / 60:.1f} min"
        + (
            f" ({rerun} models rerun by this command; the other rows from earlier runs)"
            if rerun
            else ""
        ),
        "- job: mask 30% (output side, l1, unconstrained) + reorder export, once per path, "
        "each on a fresh copy; same = identical masks, parameter shapes and copies, outputs "
        "within 1e-5 on another batch",
        "",
        f"**{len(ok)}/{len(ran)} models give the same pruning on both paths; the shortcut "
        f"({shortcut}) vouched for {len(taken)} of them**"
        + (
            f"; there mask + export took {speed[len(speed) // 2]:.2f}x less time (median; "
            f"min {speed[0]:.2f}x, max {speed[-1]:.2f}x)"
            if speed
            else ""
        )
        + ".",
        "",
        f"| zoo | model | shortcut taken | same | mask+export with it (s) | with {full} (s) |",
        "|---|---|:-:|:-:|---:|---:|",
    ]
    for r in records:
        same = r["status"] if r["status"] != "ok" else "yes"
        fast = {True: "yes", False: "falls back"}.get(r.get("fast_path"), "—")
        t_f, t_s = r.get("time_fast"), r.get("time_slow")
        lines.append(
            f"| {r['zoo']} | {r['model']} | {fast} | {same} | "
            f"{'—' if t_f is None else f'{t_f:.2f}'} | {'—' if t_s is None else f'{t_s:.2f}'} |"
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shortcut", choices=sorted(SHORTCUTS), default="functional")
    ap.add_argument("--zoo", nargs="+", default=["torchvision"], choices=["torchvision", "timm"])
    ap.add_argument("--n", type=int, default=100, help="timm sample size (coverage.py's sample)")
    ap.add_argument("--models", nargs="*", help="only these (names from the chosen zoos)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-params", type=float, default=150, help="skip larger models (millions)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.time()
    jobs = []
    if "torchvision" in args.zoo:
        jobs += [("torchvision", n) for n in coverage.torchvision_models()]
    if "timm" in args.zoo:
        cache = coverage._load()
        jobs += [("timm", n) for n in coverage.timm_sample(args.n, 0, cache)]
    if args.models:
        jobs = [j for j in jobs if j[1] in args.models]
    stem = SHORTCUTS[args.shortcut][1]
    done = RESULTS / f"{stem}.json"
    earlier = json.loads(done.read_text()) if done.is_file() else []
    # rows of zoos not run now, and with --models the models not rerun, stay; reruns replace
    records = [
        r
        for r in earlier
        if (r["zoo"], r["model"]) not in set(jobs) and (args.models or r["zoo"] not in args.zoo)
    ]
    for zoo, name in jobs:
        records.append(compare(zoo, name, args.max_params * 1e6, args.shortcut))
        r = records[-1]
        print(f"{zoo} {name}: {r['status']} fast={r.get('fast_path')}", file=sys.stderr, flush=True)
        write(records, started, args.shortcut, len(jobs) if len(records) > len(jobs) else 0)
    print((RESULTS / f"{stem}.md").read_text())
    return 0 if all(r["status"] != "DIFFERENT" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
