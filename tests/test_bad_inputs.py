"""The bad-input table (docs/bad_inputs.md): each row's behaviour, pinned by a test.

Rows already covered elsewhere (tests/test_errors.py, test_api.py, test_rules.py) are referenced
from the table instead of repeated here.
"""

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune import InputError, MaskError
from helpers import outputs_match, prune_and_check

X = torch.randn(2, 3, 8, 8)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# non-finite values ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("call", ["mask", "export", "plan"])
def test_non_finite_weights_are_refused_by_name(value, call):
    model = Net().eval()
    with torch.no_grad():
        model.conv.weight[1, 0, 0, 0] = value
    state = snapshot(model)
    fn = {"mask": chanprune.mask, "export": chanprune.export, "plan": chanprune.plan}[call]
    with pytest.raises(InputError, match=r"parameter conv\.weight holds 1 non-finite"):
        fn(model, X)
    assert all(torch.equal(v, state[k]) | torch.isnan(v).any() for k, v in snapshot(model).items())


def test_nan_buffer_is_refused_but_an_infinite_buffer_is_allowed():
    model = Net().eval()
    model.bn.running_var[2] = float("nan")
    with pytest.raises(InputError, match=r"buffer bn\.running_var holds 1 non-finite"):
        chanprune.export(model, X)
    model = Net().eval()
    model.register_buffer("limit", torch.tensor(float("inf")))  # e.g. an attention mask fill
    quiet(prune_and_check, model, X, amount=0.5)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_example_inputs_are_refused(value):
    x = X.clone()
    x[1, 2, 3, 4] = value
    with pytest.raises(InputError, match=r"example_inputs\[0\] holds 1 non-finite"):
        chanprune.mask(Net().eval(), x)


def test_infinite_inputs_at_run_time_give_inf_where_the_masked_model_gives_nan():
    """Documented limit: 0 * inf is NaN in a pruned channel of the masked model, while the
    exported model no longer computes that channel."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 1, 1, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))  # filter 0 pruned
        model[1].weight.fill_(1.0)
    x = torch.rand(2, 1, 4, 4)
    exported = quiet(chanprune.export, model, x)
    assert exported.get_parameter("0.weight").shape[0] == 1
    x[0, 0, 1, 1] = float("inf")
    with torch.no_grad():
        ref, got = model(x), exported(x)
    assert torch.isnan(ref[0, 0, 1, 1]) and torch.isinf(got[0, 0, 1, 1])
    ref[0, 0, 1, 1] = got[0, 0, 1, 1] = 0
    assert outputs_match(ref, got)


# devices and dtypes -----------------------------------------------------------------------------
def test_meta_device_model_is_refused_by_name():
    model = Net().eval().to("meta")
    for fn in (chanprune.mask, chanprune.export):
        with pytest.raises(InputError, match=r"parameter conv\.weight is on the meta device"):
            fn(model, X.to("meta"))


def test_inputs_on_another_device_than_the_model():
    model = Net().eval()
    state = snapshot(model)
    with pytest.raises(InputError, match=r"\(2, 3, 8, 8\).*device"):
        chanprune.mask(model, X.to("meta"))
    assert unchanged(model, state)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_exports_exactly_in_its_dtype(dtype):
    model = Net().eval().to(dtype)
    x = X.to(dtype)
    quiet(chanprune.mask, model, x, amount=0.5)
    for method in ("reorder", "baseline"):
        exported = quiet(chanprune.export, model, x, method=method)
        assert exported.conv.weight.dtype == dtype and exported.conv.weight.shape[0] == 4
        with torch.no_grad():
            assert torch.equal(model(x), exported(x))


def test_model_and_inputs_of_different_dtypes():
    with pytest.raises(InputError, match=r"torch\.float32.*Half"):
        chanprune.export(Net().eval().half(), X)


# model state and structure ----------------------------------------------------------------------
def test_train_mode_dropout_is_exported_in_eval_semantics():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Dropout(0.5), nn.ReLU(), nn.Conv2d(8, 2, 1))
    model.train()
    quiet(chanprune.mask, model, X, amount=0.5)
    exported = quiet(chanprune.export, model, X)
    assert model.training and model[1].training  # flags restored
    with torch.no_grad():
        a, b = exported(X), exported(X)
        assert torch.equal(a, b)  # no dropout noise
        assert outputs_match(model.eval()(X), a)


class Tied(nn.Module):
    """b and c share one weight tensor, with biases of their own."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.c.weight = self.b.weight
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = torch.relu(self.b(torch.relu(self.a(x))))
        return self.fc(torch.relu(self.c(y)).mean((2, 3)))


