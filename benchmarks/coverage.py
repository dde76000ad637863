"""Zoo coverage: mask 30% (output side, l1, local, unconstrained) and export with reorder.

For a fixed-seed sample of timm models (random init, < 150M parameters) and every torchvision
classification model, record per model the outcome of each stage (build, capture, analysis,
mask, export, verify, spec: the pruned model rebuilt from its pruning spec), the share of
prunable conv/linear output channels (final classifiers excluded), the parameter drop and the
export time. Every model runs in its own subprocess with
a timeout, so a hang or crash costs one row; results go to a resumable JSON cache and the table
to benchmarks/results/coverage.md.

    nice -n 10 python benchmarks/coverage.py                 # both zoos, resumes from the cache
    nice -n 10 python benchmarks/coverage.py --rerun failed  # only the models that failed
    python benchmarks/coverage.py --report                   # rewrite coverage.md from the cache

Input size: the model's default (timm: pretrained cfg), capped at 224 px where the model
accepts 224 (its native size otherwise). torchvision models run at the small sizes of
tests/test_zoo.py (CPU time on a shared machine); ViT/Swin/MaxViT need 224.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = RESULTS / "coverage.json"
REPORT = RESULTS / "coverage.md"
MAX_PARAMS = 150_000_000
CAP = 224
AMOUNT = 0.3


# sampling ------------------------------------------------------------------------------------
def _meta_params(name: str) -> int | None:
    """Parameter count of a timm model built on the meta device (no memory, no init cost)."""
    import timm
    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False)
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return None


def timm_sample(n: int, seed: int, cache: dict) -> list[str]:
    key = f"sample:timm:{seed}:{n}"
    if key in cache:
        return cache[key]
    import timm

    names = sorted(timm.list_models())
    random.Random(seed).shuffle(names)
    chosen = []
    for name in names:
        p = _meta_params(name)
        if p is not None and p < MAX_PARAMS:
            chosen.append(name)
        if len(chosen) == n:
            break
    cache[key] = chosen
    return chosen


def torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


# one model (runs in a subprocess) ------------------------------------------------------------
def _build(zoo: str, name: str):
    import torch

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    if zoo == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None).eval()
        if name.startswith(("vit", "swin", "maxvit")):
            size = 224
        elif name.startswith("inception"):
            size = 75
        elif name.startswith(("resnet", "mobilenet", "mnasnet", "regnet", "shufflenet")):
            size = 32
        else:
            size = 64
        return _redraw_zeros(model), (3, size, size)
    import timm

    model = timm.create_model(name, pretrained=False).eval()
    c, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224))
    if max(h, w) > CAP:  # try the capped size; keep the native one if the model refuses it
        try:
            with torch.no_grad():
                model(torch.randn(2, c, CAP, CAP))
            h = w = CAP
        except Exception:
            try:
                torch.manual_seed(0)
                capped = timm.create_model(name, pretrained=False, img_size=CAP).eval()
                with torch.no_grad():
                    capped(torch.randn(2, c, CAP, CAP))
                model, h, w = capped, CAP, CAP
            except Exception:
                pass
    return _redraw_zeros(model), (c, h, w)


def _redraw_zeros(model):
    """Re-draw parameters a zoo initialises to zero or a tiny constant (last BN gamma of a
    residual block, layer scale 1e-6, biases): otherwise whole branches are dead or invisible
    at init, trivially removed, and the exactness check would not see them."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.is_floating_point() or not p.numel():
                continue
            first = p.reshape(-1)[0]
            if bool((p == first).all()) and abs(float(first)) < 1e-2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _commit() -> str:
    """The chanprune commit the result was measured with (plus '+' for local changes)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE), "diff", "--quiet", "HEAD", "--", "../src"], capture_output=True
        ).returncode
        return head + ("+" if dirty else "")
    except OSError:
        return "?"


def run_one(zoo: str, name: str) -> dict:
    import torch

    import chanprune
    from chanprune.analysis.propagate import analyze
    from chanprune.analysis.share import prunable_share
    from chanprune.capture.trace import capture
    from chanprune.deploy.spec import check_spec, kept_indices

    torch.set_num_threads(1)
    rec: dict = {"zoo": zoo, "model": name, "stage": "build", "code": _commit()}
    try:
        model, size = _build(zoo, name)
        rec["input"] = list(size)
        rec["params"] = chanprune.count_params(model)
        x = torch.randn(2, *size)
        rec["stage"] = "capture"
        t = time.perf_counter()
        cap = capture(model, x)
        rec["capture_s"] = round(time.perf_counter() - t, 2)
        rec["stage"] = "analysis"
        an = analyze(cap, warn=False)
        share = prunable_share(an)  # the share mask() warns about when low
        rec["prunable"], rec["channels"] = share.prunable, share.total
        rec["barriers"] = sorted({f"{b.reason}" for b in an.barriers})[:8]
        rec["stage"] = "mask"
        masks = chanprune.mask(model, x, amount=AMOUNT, side="output", constrained=False)
        rec["masked"] = sum(len(v) for v in masks.values())
        rec["stage"] = "export"
        t = time.perf_counter()
        try:
            exported = chanprune.export(model, x, method="reorder")
        except chanprune.ExportError:
            rec["stage"] = "verify"
            raise
        rec["export_s"] = round(time.perf_counter() - t, 2)
        rec["stage"] = "verify"
        x2 = torch.randn(2, *size)
        with torch.no_grad():
            ref, got = model(x2), exported(x2)
        diff = float((ref - got).abs().max())
        rec["max_diff"] = diff
        rec["exact"] = diff <= 1e-4 * max(float(ref.abs().max()), 1e-6)
        rec["params_after"] = chanprune.count_params(exported)
        rec["copies"] = len(exported.chanprune_copies)
        if not rec["exact"]:
            raise AssertionError(f"outputs differ on fresh inputs: max |diff| {diff:.3g}")
        if rec["params_after"] >= rec["params"]:
            raise AssertionError("no parameter drop")
        rec["stage"] = "spec"  # save_pruned's round trip, without files
        t = time.perf_counter()
        check_spec(exported, model, (x,), kept_indices(exported, model, (x,)))
        rec["spec_s"] = round(time.perf_counter() - t, 2)
        rec["stage"] = "ok"
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"[
            :400
        ]
        rec["trace"] = traceback.format_exc()[-1500:]
    return rec


# driver ------------------------------------------------------------------------------------
def _load(path: Path = CACHE) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _load_all() -> dict:
    """Every cache file (two zoos may run side by side, each into its own file)."""
    merged: dict = {}
    for path in sorted(RESULTS.glob("coverage*.json")):
        for k, v in _load(path).items():
            old = merged.get(k)
            if old is None or not isinstance(v, dict) or _when(v) >= _when(old):
                merged[k] = v  # the latest result of a model wins (a rerun)
    return merged


def _when(rec: dict) -> float:
    return rec.get("finished", 0.0)


def _save(cache: dict, path: Path = CACHE) -> None:
    RESULTS.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    tmp.replace(path)


def run_subprocess(zoo: str, name: str, timeout: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", zoo, name]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"zoo": zoo, "model": name, "stage": "timeout", "error": f"over {timeout} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (out.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {
            "zoo": zoo,
            "model": name,
            "stage": "crash",
            "error": f"exit {out.returncode}: {tail[0][:300]}",
        }
    rec = json.loads(lines[-1][len("RESULT ") :])
    rec["wall_s"] = round(time.perf_counter() - t, 1)
    rec["finished"] = time.time()
    return rec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--zoo", choices=["timm", "torchvision", "both"], default="both")
    ap.add_argument("--n", type=int, default=100, help="timm sample size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model")
    ap.add_argument("--rerun", choices=["none", "failed", "all"], default="none")
    ap.add_argument("--models", nargs="*", help="only these models (of the chosen zoo)")
    ap.add_argument("--report", action="store_true", help="only rewrite coverage.md")
    ap.add_argument("--reverse", action="store_true", help="work from the end (a second run)")
    ap.add_argument("--start", type=int, default=0, help="skip the first START models to run")
    ap.add_argument("--cache", type=Path, default=CACHE, help="JSON cache to resume/write")
    ap.add_argument("--worker", nargs=2, metavar=("ZOO", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_one(*args.worker)), flush=True)
        return
    if args.report:
        return write_report(_load_all(), args.n, args.seed)
    cache = _load(args.cache)
    zoos = ["timm", "torchvision"] if args.zoo == "both" else [args.zoo]
    todo = []
    for zoo in zoos:
        names = timm_sample(args.n, args.seed, cache) if zoo == "timm" else torchvision_models()
        _save(cache, args.cache)
        for name in names:
            if args.models and name not in args.models:
                continue
            old = cache.get(f"{zoo}:{name}")
            if old is None or args.rerun == "all" or (args.rerun == "failed" and not _ok(old)):
                todo.append((zoo, name))
    if args.reverse:
        todo.reverse()
    todo = todo[args.start :]
    for i, (zoo, name) in enumerate(todo):
        if args.rerun == "none" and f"{zoo}:{name}" in _load_all():
            continue  # done meanwhile by a run going the other way
        rec = run_subprocess(zoo, name, args.timeout)
        cache[f"{zoo}:{name}"] = rec
        _save(cache, args.cache)
        print(f"[{i + 1}/{len(todo)}] {zoo}:{name}: {rec['stage']}", flush=True)
    write_report(_load_all(), args.n, args.seed)


def _ok(rec: dict) -> bool:
    return rec.get("stage") == "ok"


def _current_commits() -> set[str]:
    """Short hashes of the commits since the last change to src/ (results measured there
    reflect the current code)."""
    git = ["git", "-C", str(HERE)]
    try:
        last = subprocess.run(
            [*git, "log", "-1", "--format=%H", "--", "../src"], capture_output=True, text=True
        ).stdout.strip()
        out = subprocess.run(
            [*git, "rev-list", f"{last}^..HEAD"], capture_output=True, text=True
        ).stdout.split()
        return {h[:7] for h in out}
    except OSError:
        return set()


def _summary(recs: list[dict]) -> list[str]:
    ok = [r for r in recs if _ok(r)]
    shares = [r["prunable"] / r["channels"] for r in recs if r.get("channels")]
    drops = [1 - r["params_after"] / r["params"] for r in ok]
    times = sorted(r["export_s"] for r in ok)
    pct = 100 * len(ok) / max(len(recs), 1)
    lines = [
        f"- exported exactly with a parameter drop, and rebuilt from its spec: "
        f"**{len(ok)}/{len(recs)} ({pct:.1f}%)**"
    ]
    if shares:
        avg = 100 * sum(shares) / len(shares)
        lines.append(
            f"- prunable share of conv/linear output channels (final classifiers excluded), "
            f"mean over {len(shares)} analysed models: **{avg:.1f}%**"
        )
    current = _current_commits()
    now = [r for r in recs if r.get("code") in current]
    now_shares = [r["prunable"] / r["channels"] for r in now if r.get("channels")]
    if now_shares and len(now) < len(recs):
        lines.append(
            f"- measured with the current code ({len(now)} models): "
            f"{sum(map(_ok, now))}/{len(now)} exact with a parameter drop, mean prunable share "
            f"{100 * sum(now_shares) / len(now_shares):.1f}% (the others ran with earlier "
            "commits of this branch, before some of the rules existed; see 'code')"
        )
    if drops:
        lines.append(f"- mean parameter drop: {100 * sum(drops) / len(drops):.1f}%")
        lines.append(
            f"- export time (reorder, incl. verification): median {times[len(times) // 2]} s"
        )
        specs = sorted((r["spec_s"], r["model"]) for r in ok if "spec_s" in r)
        if specs:
            lines.append(
                f"- spec round trip (read off the export, rebuilt, checked): median "
                f"{specs[len(specs) // 2][0]} s, slowest {specs[-1][0]} s ({specs[-1][1]})"
            )
    return lines


def _table(recs: list[dict]) -> list[str]:
    rows = [
        "| model | input | params (M) | outcome | prunable | param drop | export s | code | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(recs, key=lambda r: r["model"]):
        share = f"{100 * r['prunable'] / r['channels']:.0f}%" if r.get("channels") else "-"
        drop = (
            f"{100 * (1 - r['params_after'] / r['params']):.1f}%" if r.get("params_after") else "-"
        )
        inp = "x".join(str(s) for s in r.get("input", [])[1:]) or "-"
        params = f"{r['params'] / 1e6:.1f}" if r.get("params") else "-"
        outcome = "exact" if _ok(r) else f"fails at {r['stage']}"
        note = r.get("error", "").replace("|", "/").replace("\n", " ")[:160]
        rows.append(
            f"| {r['model']} | {inp} | {params} | {outcome} | {share} | {drop} | "
            f"{r.get('export_s', '-')} | {r.get('code', 'old')} | {note} |"
        )
    return rows


def write_report(cache: dict, n: int, seed: int) -> None:
    out = [
        "# Zoo coverage",
        "",
        f"Generated by `benchmarks/coverage.py` (timm sample: seed {seed}, {n} models under "
        f"150M parameters; random init). Each model: mask {int(AMOUNT * 100)}% of output "
        'channels (l1, local, unconstrained), export with `method="reorder"` (which verifies '
        "itself), then compare masked vs exported on fresh random inputs, then rebuild the pruned "
        "model from its pruning spec (`save_pruned`'s round trip, checked). Input: the default "
        f"size capped at {CAP} px where the model accepts it; torchvision at the small sizes of "
        "tests/test_zoo.py. 'prunable': channels some masking can remove (segment channel not "
        "pinned) / all conv and linear output channels, final classifiers excluded. Parameters "
        "a zoo initialises to zero or a tiny constant are re-drawn first. One subprocess per "
        "model, one thread, on a shared 2-core machine (times are loaded-machine times). "
        "'code': the commit measured ('old': before commits were recorded).",
        "",
    ]
    for zoo, names in (
        ("timm", cache.get(f"sample:timm:{seed}:{n}", [])),
        ("torchvision", torchvision_models()),
    ):
        recs = [cache[f"{zoo}:{m}"] for m in names if f"{zoo}:{m}" in cache]
        if not recs:
            continue
        out += [f"## {zoo} ({len(recs)} of {len(names)} models run)", "", *_summary(recs), ""]
        missing = [m for m in names if f"{zoo}:{m}" not in cache]
        if missing:
            out += [f"Not run yet (time): {', '.join(missing)}", ""]
        failed = [r for r in recs if not _ok(r)]
        if failed:
            out += ["Not exported exactly (reason):", ""]
            out += [f"- {r['model']}: {r['stage']}: {r.get('error', '')[:200]}" for r in failed]
            out.append("")
        out += [*_table(recs), ""]
    REPORT.write_text("\n".join(out))


if __name__ == "__main__":
    main()
