"""benchmarks/coverage.py's beyond zoo reads the pruned share off the export's parameter shapes."""

from __future__ import annotations

import pytest
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


@pytest.mark.slow  # builds every model of the zoo
def test_the_zoo_names_dynamic_dims_and_keywords_by_the_forward_arguments():
    """dynamic_shapes= and example_kwargs= are keyed by argument name, which differ between
    models (x, input, images, input_ids, sample ...): a wrong one only shows in a run."""
    import inspect

    for case in load_benchmark("beyond_zoo").cases():
        if not case.available():
            continue
        forward = inspect.signature(case.build().forward).parameters
        assert set(case.dynamic) <= set(forward), case.name
        if case.keywords:
            assert set(case.keywords(2, False)) <= set(forward), case.name
