"""Transposed convolutions are producers and consumers (UNet decoders, generators): their
weight holds the channels as (in, out, ...); depthwise ones are channelwise."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis import analyze
from chanprune.analysis.share import prunable_share
from chanprune.capture import capture
from helpers import outputs_match


class UNet(nn.Module):
    """Two levels: conv encoder, a transposed conv up, a skip concatenation, a conv decoder."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        u = torch.relu(self.up(self.enc2(e1)))
        return self.out(self.dec(torch.cat([u, e1], dim=1)))


class Generator(nn.Module):
    """ConvTranspose1d/3d and a depthwise transposed conv, as in audio and video decoders."""

    def __init__(self, dims: int):
        super().__init__()
        conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims]
        convt = {1: nn.ConvTranspose1d, 3: nn.ConvTranspose3d}[dims]
        self.stem = conv(4, 16, 3, padding=1)
        self.up = convt(16, 16, 2, stride=2)
        self.dw = convt(16, 16, 3, padding=1, groups=16)
        self.head = conv(16, 3, 1)

    def forward(self, x):
        return self.head(torch.relu(self.dw(torch.relu(self.up(torch.relu(self.stem(x)))))))


def _masked_export(model, x, side, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier, no low-share warning
        masks = chanprune.mask(model, x, amount=0.5, side=side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = chanprune.export(model, x, method=method)
    return masks, exported


@pytest.mark.parametrize("method", ["reorder", "baseline"])
@pytest.mark.parametrize("side", ["output", "input"])
def test_a_unet_decoder_prunes_through_its_transposed_conv(side, method):
    torch.manual_seed(0)
    model, x = UNet().eval(), torch.randn(2, 3, 16, 16)
    masks, exported = _masked_export(model, x, side, method)
    assert "up.weight" in masks
    up = exported.get_parameter("up.weight")
    assert up.shape[0] < 32 or up.shape[1] < 16  # (in, out, kH, kW) lost channels
    with torch.no_grad():
        y = torch.randn(3, 3, 16, 16)
        assert outputs_match(model(y), exported(y))


def test_a_unet_is_fully_prunable():
    model, x = UNet().eval(), torch.randn(1, 3, 16, 16)
    share = prunable_share(analyze(capture(model, (x,)), warn=False))
    assert share.prunable == share.total == 16 + 32 + 16 + 16  # all but the output layer


@pytest.mark.parametrize("dims", [1, 3])
def test_transposed_1d_3d_and_depthwise_prune_exactly(dims):
    torch.manual_seed(0)
    model = Generator(dims).eval()
    x = torch.randn(2, 4, *([8] * dims))
    masks, exported = _masked_export(model, x, "output", "reorder")
    assert {"stem.weight", "up.weight"} <= set(masks)
    assert exported.get_parameter("dw.weight").shape[0] < 16  # depthwise follows its input
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))


def test_output_side_masks_zero_the_transposed_weights_columns():
    torch.manual_seed(0)
    model, x = UNet().eval(), torch.randn(2, 3, 16, 16)
    chanprune.apply_masks(model, x, {"up.weight": [0, 3]})
    w = model.up.weight
    assert (w[:, [0, 3]] == 0).all() and (model.up.bias[[0, 3]] == 0).all()
    assert (w[:, 1] != 0).any()


def test_the_spec_round_trip_rebuilds_transposed_weights(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    model, x = UNet().eval(), torch.randn(2, 3, 16, 16)
    _, exported = _masked_export(model, x, "output", "reorder")
    chanprune.save_pruned(exported, model, x, tmp_path / "u.json")
    torch.manual_seed(1)
    again = chanprune.load_pruned(UNet().eval(), tmp_path / "u.json")
    with torch.no_grad():
        assert outputs_match(exported(x), again(x))


def test_a_grouped_transposed_conv_is_a_named_barrier_and_stays_exact():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(16, 16, 2, 2, groups=2)
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chanprune.mask(model, x, amount=0.5)
        exported = chanprune.export(model, x)
    assert any("with 2 groups (not depthwise)" in str(w.message) for w in caught)
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))


def test_the_reports_layer_table_reads_transposed_weights_as_in_out():
    import copy

    from chanprune.report.collect import _layers

    torch.manual_seed(0)
    model, x = UNet().eval(), torch.randn(2, 3, 16, 16)
    unpruned = copy.deepcopy(model)
    chanprune.apply_masks(model, x, {"up.weight": [0, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = chanprune.export(model, x)
    up = next(layer for layer in _layers(unpruned, exported) if layer.name == "up")
    assert (up.out_total, up.out_kept, up.in_total, up.in_kept) == (16, 14, 32, 32)
