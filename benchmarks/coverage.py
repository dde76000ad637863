"""Zoo coverage: mask 30% (output side, l1, local, unconstrained) and export with reorder.

For a fixed-seed sample of timm models (random init, < 150M parameters) and every torchvision
classification model, record per model the outcome of each stage (build, capture, analysis,
mask, export, verify, spec: the pruned model rebuilt from its pruning spec), the share of
prunable conv/linear output channels (final classifiers excluded), the parameter drop and the
export time. The third zoo, ``--zoo beyond``, holds models beyond classification
(benchmarks/beyond_zoo.py: segmentation, detection, video, optical flow, Hugging Face, diffusers)
and checks more per model (:func:`run_beyond`). Every model runs in its own subprocess with
a timeout, so a hang or crash costs one row; results go to a resumable JSON cache and the table
to benchmarks/results/coverage.md.

    nice -n 10 python benchmarks/coverage.py                 # both zoos, resumes from the cache
    nice -n 10 python benchmarks/coverage.py --rerun failed  # only the models that failed
    nice -n 10 python benchmarks/coverage.py --zoo beyond    # segmentation, detection, HF ...
    python benchmarks/coverage.py --report                   # rewrite coverage.md from the cache

Input size: the model's default (timm: pretrained cfg), capped at 224 px where the model
accepts 224 (its native size otherwise). torchvision models run at the small sizes of
tests/test_zoo.py (CPU time on a shared machine); ViT/Swin/MaxViT need 224.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import re
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


# the beyond-classification zoo (benchmarks/beyond_zoo.py) --------------------------------------
BEYOND = "beyond"
NEW_BATCH = 3
# q/k/v projections (separate or fused): their kept output width says whether heads shrank
QKV = re.compile(
    r"(^|\.)(query|key|value|q_proj|k_proj|v_proj|to_q|to_k|to_v|c_attn|qkv)\.weight$"
    r"|(^|\.)in_proj_weight$"
)
FIXED = "n/a (fixed)"  # the export takes the traced size only: no dynamic_shapes= in export yet


def beyond_zoo():
    """benchmarks/beyond_zoo.py as a module (benchmarks are scripts, not a package)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import beyond_zoo

    return beyond_zoo


def beyond_models() -> list[str]:
    return [c.name for c in beyond_zoo().cases()]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:400]


def _share(model, ex, parts: list[str] | None):
    """The analysis' prunable share of the model, or summed over its named submodules."""
    from chanprune.analysis.propagate import analyze
    from chanprune.analysis.share import PrunableShare, prunable_share
    from chanprune.capture.submodules import for_each_part
    from chanprune.capture.trace import capture

    def one(module, inputs, **kw) -> PrunableShare:
        return prunable_share(analyze(capture(module, inputs, **kw), warn=False))

    if parts:
        shares = list(for_each_part(model, ex.args, parts, one, **_how(ex)).values())
    else:
        shares = [one(model, ex.args, **_how(ex))]
    return PrunableShare(
        sum(s.prunable for s in shares),
        sum(s.total for s in shares),
        [c for s in shares for c in s.causes],
    )


def _qkv_dims(model) -> dict[str, int]:
    """The output dim of each q/k/v projection weight (GPT-2's Conv1D stores (in, out))."""
    dims = {}
    for name, _ in model.named_parameters():
        if QKV.search(name):
            owner = model.get_submodule(name.rpartition(".")[0])
            dims[name] = 1 if type(owner).__name__ == "Conv1D" else 0
    return dims


def _layer_dims(model, parts: list[str] | None) -> dict[str, int]:
    """The output-channel dim of each conv/linear weight (of the named parts, if any): 0, but 1
    for transposed convs (weights stored (in, out), depthwise aside) and GPT-2's Conv1D."""
    from torch import nn

    transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    plain = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    dims = {}
    for name, m in model.named_modules():
        if parts and not any(name == p or name.startswith(p + ".") for p in parts):
            continue
        if isinstance(m, transposed):
            dims[f"{name}.weight"] = 0 if m.groups > 1 else 1
        elif isinstance(m, plain):
            dims[f"{name}.weight"] = 0
        elif type(m).__name__ == "Conv1D":
            dims[f"{name}.weight"] = 1
    return dims


