"""Run apple-upscale 0.1.1 (``pip install apple-upscale==0.1.1 --no-deps``) on CPU or GPU.

apple-upscale hard-codes ``.cuda()`` (and a 1x3x224x224 tracing input) in its
masking code.  We do not edit its installed files: on the CPU, while it runs we
temporarily make ``Tensor.cuda`` / ``Module.cuda`` return ``self``; on a GPU its
``.cuda()`` calls run as written (as in the paper). On both, where the benchmark
uses a smaller input, we make the 224x224 tracing input match it.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch


def available() -> str | None:
    """None if apple-upscale imports, else the reason it does not."""
    try:
        import upscale  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return f"apple-upscale not importable ({type(e).__name__}: {e})"
    return None


@contextlib.contextmanager
def cpu_only(size: int | None = None):
    """Within the block, ``.cuda()`` is a no-op (and masking traces at ``size``)."""
    old_t, old_m = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        with traced_at(size):
            yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = old_t, old_m


@contextlib.contextmanager
def traced_at(size: int | None = None):
    """Within the block, upscale's masking traces at ``size`` instead of 224x224."""
    import upscale.masking.mask as mask_mod

    old_rand = mask_mod.torch
    if size is not None and size != 224:
        # mask.py calls torch.rand((1, 3, 224, 224)) via its module-level `torch`:
        # give it a proxy whose rand swaps in the benchmark's spatial size.
        class _TorchProxy:
            def __getattr__(self, name):
                return getattr(torch, name)

            @staticmethod
            def rand(shape, *a, **k):
                if tuple(shape) == (1, 3, 224, 224):
                    shape = (1, 3, size, size)
                return torch.rand(shape, *a, **k)

        mask_mod.torch = _TorchProxy()
    try:
        yield
    finally:
        mask_mod.torch = old_rand


def export(
    model: torch.nn.Module,
    x: torch.Tensor,
    amount: float = 0.25,
    keep_masked: bool = False,
    device: str = "cpu",
):
    """Mask a deep copy of ``model`` with upscale's defaults (input side, L2,
    unconstrained, local) at ``amount`` and export it with upscale's reorder and
    its baseline, on ``device`` ("cuda": natively, the returned modules there).

    Returns ``dict(reorder=module, baseline=module, export_s=seconds of the
    reorder export (compute+prune), mask_s=..., max_diff=..., status=str)``.
    ``status`` is "ok" or "mismatch: ..." (checked against upscale's own masked
    model: max abs diff <= 1e-4 * max abs output). ``keep_masked=True`` adds
    ``masked``: a copy of the masked model, so other exporters can get the same masks.
    """
    from upscale import MaskingManager, PruningManager

    out = {}
    on_cpu = torch.device(device).type == "cpu"
    where = cpu_only(x.shape[-1]) if on_cpu else traced_at(x.shape[-1])
    x = x.to(device)
    with where, torch.no_grad():
        masked = copy.deepcopy(model).eval().to(device)
        t0 = time.perf_counter()
        MaskingManager(masked).importance().mask(amount=amount)
        out["mask_s"] = time.perf_counter() - t0
        if keep_masked:
            out["masked"] = copy.deepcopy(masked)
        x1 = x[:1]
        ref = masked(x1)
        for kind in ("reorder", "baseline"):
            net = copy.deepcopy(masked).eval()
            t0 = time.perf_counter()
            try:
                manager = PruningManager(net).compute([x1])
                # is_not_ane=True: index/narrow subselection (the CPU/GPU path);
                # the default False builds per-channel torch.cat for the Apple NE.
                manager.prune(is_not_ane=True, baseline=(kind == "baseline"))
            except Exception as e:
                if not keep_masked:
                    raise
                last = (str(e).strip().splitlines() or [""])[-1]
                out["status"] = f"upscale failed: {type(e).__name__}: {last[:90]}"
                return out
            dt = time.perf_counter() - t0
            net.eval()
            y = net(x1)
            diff = (y - ref).abs().max().item()
            tol = 1e-4 * ref.abs().max().item()
            out[kind] = net
            out[f"{kind}_export_s"] = dt
            out[f"{kind}_diff"] = diff
            if not diff <= tol:
                out["status"] = f"mismatch ({kind}: max|diff|={diff:.3g} > {tol:.3g})"
                return out
    out["export_s"] = out["reorder_export_s"]
    out["status"] = "ok"
    return out
