"""Representative timm models (issue 7): exact export, a parameter drop, prunable channels.

The full fixed-seed sample runs in benchmarks/coverage.py; here one model per family at a small
input. Parameters a zoo initialises to zero or a tiny constant (zero-init last BN gamma, layer
scale 1e-6) are re-drawn first, so no branch is dead or invisible to the exactness check.
"""

import warnings

import numpy as np
import pytest
import torch

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from helpers import outputs_match

timm = pytest.importorskip("timm")

# name -> (input size, create_model kwargs, minimum share of prunable conv/linear channels)
MODELS = {
    "convnext_atto": (32, {}, 0.99),  # LayerNorm over channels, layer scale, GRN-free
    "regnety_002": (32, {}, 0.99),  # grouped convs, squeeze-excite
    "tf_efficientnet_lite0": (32, {}, 0.99),  # TF 'same' padding, depthwise
    "dla46_c": (32, {}, 0.99),  # DLA: aggregation by concat, project/residual roots
    "vit_tiny_patch16_224": (32, {"img_size": 32}, 0.99),  # residual stream, MLP, 3 heads
    "mobilevit_xxs": (64, {}, 0.4),  # hybrid: MobileNet blocks + transformer; unfold pinned
}


def redraw(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            first = p.reshape(-1)[0] if p.numel() else None
            if first is not None and bool((p == first).all()) and abs(float(first)) < 1e-2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def prunable_share(an) -> float:
    """Share of conv/linear output channels (final layer excluded) not pinned."""
    out = next(n for n in an.capture.graph.nodes if n.op == "output")
    final = set()
    for a in out.all_input_nodes:
        ax = an.axes.get(a.name)
        if ax is not None and not isinstance(ax, list):
            final.update(an.root[ax.ids].tolist())
    ok = total = 0
    for p in an.producers:
        roots = an.root[p.ids]
        if not set(roots.tolist()) <= final:
            ok += int((~an.pinned[roots]).sum())
            total += p.channels
    return ok / total


@pytest.mark.parametrize("name", sorted(MODELS))
def test_timm_model_exports_exactly(name):
    size, kwargs, min_share = MODELS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = redraw(timm.create_model(name, pretrained=False, **kwargs).eval())
        x = torch.randn(2, 3, size, size)
        share = prunable_share(analyze(capture(model, x), warn=False))
        masks = chanprune.mask(model, x, amount=0.3, side="output", constrained=False)
        exported = chanprune.export(model, x, method="reorder")
    assert share >= min_share, share
    assert sum(len(v) for v in masks.values()) > 0
    x2 = torch.randn(3, 3, size, size)  # fresh values, another batch size
    with torch.no_grad():
        ref, got = model(x2), exported(x2)
    assert outputs_match(ref, got), float((ref - got).abs().max())
    assert chanprune.count_params(exported) < 0.9 * chanprune.count_params(model)
    assert np.isfinite(float(got.abs().max()))
