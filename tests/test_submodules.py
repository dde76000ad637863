"""Pruning the traceable parts of a model that torch.export cannot capture whole."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.rewrite.verify import compare
from helpers import outputs_match


class Detector(nn.Module):
    """A backbone and a box head around data-dependent post-processing (boolean indexing and a
    Python branch on its result), which torch.export refuses."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )  # fmt: skip
        self.box_head = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 5))
        self.backbone.out_channels = 32  # read by the code around it, as torchvision does

    def forward(self, images):
        feats = self.backbone(images).mean((2, 3))
        scores = self.box_head(feats)
        keep = scores[:, 0] > -1e9  # data-dependent selection
        if int(keep.sum()) > 0:
            return scores[keep]
        return scores[:0]


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def test_the_capture_error_names_the_line_and_the_children():
    with pytest.raises(chanprune.CaptureError) as e:
        _quiet(chanprune.mask, Detector().eval(), torch.randn(2, 3, 8, 8))
    msg = str(e.value)
    assert "test_submodules.py:" in msg  # the untraceable line of the model's code
    assert "submodules=" in msg and "backbone" in msg and "box_head" in msg


@pytest.mark.parametrize("method", ["reorder", "baseline"])
def test_named_submodules_are_pruned_and_the_model_runs_end_to_end(method):
    torch.manual_seed(0)
    model, x = Detector().eval(), torch.randn(2, 3, 8, 8)
    parts = ["backbone", "box_head"]
    masks = _quiet(chanprune.mask, model, x, amount=0.5, submodules=parts)
    # each part's own outputs are what the code around it reads: never pruned
    assert set(masks) == {"backbone.0.weight", "box_head.0.weight"}
    pruned = _quiet(chanprune.export, model, x, method=method, submodules=parts)
    assert type(pruned) is Detector and pruned is not model
    assert isinstance(pruned.backbone, torch.fx.GraphModule)
    assert pruned.backbone.out_channels == 32  # plain attributes survive the swap
    assert chanprune.count_params(pruned) < chanprune.count_params(model)
    assert isinstance(model.backbone, nn.Sequential)  # the user's model is left alone
    y = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert outputs_match(model(y), pruned(y))


def test_bad_submodule_names_are_clear_errors():
    model, x = Detector().eval(), torch.randn(2, 3, 8, 8)
    with pytest.raises(chanprune.InputError, match="not a submodule of Detector"):
        chanprune.mask(model, x, submodules=["neck"])
    with pytest.raises(chanprune.InputError, match="overlap"):
        chanprune.mask(model, x, submodules=["backbone", "backbone.0"])
    with pytest.raises(chanprune.InputError, match="non-empty list"):
        chanprune.mask(model, x, submodules="backbone")


class TwoInputsByKeyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return nn.functional.linear(x, self.inner.weight, bias=self.inner.bias) + self.inner(
            input=x
        )


def test_a_submodule_called_with_keywords_is_refused_by_name():
    with pytest.raises(chanprune.InputError, match="'inner' is called with"):
        chanprune.mask(TwoInputsByKeyword().eval(), torch.randn(2, 4), submodules=["inner"])


class Shared(nn.Module):
    """One head applied to two feature maps of different sizes, and one never called."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        self.unused = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f = self.stem(x)
        return self.head(f).mean((2, 3)) + self.head(f[:, :, ::2, ::2]).mean((2, 3))


def test_parts_that_cannot_be_exported_alone_are_refused_by_name():
    model, x = Shared().eval(), torch.randn(2, 3, 8, 8)
    with pytest.raises(chanprune.InputError, match="'head' is called 2 times with inputs of"):
        chanprune.mask(model, x, submodules=["head"])
    with pytest.raises(chanprune.InputError, match="'unused' is never called"):
        chanprune.mask(model, x, submodules=["unused"])
    with pytest.raises(chanprune.InputError, match="calibration batches"):
        chanprune.mask(model, x, heuristic="hrank", calibration=[x], submodules=["stem"])


@pytest.mark.slow
def test_a_torchvision_detector_prunes_its_frozen_bn_backbone_and_runs_end_to_end():
    """Faster R-CNN (FrozenBatchNorm2d in its ResNet body, as with pretrained backbones): the
    backbone and the box head are pruned, post-processing runs unchanged, outputs equal."""
    pytest.importorskip("torchvision")
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=5
    )
    model = FasterRCNN(backbone, num_classes=5, min_size=128, max_size=128).eval()
    for m in model.modules():  # FrozenBN holds identity statistics: give it some to zero
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 128, 128)
    parts = ["backbone", "roi_heads.box_head"]
    masks = _quiet(chanprune.mask, model, x, amount=0.3, submodules=parts)
    convs = [m for n, m in model.backbone.body.named_modules() if isinstance(m, nn.Conv2d)]
    body = sum(len(v) for k, v in masks.items() if k.startswith("backbone.body."))
    assert body >= 0.25 * sum(c.out_channels for c in convs)  # FrozenBN no longer pins it
    pruned = _quiet(chanprune.export, model, x, submodules=parts)
    assert chanprune.count_params(pruned) < chanprune.count_params(model)
    with torch.no_grad():
        got, want = pruned(x), model(x)
    assert compare(want, got).ok  # boxes, labels and scores of both images
