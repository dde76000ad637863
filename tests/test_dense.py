"""Dense segments (``export(method="dense")``): no run-time channel copy at all, exact on
hand-built residual nets and on fuzzed networks, and never fewer MACs than ``reorder``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import chanprune
from chanprune import fuzz
from chanprune.evaluation.stats import count_macs
from chanprune.fuzz import RandomDraw, draw_case
from chanprune.latency.trace import op_trace

COPIES = ("index", "gather", "constant_pad", "scatter", "slice", "cat")


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        s = s + self.bn(self.a(s))
        s = torch.relu(s + self.b(s))
        return self.head(s)


def copies(module: nn.Module, x: torch.Tensor) -> list[str]:
    return [c.op for c in op_trace(module, x) if any(k in c.op for k in COPIES)]


@pytest.mark.parametrize("side", ["output", "input"])
def test_dense_export_has_no_copies_and_is_exact(side):
    torch.manual_seed(0)
    model = Residual().eval()
    for p in model.bn.parameters():
        nn.init.uniform_(p, 0.5, 1.5)
    x = torch.randn(2, 3, 12, 12)
    chanprune.mask(model, x, amount=0.4, side=side)
    want = model(x)
    reorder = chanprune.export(model, x)
    dense = chanprune.export(model, x, method="dense")  # checks itself; compare anyway
    torch.testing.assert_close(dense(x), want, rtol=1e-4, atol=1e-5)
    assert copies(reorder, x)  # unconstrained masks make the reorder export copy
    assert copies(dense, x) == []
    assert count_macs(reorder, x) <= count_macs(dense, x) < count_macs(model, x)


def test_dense_stream_width_is_the_union():
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():  # hand-zeroed rows: stem keeps 0-9, a keeps 4-13, b keeps 0-15
        model.stem.weight[10:] = 0
        model.stem.bias[10:] = 0
        model.a.weight[:4] = 0
        model.a.bias[:4] = 0
        model.a.weight[14:] = 0
        model.a.bias[14:] = 0
        model.bn.weight[:4] = 0
        model.bn.bias[:4] = 0
        model.bn.weight[14:] = 0
        model.bn.bias[14:] = 0
    dense = chanprune.export(model, x, method="dense", width_quantum=1)
    outs = sorted(
        p.shape[0] for n, p in dense.named_parameters() if p.dim() == 4 and p.shape[0] != 8
    )
    assert outs == [16, 16, 16]  # the union of 0-9, 4-13 and the whole of b: every channel


def test_dense_and_auto_on_fuzzed_networks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(40):
            case = draw_case(RandomDraw(seed), 8, 2, extra=True)
            outcomes = fuzz.run_case(case, methods=("dense", "auto"))
            for ms, out in zip(case.masksets, outcomes, strict=True):
                assert out.ok, (seed, ms, out.log, out.results)


def test_auto_lies_between_reorder_and_dense():
    """Unconstrained masks: auto's MACs lie between reorder's and dense's."""
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(1, 3, 8, 8)
    chanprune.mask(model, x, amount=0.4)
    exports = [chanprune.export(model, x, method=m) for m in ("reorder", "auto", "dense")]
    macs = [count_macs(m, x) for m in exports]
    assert macs[0] <= macs[1] <= macs[2]


def test_growth_is_zero_where_every_layer_keeps_the_same_channels():
    """Constrained masks: dense adds nothing to any segment, so auto goes dense everywhere
    and copies nothing; a hand-widened union shows up as growth."""
    from chanprune.analysis.propagate import analyze
    from chanprune.capture.trace import capture
    from chanprune.liveness.dense import growth
    from chanprune.liveness.flow import liveness

    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(1, 3, 8, 8)
    chanprune.mask(model, x, amount=0.4, constrained=True)
    lv = liveness(analyze(capture(model, (x,))))
    an = lv.analysis
    for seg in an.segments():
        kept = np.zeros(len(an.root), dtype=bool)
        for n in an.capture.graph.nodes:
            ax = an.axes.get(n.name)
            if hasattr(ax, "ids") and isinstance(lv.demand.get(n.name), np.ndarray):
                kept[an.root[ax.ids[lv.kept(n)]]] = True
        assert growth(lv, seg, seg[kept[seg]]) == pytest.approx(0.0)
        assert growth(lv, seg, seg) >= 0.0
    assert copies(chanprune.export(model, x, method="auto"), x) == []
