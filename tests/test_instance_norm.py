"""InstanceNorm is channelwise: each channel normalised by its own statistics (RAFT's encoders)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from helpers import outputs_match


class Net(nn.Module):
    def __init__(self, affine: bool, track: bool):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm2d(8, affine=affine, track_running_stats=track)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.norm(self.a(x))))


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track", [False, True])
def test_instance_norm_keeps_channels_prunable_and_exact(affine, track):
    torch.manual_seed(0)
    model = Net(affine, track).eval()
    with torch.no_grad():
        if track:
            model.norm.running_mean.uniform_(-1, 1)
            model.norm.running_var.uniform_(0.5, 2)
        if affine:
            model.norm.weight.uniform_(0.5, 2)
            model.norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier
        analyze(capture(model, x))
    chanprune.apply_masks(model, x, {"a.weight": [0, 1, 2]})
    exported = chanprune.export(model, x)
    x3 = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert outputs_match(model(x3), exported(x3))
    # running statistics without an affine turn a zero channel into -mean/std: it stays;
    # with the affine, the mask zeroes its weight and bias too (as for BatchNorm)
    kept = 8 if track and not affine else 5
    assert exported.get_parameter("a.weight").shape[0] == kept
    for side in ("output", "input"):
        m = Net(affine, track).eval()
        chanprune.mask(m, x, amount=0.5, side=side)
        e = chanprune.export(m, x)
        with torch.no_grad():
            assert outputs_match(m(x3), e(x3))
