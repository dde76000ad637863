"""Taylor importance (``heuristic="taylor"``): the squared first-order loss change of zeroing a
unit's entries, on the model's own predictions, comparable across layers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import chanprune
from chanprune import InputError
from chanprune.analysis import analyze
from chanprune.capture import capture
from chanprune.evaluation.recovery import recalibrate
from chanprune.masking.masks import _edits, _score, _units
from chanprune.masking.mixed import importance
from chanprune.masking.taylor import TaylorScorer, taylor_scores


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        return self.fc(torch.relu(self.c2(h)).mean((2, 3)))


def _net() -> Net:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # non-trivial BatchNorm parameters and statistics
        net.b1.weight.uniform_(0.5, 1.5)
        net.b1.bias.uniform_(-0.5, 0.5)
        net.b1.running_mean.uniform_(-0.2, 0.2)
    return net.eval()


BATCHES = [(torch.randn(4, 3, 6, 6),), (torch.randn(4, 3, 6, 6),)]


def _by_hand(net, an, units, side, labels):
    """The gradient of the loss against ``labels`` times each entry a unit zeroes, summed per
    unit, squared, averaged over the batches."""
    want = [0.0] * len(units)
    params = dict(net.named_parameters())
    for (x,), y in zip(BATCHES, labels, strict=True):
        loss = F.cross_entropy(net(x), y)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
        for k, u in enumerate(units):
            first = 0.0
            for t, dim, idx in _edits(an, [u], side)[1]:
                name = next(n for n, p in params.items() if p.data_ptr() == t.data_ptr())
                sel = torch.as_tensor(idx)
                first += float((grads[name] * params[name].detach()).index_select(dim, sel).sum())
            want[k] += first**2 / len(BATCHES)
    return want


@pytest.mark.parametrize("side", ["output", "input"])
def test_scores_are_the_squared_first_order_loss_change_of_each_unit(side):
    net = _net()
    an = analyze(capture(net, BATCHES[0]))
    units = _units(an, side)
    got = taylor_scores(net, an, units, side, BATCHES, {}, _edits)
    labels = [net(x).argmax(1) for (x,) in BATCHES]  # the model's own predictions
    want = _by_hand(net, an, units, side, labels)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-12)
    if side == "output":  # the BatchNorm entries after a filter count with it
        assert any(len(_edits(an, [u], side)[1]) == 4 for u in units if u.param == "c1.weight")


def test_rescoring_is_against_the_first_labels_with_recalibrated_statistics():
    """A partly masked model is scored as it runs once recalibrated, against what the model
    predicted when the scorer was made; its own statistics are put back afterwards."""
    net = _net()
    with torch.no_grad():  # logits that depend on the input, so a mask moves the argmax
        net.fc.weight.mul_(20)
        net.fc.bias.zero_()
    an = analyze(capture(net, BATCHES[0]))
    units = _units(an, "output")
    labels = [net(x).argmax(1) for (x,) in BATCHES]
    scorer = TaylorScorer(net, an, units, "output", _edits, BATCHES, {})
    with torch.no_grad():
        net.c1.weight[:3] = 0  # a mask: the rows and the BatchNorm entries after them
        net.c1.bias[:3] = 0
        net.b1.weight[:3] = 0
        net.b1.bias[:3] = 0
    moved = [not torch.equal(net(x).argmax(1), y) for (x,), y in zip(BATCHES, labels, strict=True)]
    assert any(moved)  # the masked model's own argmax is not the reference
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = scorer(recalibrate=True)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    ref = copy.deepcopy(net)
    recalibrate(ref, [x for (x,) in BATCHES])
    assert not torch.equal(ref.b1.running_mean, net.b1.running_mean)
    want = _by_hand(ref, analyze(capture(ref, BATCHES[0])), units, "output", labels)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-12)
    plain = scorer()  # without recalibration: the statistics of the unmasked model
    assert plain == pytest.approx(_by_hand(net, an, units, "output", labels), rel=1e-5, abs=1e-12)
    assert plain != pytest.approx(got, rel=1e-3)


def test_scoring_leaves_grads_and_modes_as_they_were():
    net = _net()
    net.train()
    net.b1.eval()
    marker = torch.full_like(net.c1.weight, 7.0)
    net.c1.weight.grad = marker.clone()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    an = analyze(capture(copy.deepcopy(net).eval(), BATCHES[0]))
    units = _units(an, "output")
    taylor_scores(net, an, units, "output", BATCHES, {}, _edits)
    assert torch.equal(net.c1.weight.grad, marker) and net.c2.weight.grad is None
    assert net.training and not net.b1.training and net.c1.training
    after = net.state_dict()  # eval mode while scoring: BatchNorm statistics untouched
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mixed_masks_do_not_normalise_comparable_scores():
    net = _net()
    an = analyze(capture(net, BATCHES[0]))
    units = _units(an, "output")
    _score(net, units, an, "taylor", "output", (BATCHES[0], {}), BATCHES)
    plain, comparable = importance(units), importance(units, comparable=True)
    c1 = [i for i, u in enumerate(units) if u.param == "c1.weight"]
    lowest = min(c1, key=lambda i: (units[i].score, units[i].channel))
    assert comparable[lowest] == pytest.approx(units[lowest].score)  # k = 0: the score itself
    mean = sum(units[i].score for i in c1) / len(c1)
    assert plain[lowest] == pytest.approx(units[lowest].score / mean)


@pytest.mark.parametrize("constrained", [False, True, "mixed"])
def test_taylor_masks_export_exactly(constrained):
    net = _net()
    x = torch.randn(2, 3, 6, 6)
    got = chanprune.mask(
        net,
        x,
        amount=0.4,
        heuristic="taylor",
        calibration=[b[0] for b in BATCHES],
        constrained=constrained,
    )
    assert sum(map(len, got.values())) > 0
    exp = chanprune.export(net, x)
    torch.testing.assert_close(exp(x), net(x))


def test_taylor_needs_class_logits():
    class Dicty(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)
            self.d = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return {"out": self.d(torch.relu(self.c(x)))}

    with pytest.raises(InputError, match=r"heuristic='taylor'.*class logits.*dict.*l1"):
        chanprune.mask(Dicty().eval(), torch.randn(2, 3, 4, 4), heuristic="taylor")


def test_a_frozen_model_is_scored_and_stays_frozen():
    net = _net().requires_grad_(False)
    x = torch.randn(2, 3, 6, 6)
    chanprune.mask(net, x, amount=0.4, heuristic="taylor", calibration=[b[0] for b in BATCHES])
    assert not any(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(chanprune.export(net, x)(x), net(x))


def test_rescoring_refuses_single_sample_batches_it_cannot_recalibrate_on():
    """Mixed masks rescore with BatchNorm statistics recomputed on the calibration batches; a
    BatchNorm1d cannot compute them from one sample, and the error says what to pass."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)
    ).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ones = [torch.randn(1, 6) for _ in range(2)]
    with pytest.raises(InputError, match=r"taylor.*BatchNorm statistics.*2 or more samples"):
        chanprune.mask(
            net,
            torch.randn(4, 6),
            amount=0.5,
            heuristic="taylor",
            calibration=ones,
            constrained="mixed",
        )
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    got = chanprune.mask(
        net,
        torch.randn(4, 6),
        amount=0.5,
        heuristic="taylor",
        calibration=[torch.randn(4, 6)],
        constrained="mixed",
    )
    assert sum(map(len, got.values())) > 0
