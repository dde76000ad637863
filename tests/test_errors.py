"""Bad input gets a clear error naming the culprit, and the user's model is left as it was."""

import pytest
import torch
from torch import nn

import chanprune
from chanprune import CaptureError, ExportError, InputError, MaskError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, "0.3"])
def test_amount_out_of_range(amount):
    model = Net()
    state = snapshot(model)
    with pytest.raises(InputError, match="amount"):
        chanprune.mask(model, X, amount=amount)
    assert unchanged(model, state)


def test_unknown_heuristic_lists_the_known_ones():
    with pytest.raises(InputError, match=r"'l3'.*l1, l2, lamp, fpgm, hrank"):
        chanprune.mask(Net(), X, heuristic="l3")


@pytest.mark.parametrize("kw", [dict(scope="everywhere"), dict(side="both")])
def test_unknown_scope_or_side(kw):
    with pytest.raises(InputError, match=next(iter(kw.values()))):
        chanprune.mask(Net(), X, **kw)


def test_unknown_export_method():
    with pytest.raises(InputError, match="'fastest'"):
        chanprune.export(Net(), X, method="fastest")


@pytest.mark.parametrize("quantum", [0, -8, 2.5, True, "8"])
def test_group_quantum_must_be_a_positive_integer(quantum):
    for call in (chanprune.export, chanprune.plan):
        with pytest.raises(
            InputError, match=f"group_quantum must be a positive integer, got {quantum!r}"
        ):
            call(Net(), X, group_quantum=quantum)


def test_wrong_input_shape_names_the_shape():
    model = Net()
    state = snapshot(model)
    with pytest.raises(InputError, match=r"\(2, 4, 8, 8\)"):
        chanprune.mask(model, torch.randn(2, 4, 8, 8))
    with pytest.raises(InputError, match=r"\(2, 4, 8, 8\)"):
        chanprune.export(model, torch.randn(2, 4, 8, 8))
    assert unchanged(model, state)


def test_inputs_that_are_not_tensors():
    with pytest.raises(InputError, match="example_inputs"):
        chanprune.mask(Net(), [1, 2, 3])


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # control flow on data: torch.export cannot capture it
            return y
        return -y


def test_model_that_cannot_be_captured():
    model = DataDependent()
    state = snapshot(model)
    with pytest.raises(CaptureError, match="DataDependent"):
        chanprune.mask(model, X)
    assert unchanged(model, state)


def test_masks_naming_unknown_parameters_suggest_close_names():
    model = Net()
    state = snapshot(model)
    with pytest.raises(MaskError, match=r"'conv.wieght'.*did you mean conv.weight"):
        chanprune.apply_masks(model, X, {"conv.wieght": [0]})
    with pytest.raises(MaskError, match=r"channel 99"):
        chanprune.apply_masks(model, X, {"conv.weight": [0, 99]})
    assert unchanged(model, state)  # nothing was zeroed: validation comes first


def test_not_a_module():
    with pytest.raises(InputError, match=r"nn\.Module"):
        chanprune.mask(lambda x: x, X)


def test_export_error_names_the_diverging_node(monkeypatch):
    """Break the rewriter on purpose: the check must catch it and say where."""
    from chanprune.analysis.rules import channelwise

    model = Net().eval()
    chanprune.mask(model, X, amount=0.5)
    original = channelwise.BatchNorm.scale_shift

    def wrong(self, node, lv):
        scale, shift = original(self, node, lv)
        return scale, shift & False  # pretend BN shifts are zero: drops live channels

    with torch.no_grad():
        model.conv.weight[0] = 0  # a zero filter whose BN shift keeps channel 0 alive
        model.conv.bias[0] = 0
        model.bn.weight[0], model.bn.bias[0] = 1.0, 0.5
        model.fc.weight[:, 0] = 1.0
    monkeypatch.setattr(channelwise.BatchNorm, "scale_shift", wrong)
    with pytest.raises(ExportError, match=r"first diverging node: bn"):
        chanprune.export(model, X)


def test_an_interrupted_mask_puts_back_what_it_had_zeroed(monkeypatch):
    """mask() zeroes all or nothing, saving only the slices it zeroes (not a model copy)."""
    from chanprune.masking import masks as masking

    model = Net()
    state = snapshot(model)
    calls = []
    real = torch.Tensor.index_fill_

    def flaky(self, dim, index, value):
        calls.append(dim)
        if len(calls) == 3:  # weight and bias rows zeroed, then the BatchNorm fails
            raise KeyboardInterrupt
        return real(self, dim, index, value)

    monkeypatch.setattr(torch.Tensor, "index_fill_", flaky)
    with pytest.raises(KeyboardInterrupt):
        masking.mask(model, X, amount=0.5)
    assert len(calls) == 3
    assert unchanged(model, state)
    monkeypatch.undo()
    zeroed = chanprune.mask(model, X, amount=0.5)
    assert zeroed and not unchanged(model, state)