def removed_share(model, exported, dims: dict[str, int]) -> float | None:
    """The share of the output channels of the weights in ``dims`` that ``exported`` no longer
    has (None: no such weight). Read off the parameter shapes, which keep their names."""
    before, after = dict(model.named_parameters()), dict(exported.named_parameters())
    width = {n: before[n].shape[d] for n, d in dims.items() if n in before}
    if not width:
        return None
    kept = {n: after[n].shape[dims[n]] if n in after else w for n, w in width.items()}
    return 1 - sum(kept.values()) / sum(width.values())


def _how(ex, shapes: dict | None = None) -> dict:
    """The keyword arguments of mask and export for example ``ex`` (and dynamic ``shapes``)."""
    how: dict = {"example_kwargs": ex.kwargs} if ex.kwargs else {}
    return {**how, "dynamic_shapes": shapes} if shapes else how


def _check(model, exported, ex) -> str:
    """'exact', or why the export's outputs on example ``ex`` are not the masked model's."""
    import torch

    from chanprune.rewrite.verify import compare

    try:
        with torch.no_grad():
            ref = model(*ex.args, **ex.kwargs)
    except Exception as e:
        return f"the model itself fails: {_first_line(e)}"
    try:
        with torch.no_grad():
            got = compare(ref, exported(*ex.args, **ex.kwargs))
    except Exception as e:
        return f"fails: {_first_line(e)}"
    if got.ok:
        return "exact"
    return f"differs: max |diff| {got.max_abs_diff:.3g} vs max |output| {got.max_abs_ref:.3g}"


def dynamic_shapes(case) -> dict | None:
    """``dynamic_shapes=`` for mask and export: the case's size dims as ``Dim.AUTO``. None where
    the model has no such dims, or where ``chanprune.export`` takes no ``dynamic_shapes`` (it
    then exports at the traced size only)."""
    import chanprune

    if (
        case.size != "dynamic"
        or "dynamic_shapes" not in inspect.signature(chanprune.export).parameters
    ):
        return None
    from torch.export import Dim

    return {name: dict.fromkeys(dims, Dim.AUTO) for name, dims in case.dynamic.items()}


def _prune(case, parts: list[str] | None, side: str, shapes: dict | None = None):
    """A fresh build of the case, masked on ``side`` and exported: (masked model, export)."""
    import chanprune

    model, ex = case.build(), case.example(2)
    how = _how(ex, shapes)
    chanprune.mask(model, ex.args, amount=AMOUNT, side=side, submodules=parts, **how)
    return model, chanprune.export(model, ex.args, method="reorder", submodules=parts, **how)


def _other_size(case, parts: list[str] | None, model, exported) -> str:
    """How an export compares with the masked model at the case's other size: the export at
    hand where the model resizes its input itself, else one made with ``dynamic_shapes``."""
    if case.size == "one":
        return "n/a (model)"
    if case.size == "any":
        return _check(model, exported, case.example(2, True))
    shapes = dynamic_shapes(case)
    if shapes is None:
        return FIXED
    try:
        model, exported = _prune(case, parts, "output", shapes)
    except Exception as e:
        return f"fails: {_first_line(e)}"
    return _check(model, exported, case.example(2, True))


def _input_side(case, parts: list[str] | None) -> tuple[str, float | None]:
    """Mask a fresh build on the input side, export it and check it on fresh inputs: the
    outcome and the share of conv/linear output channels removed."""
    try:
        model, exported = _prune(case, parts, "input")
    except Exception as e:
        return f"fails: {_first_line(e)}", None
    share = removed_share(model, exported, _layer_dims(model, parts))
    return _check(model, exported, case.example(2)), share


