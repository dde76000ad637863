"""A layer called several times (a siamese encoder, a recurrent update block, RAFT) has one
weight: its calls are tied, so they keep the same rows and read the same columns."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from helpers import outputs_match


class Siamese(nn.Module):
    """One encoder (conv, BN, conv) applied to two inputs; a head reads both features."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=1),
        )
        self.head = nn.Linear(24, 5)

    def forward(self, a, b):
        fa, fb = self.enc(a).mean((2, 3)), self.enc(b).mean((2, 3))
        return self.head(torch.cat([fa, fb], 1))


class Loop(nn.Module):
    """A recurrent block: the same conv applied three times to a state."""

    def __init__(self):
        super().__init__()
        self.inp, self.step, self.out = (
            nn.Conv2d(3, 8, 1),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Conv2d(8, 2, 1),
        )

    def forward(self, x):
        h = self.inp(x)
        for _ in range(3):
            z = torch.sigmoid(self.step(h))
            h = (1 - z) * h + z * torch.tanh(self.step(h))
        return self.out(h)


def _inputs(cls, n):
    return (
        (torch.randn(n, 3, 8, 8), torch.randn(n, 3, 8, 8))
        if cls is Siamese
        else (torch.randn(n, 3, 8, 8),)
    )


@pytest.mark.parametrize("cls", [Siamese, Loop])
@pytest.mark.parametrize("side", ["output", "input"])
def test_shared_layers_are_no_barrier_and_prune_exactly(cls, side):
    torch.manual_seed(0)
    model = cls().eval()
    x = _inputs(cls, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier
        analyze(capture(model, x))
    chanprune.mask(model, x, amount=0.4, side=side)
    exported = chanprune.export(model, x)
    x3 = _inputs(cls, 3)
    with torch.no_grad():
        assert outputs_match(model(*x3), exported(*x3))
    assert sum(p.numel() for p in exported.parameters()) < sum(
        p.numel() for p in model.parameters()
    )


def test_calls_keep_the_union_of_their_rows():
    """Rows 0-2 of the encoder's last conv are zeroed; the head reads the first call's row 3
    but not the second call's (zeroed by hand: both calls' channel 3 is one channel to the
    masks): the one weight keeps row 3 for both calls, and drops 0-2."""
    model = Siamese().eval()
    x = _inputs(Siamese, 2)
    chanprune.apply_masks(model, x, {"enc.3.weight": [0, 1, 2]})
    with torch.no_grad():
        model.head.weight[:, 12 + 3] = 0
    exported = chanprune.export(model, x)
    assert exported.get_parameter("enc.3.weight").shape[0] == 9
    with torch.no_grad():
        assert outputs_match(model(*x), exported(*x))


def test_a_weight_shared_by_different_ops_stays_a_barrier():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):  # the same weight as a conv and as a linear
            y = self.b(self.a(x))
            return y.mean((2, 3)) + nn.functional.linear(y.mean((2, 3)), self.b.weight[:, :4, 0, 0])

    model = Mixed().eval()
    with pytest.warns(UserWarning, match="computed or shared"):
        analyze(capture(model, torch.randn(2, 3, 4, 4)))
