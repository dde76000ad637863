"""The report's top-1 view (``chanprune.report.frontier``): each contender masked from the
original weights at each latency target, recalibrated and scored; the model left as it was.
Nothing here checks a timing: the measured ratios are only read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chanprune.evaluation.accuracy import evaluate
from chanprune.report.frontier import accuracy_view, contenders


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


def test_view_masks_each_contender_recalibrates_and_leaves_the_model_as_it_was():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    images = [(torch.randn(3, 16, 16, generator=g), int(i % 10)) for i in range(40)]
    calibration = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
    x = torch.randn(1, 3, 16, 16, generator=g)
    view = accuracy_view(net, x, [0.8], calibration, images, "tiny", batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert view.unpruned_top1 == pytest.approx(evaluate(net, images, batch_size=16).top1)
    assert (view.images, view.calibration_images, view.dataset) == (40, 16, "tiny")
    assert [p.contender for p in view.points] == list(contenders("l1"))
    for p in view.points:
        assert p.target == 0.8
        if p.top1 is None:  # out of reach: the note says why
            assert p.ratio is None and p.note
        else:
            assert 0.0 <= p.top1 <= 100.0 and 0.0 < p.ratio <= 1.5
