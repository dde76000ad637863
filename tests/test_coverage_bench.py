"""benchmarks/coverage.py's beyond zoo reads the pruned share off the export's parameter shapes."""

from __future__ import annotations

from torch import nn

from helpers import load_benchmark


def _coverage():
    return load_benchmark("coverage")


class Layers(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)  # weight (in, out, ...)
        self.dw_up = nn.ConvTranspose2d(width, width, 2, stride=2, groups=width)  # (out, 1, ...)
        self.fc = nn.Linear(width, width)
        self.head = nn.Sequential(nn.Linear(width, 4))


def test_each_layer_kind_is_read_along_its_output_dim():
    dims = _coverage()._layer_dims(Layers(), None)
    assert dims == {
        "conv.weight": 0,
        "up.weight": 1,
        "dw_up.weight": 0,
        "fc.weight": 0,
        "head.0.weight": 0,
    }
    assert _coverage()._layer_dims(Layers(), ["head"]) == {"head.0.weight": 0}


def test_the_removed_share_counts_output_channels_only():
    coverage, model = _coverage(), Layers(8)
    smaller = Layers(6)  # stands in for an export: same names, 6 of 8 channels kept
    smaller.head = nn.Sequential(nn.Linear(6, 4))  # the final layer keeps its 4 outputs
    share = coverage.removed_share(model, smaller, coverage._layer_dims(model, None))
    assert share == 1 - (4 * 6 + 4) / (4 * 8 + 4)
    assert coverage.removed_share(model, model, coverage._layer_dims(model, None)) == 0
    assert coverage.removed_share(model, smaller, {}) is None