def run_beyond(name: str) -> dict:
    """One model of the beyond zoo: capture and share, mask (output side), export, then checks
    on fresh inputs, at a new batch size, at another size, and of the input side."""
    import torch

    import chanprune

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    # widths as masked, not aligned to this CPU's vector width: the same shares on any machine
    os.environ.setdefault("CHANPRUNE_WIDTH_QUANTUM", "1")
    case = beyond_zoo().by_name()[name]
    rec: dict = {"zoo": BEYOND, "model": name, "family": case.family, "stage": "build"}
    rec["code"] = _commit()
    if not case.available():
        rec.update(stage="skipped", error=f"needs {', '.join(case.needs)}")
        return rec
    parts = list(case.submodules) if case.submodules else None
    rec["parts"] = parts
    try:
        model, ex = case.build(), case.example(2)
        rec["input"] = [list(t.shape) for t in ex.args]
        rec["keywords"] = sorted(ex.kwargs)
        rec["params"] = chanprune.count_params(model)
        rec["stage"] = "capture"
        share = _share(model, ex, parts)
        rec["prunable"], rec["channels"], rec["causes"] = share.prunable, share.total, share.causes
        rec["stage"] = "mask"
        how = _how(ex)
        masks = chanprune.mask(
            model, ex.args, amount=AMOUNT, side="output", submodules=parts, **how
        )
        rec["masked"] = sum(len(v) for v in masks.values())
        rec["stage"] = "export"
        t = time.perf_counter()
        exported = chanprune.export(model, ex.args, method="reorder", submodules=parts, **how)
        rec["export_s"] = round(time.perf_counter() - t, 2)
        rec["params_after"] = chanprune.count_params(exported)
        rec["pruned"] = removed_share(model, exported, _layer_dims(model, parts))
        rec["qkv_pruned"] = removed_share(model, exported, _qkv_dims(model))
        rec["stage"] = "verify"
        rec["fresh"] = _check(model, exported, case.example(2))
        rec["batch"] = _check(model, exported, case.example(NEW_BATCH))
        rec["size"] = _other_size(case, parts, model, exported)
        rec["stage"] = "input side"
        rec["input_side"], rec["input_pruned"] = _input_side(case, parts)
        rec["stage"] = "ok" if beyond_ok(rec) else "checks"
    except Exception as e:
        rec["error"] = _first_line(e)
        rec["trace"] = traceback.format_exc()[-1500:]
    return rec


def beyond_ok(rec: dict) -> bool:
    """Exact everywhere it was checked, with a parameter drop."""
    checks = [rec.get(k, "") for k in ("fresh", "batch", "input_side")]
    size_ok = rec.get("size", "").startswith(("exact", "n/a"))
    drop = rec.get("params_after", rec.get("params", 0)) < rec.get("params", 0)
    return all(c == "exact" for c in checks) and size_ok and drop


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
    ap.add_argument(
        "--zoo",
        choices=["timm", "torchvision", "both", BEYOND],
        default="both",
        help="both: timm and torchvision; beyond: benchmarks/beyond_zoo.py",
    )
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
        zoo, name = args.worker
        rec = run_beyond(name) if zoo == BEYOND else run_one(zoo, name)
        print("RESULT " + json.dumps(rec), flush=True)
        return
    if args.report:
        return write_report(_load_all(), args.n, args.seed)
    cache = _load(args.cache)
    zoos = ["timm", "torchvision"] if args.zoo == "both" else [args.zoo]
    todo = []
    for zoo in zoos:
        names = _names(zoo, args.n, args.seed, cache)
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


def _names(zoo: str, n: int, seed: int, cache: dict) -> list[str]:
    if zoo == "timm":
        return timm_sample(n, seed, cache)
    return beyond_models() if zoo == BEYOND else torchvision_models()


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
    names = beyond_models()
    recs = [cache[f"{BEYOND}:{m}"] for m in names if f"{BEYOND}:{m}" in cache]
    if recs:
        out += beyond_section(recs, names)
    REPORT.write_text("\n".join(out))


BEYOND_HEAD = (
    "Models of `benchmarks/beyond_zoo.py`, random init, tiny configurations (2-layer, 64-wide "
    "transformers; small images and clips). Each: capture and analysis ('prunable', summed over "
    "the parts for models pruned through `submodules=`), mask 30% on the output side, export "
    "with reorder, then check the export against the masked model on fresh inputs, at batch "
    f"{NEW_BATCH} and at another sequence length or image size (a fresh build masked and "
    "exported with the size dims as `Dim.AUTO` in `dynamic_shapes=`, checked there; "
    f"'{FIXED}': a run made before `export` had `dynamic_shapes=`; 'refused': the export "
    "refuses that size by name, the model fixing it; "
    "'n/a (model)': the model takes one size; detectors resize their input themselves); then "
    "mask a fresh build on the input side, export and check it. "
    "'pruned out / in': the share of all conv and linear output channels (of the parts, for "
    "`submodules=`; final layers included) the export removed, masked on the output / input "
    "side, read off the parameter shapes (width alignment off: `CHANPRUNE_WIDTH_QUANTUM=1`). "
    "'q/k/v': the same for the attention projections (0%: no attention head, nor channel within "
    "one, pruned). Export times are single-thread times on a shared machine."
)


