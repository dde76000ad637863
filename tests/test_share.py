"""Saying when little is pruned: the prunable share, its causes, and the grouped barrier warning."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis import analyze
from chanprune.analysis.share import prunable_share
from chanprune.capture import capture


class Blind(nn.Module):
    """A layer written as an einsum with its weight: no producer rule reads it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 64) * 0.1)
        self.head = nn.Linear(64, 4)

    def forward(self, x):
        return self.head(torch.relu(torch.einsum("bsi,io->bso", x, self.w)))


class CumsumBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return torch.cumsum(self.conv(x), dim=1)  # an op without a channel rule


class Cumsums(nn.Module):
    """Seven blocks, each a conv then an op without a rule (cumsum over channels)."""

    def __init__(self, n: int = 7):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(CumsumBlock() for _ in range(n))

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return x.mean((2, 3))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


def _mask_warnings(model, x) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chanprune.mask(model, x, amount=0.3)
    return [str(w.message) for w in caught if str(w.message).startswith("chanprune")]


def test_layers_without_a_producer_rule_are_named_not_silently_skipped():
    said = _mask_warnings(Blind().eval(), torch.randn(2, 5, 16))
    low = [m for m in said if m.startswith("chanprune: only")]
    assert len(low) == 1, said
    assert "0 of 64 conv/linear output channels" in low[0] and "<top> (einsum of w)" in low[0]


def test_barriers_pinning_most_channels_are_named_with_their_modules():
    said = _mask_warnings(Cumsums().eval(), torch.randn(1, 3, 8, 8))
    low = next(m for m in said if m.startswith("chanprune: only"))
    assert "no channel rule for cumsum.default" in low and "blocks.6" in low


def test_the_barrier_warning_lists_every_module_grouped_by_reason():
    """Seven barrier ops of one kind: one line for the reason, all seven modules on it (the
    warning used to stop after five ops)."""
    said = _mask_warnings(Cumsums().eval(), torch.randn(1, 3, 8, 8))
    barrier = next(m for m in said if "are barriers" in m)
    (line,) = [li for li in barrier.splitlines() if "cumsum" in li]
    assert "(7 ops)" in line and all(f"blocks.{i}" in line for i in range(7))


def test_a_plain_cnn_is_fully_prunable_and_mask_says_nothing():
    model, x = Small().eval(), torch.randn(1, 3, 8, 8)
    share = prunable_share(analyze(capture(model, (x,)), warn=False))
    assert (share.prunable, share.total) == (32, 32) and share.causes == []
    assert _mask_warnings(model, x) == []


@pytest.mark.parametrize("model", [Blind, Cumsums])
def test_the_share_counts_what_mask_can_reach(model):
    m = model().eval()
    x = torch.randn(2, 5, 16) if model is Blind else torch.randn(1, 3, 8, 8)
    share = prunable_share(analyze(capture(m, (x,)), warn=False))
    assert share.fraction < 0.5 and share.causes
