"""Shared test helpers."""

import torch

import chanprune
from chanprune.rewrite.rewriter import GROUP_QUANTUM


def outputs_match(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The acceptance tolerance: max |a - b| <= 1e-4 * max |a|."""
    return float((a - b).abs().max()) <= 1e-4 * max(float(a.abs().max()), 1e-6)


def prune_and_check(model, x, method="baseline", group_quantum=GROUP_QUANTUM, **mask_kwargs):
    """Mask, export, and assert the exported model reproduces the masked one (independently
    of export's own check). Returns (exported, masks)."""
    model.eval()
    masks = chanprune.mask(model, x, **mask_kwargs) if mask_kwargs else {}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exported = chanprune.export(model, x, method=method, group_quantum=group_quantum)
    for k, v in model.state_dict().items():  # export leaves the model as it was
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        ref, got = model(x), exported(x)
    assert outputs_match(ref, got), float((ref - got).abs().max())
    return exported, masks


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (benchmarks are scripts, not a package). It is
    registered in ``sys.modules``, where dataclasses look their module up."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def saved_latency_json(tmp_path, results: list):
    """A latency.json as ``benchmarks/latency.py`` writes it, holding ``results`` (one amount,
    batch 8, 12 rounds): for ``--report-from`` tests."""
    import json

    args = {"models": [r["model"] for r in results], "amounts": [0.5], "batches": [8]}
    args.update(reps=12, threads=2, size=224, out=str(tmp_path), note="")
    run = {"machine": "m", "date": "2026-01-01T00:00:00", "wall_min": 1.0}
    run.update(command="python benchmarks/latency.py", allocator="glibc defaults")
    path = tmp_path / "saved.json"
    path.write_text(json.dumps({"args": args, "run": run, "complete": True, "results": results}))
    return path