def _cell(outcome: str | None) -> str:
    """A check's outcome in one or two words (the reasons are listed above the table):
    'refused' where chanprune refused the input by name, 'fails' where anything else raised."""
    if not outcome:
        return "-"
    if outcome == "exact" or outcome.startswith("n/a"):
        return outcome
    if outcome.startswith("the model"):
        return "model fails"
    return "refused" if outcome.startswith("fails: InputError") else outcome.split(":")[0]


def _pct(num: float | None, den: float | None = 1.0) -> str:
    return "-" if num is None or not den else f"{100 * num / den:.0f}%"


def _beyond_problems(r: dict) -> list[str]:
    """Why ``r`` is not exact everywhere: its failing stage, or each failing check."""
    if r["stage"] not in ("ok", "checks"):
        return [f"{r['stage']}: {r.get('error', '')}"]
    checks = {"fresh inputs": "fresh", f"batch {NEW_BATCH}": "batch", "other size": "size"}
    checks["input side"] = "input_side"
    bad = [f"{label}: {r[k]}" for label, k in checks.items() if _cell(r.get(k)) != r.get(k)]
    if r.get("params_after", 0) >= r.get("params", 0):
        bad.append("no parameter drop")
    return bad


def beyond_section(recs: list[dict], names: list[str]) -> list[str]:
    """The beyond zoo's part of coverage.md: summary, problems, one row a model."""
    ok = [r for r in recs if _ok(r)]
    pruned = [r for r in recs if r.get("pruned") is not None]
    enough = [r for r in pruned if r["pruned"] >= 0.25]
    attn = [r for r in recs if r.get("qkv_pruned") is not None]
    heads = [r for r in attn if r["qkv_pruned"] > 0]
    fixed = [r for r in recs if r.get("size") == FIXED]
    out = [
        f"## Beyond classification ({len(recs)} of {len(names)} models run)",
        "",
        BEYOND_HEAD,
        "",
        f"- exact on fresh inputs, at batch {NEW_BATCH}, at another size where exported for it "
        f"and on the input side, with a parameter drop: **{len(ok)}/{len(recs)}**",
        f"- at least 25% of the conv/linear output channels pruned at amount {AMOUNT}: "
        f"{len(enough)} of {len(pruned)} exported models",
        f"- attention q/k/v channels pruned: {len(heads)} of {len(attn)} models with attention",
    ]
    if fixed:
        out.append(f"- another size not checked ({FIXED}): {len(fixed)} models")
    out.append("")
    problems = [(r["model"], p) for r in recs for p in _beyond_problems(r)]
    if problems:
        why = {c.name: c.ill_conditioned for c in beyond_zoo().cases() if c.ill_conditioned}
        out += ["Not exact everywhere (reason):", ""]
        for m, p in problems:
            out.append(f"- {m}: {p[:240]}" + (f" (the model: {why[m]})" if m in why else ""))
        out.append("")
    out += [
        "| model | family | params (M) | output side | new batch | other size | input side "
        "| prunable | pruned out / in | q/k/v | param drop | export s | code |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(recs, key=lambda r: (r.get("family", ""), r["model"])):
        outcome = r["stage"] if r["stage"] in ("skipped", "timeout", "crash") else "-"
        if r["stage"] in ("ok", "checks"):
            outcome = _cell(r.get("fresh"))
        elif r["stage"] not in ("skipped", "timeout", "crash"):
            outcome = f"fails at {r['stage']}"
        params = f"{r['params'] / 1e6:.2f}" if r.get("params") else "-"
        drop = _pct(r["params"] - r["params_after"], r["params"]) if r.get("params_after") else "-"
        out.append(
            f"| {r['model']} | {r.get('family', '-')} | {params} | {outcome} "
            f"| {_cell(r.get('batch'))} | {_cell(r.get('size'))} | {_cell(r.get('input_side'))} "
            f"| {_pct(r.get('prunable'), r.get('channels'))} "
            f"| {_pct(r.get('pruned'))} / {_pct(r.get('input_pruned'))} "
            f"| {_pct(r.get('qkv_pruned'))} "
            f"| {drop} | {r.get('export_s', '-')} | {r.get('code', '-')} |"
        )
    return [*out, ""]


if __name__ == "__main__":
    main()
