"""``addmm(bias, x, W)`` with a parameter ``W`` of shape (in, out) is a linear layer: GPT-2's
``Conv1D`` (it pruned nothing before, silently)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from helpers import outputs_match


class Conv1D(nn.Module):
    """GPT-2's layer: a linear written as ``addmm`` with a transposed weight."""

    def __init__(self, nx: int, nf: int, beta: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)
        self.beta = beta

    def forward(self, x):
        flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight, beta=self.beta)
        return flat.view(*x.shape[:-1], -1)


class Block(nn.Module):
    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.inp = nn.Linear(16, 24)
        self.fc = Conv1D(24, 64, beta)
        self.proj = Conv1D(64, 24)
        self.head = nn.Linear(24, 4)

    def forward(self, x):
        h = self.inp(x)
        return self.head(h + self.proj(torch.relu(self.fc(h))))


@pytest.mark.parametrize("method", ["reorder", "baseline"])
@pytest.mark.parametrize("side", ["output", "input"])
def test_conv1d_layers_prune_exactly(side, method):
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(2, 5, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier, no low-share warning
        masks = chanprune.mask(model, x, amount=0.5, side=side)
    assert {"fc.weight", "proj.weight"} & set(masks)
    exported = chanprune.export(model, x, method=method)
    assert chanprune.count_params(exported) < chanprune.count_params(model)
    w = exported.get_parameter("fc.weight")
    assert w.shape[0] < 24 or w.shape[1] < 64  # the (in, out) weight lost rows or columns
    y = torch.randn(3, 5, 16)  # another batch
    with torch.no_grad():
        assert outputs_match(model(y), exported(y))


def test_output_side_masks_zero_weight_columns_and_bias():
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(2, 5, 16)
    masks = chanprune.apply_masks(model, x, {"fc.weight": [1, 5]})
    assert masks == {"fc.weight": [1, 5]}
    assert (model.fc.weight[:, [1, 5]] == 0).all() and (model.fc.bias[[1, 5]] == 0).all()
    assert (model.fc.weight[:, 0] != 0).all()
    exported = chanprune.export(model, x)
    assert exported.get_parameter("fc.weight").shape == (24, 62)
    assert exported.get_parameter("proj.weight").shape == (62, 24)


def test_the_spec_round_trip_rebuilds_a_conv1d_model(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(2, 5, 16)
    chanprune.mask(model, x, amount=0.5)
    exported = chanprune.export(model, x)
    chanprune.save_pruned(exported, model, x, tmp_path / "m.json")
    torch.manual_seed(1)  # other weights: everything must come from the saved tensors
    again = chanprune.load_pruned(Block().eval(), tmp_path / "m.json")
    with torch.no_grad():
        assert outputs_match(exported(x), again(x))


def test_a_scaled_addmm_stays_whole_and_exact():
    """beta != 1 scales the bias: not a plain linear, so a barrier (named), still exact."""
    torch.manual_seed(0)
    model, x = Block(beta=0.5).eval(), torch.randn(2, 5, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = chanprune.mask(model, x, amount=0.5)
    assert "fc.weight" not in masks
    assert any("scales its terms" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = chanprune.export(model, x)
    assert exported.get_parameter("fc.weight").shape[1] == 64
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))