class Twice(nn.Module):
    """One conv module applied at two places."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = torch.relu(self.b(torch.relu(self.a(x))))
        return self.fc(torch.relu(self.b(y)).mean((2, 3)))


def test_a_module_used_twice_is_pruned_with_its_calls_tied():
    """(No longer a barrier: tests/test_shared_layers.py.) Both calls keep the same rows."""
    model = Twice().eval()
    masks = quiet(chanprune.mask, model, X, amount=0.5)
    assert len(masks["b.weight"]) == 4
    exported, _ = quiet(prune_and_check, model, X)
    assert exported.get_parameter("b.weight").shape[0] < 8


@pytest.mark.parametrize("cls", [Tied])
def test_shared_weights_are_barriers_kept_whole_and_exact(cls):
    model = cls().eval()
    with pytest.warns(UserWarning, match=r"b \(conv2d.*shared with another op"):
        masks = chanprune.mask(model, X, amount=0.5)
    assert "b.weight" not in masks and "c.weight" not in masks
    with pytest.raises(MaskError, match=r"'b\.weight', which is not the weight of a producer"):
        quiet(chanprune.apply_masks, model, X, {"b.weight": [0]})
    with torch.no_grad():  # a hand-zeroed filter of the shared weight stays: exact anyway
        model.b.weight[0] = 0
    exported, _ = quiet(prune_and_check, model, X)
    shapes = [tuple(p.shape) for p in exported.parameters()]
    assert shapes.count((8, 8, 1, 1)) == 1  # kept whole, and still one tensor where tied


# masks at the edges -----------------------------------------------------------------------------
def test_masks_on_the_final_classifier():
    model = Net().eval()
    masks = quiet(chanprune.mask, model, X, amount=0.5)
    assert "fc.weight" not in masks  # model outputs are never candidates
    quiet(chanprune.apply_masks, model, X, {"fc.weight": [0, 2]})  # by hand: allowed
    exported, _ = quiet(prune_and_check, model, X)
    assert exported.fc.weight.shape[0] == 4  # outputs keep their shape (zero rows stay)
    with torch.no_grad():
        assert (exported(X)[:, [0, 2]] == model.fc.bias[[0, 2]]).all()
    model = Net().eval()  # the classifier's input columns are pruned like any consumer's
    quiet(chanprune.apply_masks, model, X, {"fc.weight": [1, 3, 5]}, side="input")
    exported, _ = quiet(prune_and_check, model, X)
    assert exported.fc.weight.shape == (4, 5) and exported.conv.weight.shape[0] == 5


@pytest.mark.parametrize("side", ["output", "input"])
def test_fully_pruned_layer_keeps_one_zero_channel(side):
    model = Net().eval()
    name = "conv.weight" if side == "output" else "fc.weight"
    quiet(chanprune.apply_masks, model, X, {name: list(range(8))}, side=side)
    for method in ("reorder", "baseline"):
        exported, _ = quiet(prune_and_check, model, X, method=method)
        assert exported.conv.weight.shape[0] == 1 and exported.fc.weight.shape == (4, 1)
        zeroed = exported.conv.weight if side == "output" else exported.fc.weight
        assert not zeroed.any()


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.b1 = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.b2 = nn.Conv2d(8, 6, 1)
        self.b3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        z = torch.cat([self.b1(y), self.b2(y)], 1).mean((2, 3))
        return self.fc(z) + self.b3(y).mean((2, 3))[:, :2]


def test_fully_pruned_branch_is_exact_and_its_layers_shrink_to_one_channel():
    model = Branches().eval()
    quiet(chanprune.apply_masks, model, X, {"b1.0.weight": [0, 1, 2, 3]})
    for method in ("reorder", "baseline"):
        exported, _ = quiet(prune_and_check, model, X, method=method)
        # the branch shrinks to one zero channel
        assert exported.get_parameter("b1.0.weight").shape[0] == 1
        assert exported.fc.weight.shape == (2, 6)  # and the classifier reads none of it


class SplitBranch(nn.Module):
    """One half of a split goes through ``op`` alone: pruning that half empties the op's input."""

    def __init__(self, op: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.dw = nn.Conv2d(2, 2, 3, stride=2, padding=1, groups=2, bias=False)
        self.op = op
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a, b = torch.split(self.conv(x), [2, 2], 1)
        b = self.dw(b) if self.op == "depthwise" else nn.functional.max_pool2d(b, 3, 2, 1)
        return self.fc(torch.cat([a.mean((2, 3)), b.mean((2, 3))], 1))


@pytest.mark.parametrize("op", ["depthwise", "max_pool2d"])
@pytest.mark.parametrize(
    "masks, side", [({"conv.weight": [2, 3]}, "output"), ({"fc.weight": [2, 3]}, "input")]
)
def test_fully_pruned_split_branch_keeps_one_channel(masks, side, op):
    """Regression (found by the soaks; analysis/rules/channelwise.py, one_at_least): an op left
    with no channel was emitted on an empty tensor, and the export crashed (a depthwise conv
    with groups=0, max_pool2d on 0 channels)."""
    model = SplitBranch(op).eval()
    quiet(chanprune.apply_masks, model, X, masks, side=side)
    for method in ("reorder", "baseline"):
        exported, _ = quiet(prune_and_check, model, X, method=method)
        assert exported.fc.weight.shape == (3, 2)
        if op == "depthwise":
            assert exported.get_parameter("dw.weight").shape == (1, 1, 3, 3)


# batch sizes the captured graph does not hold for -----------------------------------------------
class PerSample(nn.Module):
    """Python over the samples: torch.export fixes the batch (one piece per sample)."""

    def __init__(self):
        super().__init__()
        self.conv, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f = torch.relu(self.conv(x))
        return self.out(torch.stack([t * (i + 1) for i, t in enumerate(f.unbind(0))], 0))


class TensorSplit(nn.Module):
    """tensor_split into two views: torch's decomposition holds for one parity of the batch."""

    def __init__(self):
        super().__init__()
        self.conv, self.a, self.b = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 4, 1),
            nn.Conv2d(8, 4, 1),
        )

    def forward(self, x):
        a, b = torch.tensor_split(torch.relu(self.conv(x)), 2, 0)
        return torch.cat([self.a(a), self.b(b)], 0)


@pytest.mark.parametrize(
    "cls, batch, good, bad, says",
    [
        (PerSample, 2, [2], [1, 3, 4], "for a batch of 2 only"),
        (TensorSplit, 2, [2, 4, 6], [1, 3, 5], "n % 2 == 0 only"),
        (TensorSplit, 3, [1, 3, 5], [2, 4], "n % 2 == 1 only"),
    ],
)
def test_a_graph_that_holds_for_some_batches_refuses_the_others_by_name(
    cls, batch, good, bad, says
):
    """Before, the export ran at any batch: the per-sample model returned two samples for three,
    tensor_split's halves lost a sample at the other parity, both without an error."""
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(batch, 3, 8, 8)
    quiet(chanprune.mask, model, x, amount=0.3)
    with pytest.warns(UserWarning, match=says):
        exported = chanprune.export(model, x)
    assert chanprune.count_params(exported) < chanprune.count_params(model)
    for n in good:
        y = torch.randn(n, 3, 8, 8)
        with torch.no_grad():
            assert outputs_match(model(y), exported(y)), n
    for n in bad:
        with pytest.raises(InputError, match=f"got a batch of {n}, but {cls.__name__} .*{says}"):
            exported(torch.randn(n, 3, 8, 8))
