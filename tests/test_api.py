"""The export contract: a new module, original untouched, trainable, saveable, any batch size."""

import copy
import gc
import io
import warnings
import weakref

import pytest
import torch
from torch import nn

import chanprune
from helpers import outputs_match, prune_and_check


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = self.c1(x)
        y = torch.relu(y + self.c2(y))
        return self.fc(y.mean((2, 3)))


@pytest.fixture
def pruned():
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    exported, _ = prune_and_check(model, x, amount=0.5)
    return model, exported, x


def test_parameter_names_follow_the_original(pruned):
    model, exported, _ = pruned
    assert {k for k, _ in exported.named_parameters()} <= {k for k, _ in model.named_parameters()}
    assert exported.get_parameter("c1.0.weight").shape[0] == 8


class Scaled(Net):
    """Net with a parameter the exporter keeps whole (a scalar gain on the output)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 2.0))

    def forward(self, x):
        return super().forward(x) * self.scale


@pytest.mark.parametrize("method", ["reorder", "baseline"])
def test_the_export_shares_no_memory_with_the_model(method):
    """Every tensor of the export is its own copy (also those sliced without a second copy),
    so training the export leaves the original untouched."""
    model = Scaled().eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.mask(model, x, amount=0.5)
    exported = chanprune.export(model, x, method=method)
    assert exported.get_parameter("scale").shape == (1,)  # kept whole: not sliced on the way
    original = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    for name, t in exported.state_dict().items():
        assert t.untyped_storage().data_ptr() not in original, name
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name  # no base
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in exported.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_any_batch_size(pruned):
    model, exported, _ = pruned
    for n in (1, 3, 7):
        x = torch.randn(n, 3, 8, 8)
        with torch.no_grad():
            assert outputs_match(model(x), exported(x))


def test_batch_one_example_inputs_still_give_a_dynamic_batch():
    model = Net().eval()
    chanprune.mask(model, torch.randn(1, 3, 8, 8), amount=0.5)
    exported = chanprune.export(model, torch.randn(1, 3, 8, 8))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))


def test_trainable(pruned):
    _, exported, x = pruned
    opt = torch.optim.SGD(exported.parameters(), lr=0.1)
    before = exported.get_parameter("fc.weight").clone()
    exported(x).square().mean().backward()
    assert exported.get_parameter("c1.0.weight").grad is not None
    opt.step()
    assert not torch.equal(before, exported.get_parameter("fc.weight"))


def test_state_dict_round_trip_with_weights_only(pruned):
    model, exported, x = pruned
    buf = io.BytesIO()
    torch.save(exported.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = chanprune.export(model, x, method=exported.chanprune_method)  # same architecture
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), exported(x))


def test_torch_export_save_and_load(pruned, tmp_path):
    _, exported, x = pruned
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(exported, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "m.pt2")
    loaded = torch.export.load(tmp_path / "m.pt2").module()
    x3 = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert outputs_match(exported(x3), loaded(x3))


def test_masks_name_parameters_and_channels():
    model = Net().eval()
    masks = chanprune.mask(model, torch.randn(2, 3, 8, 8), amount=0.5)
    assert set(masks) == {"c1.0.weight", "c2.0.weight"}  # fc makes the logits: never pruned
    for name, channels in masks.items():
        w = model.get_parameter(name)
        assert len(channels) == 8
        assert (w[channels] == 0).all()


def test_train_mode_models_are_captured_in_eval_mode_and_left_in_train_mode():
    model = Net().train()
    x = torch.randn(2, 3, 8, 8)
    stats = model.c1[1].running_mean.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=0.5)
        exported = chanprune.export(model, x)
    assert model.training and model.c1[1].training
    assert torch.equal(stats, model.c1[1].running_mean)  # no BN statistics were updated
    model.eval()
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))


def test_apply_masks_by_hand():
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"c1.0.weight": [0, 1, 2]})
    assert (model.c1[1].weight[:3] == 0).all()  # the BN that follows is zeroed too
    exported, _ = prune_and_check(model, x)
    assert exported.get_parameter("c1.0.weight").shape[0] == 13


def test_input_side_masks_consumer_columns():
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    masks = chanprune.mask(model, x, amount=0.5, side="input")
    assert "c1.0.weight" not in masks  # reads the image: never pruned
    assert set(masks) == {"c2.0.weight", "fc.weight"}
    assert (model.fc.weight[:, masks["fc.weight"]] == 0).all()
    prune_and_check(model, x)


def test_a_dropped_export_frees_its_weights_without_a_garbage_collection():
    """fx graphs hold their module strongly; ours weakly, so ``del`` frees the weights at once
    (export pauses the cyclic GC, which would otherwise keep a dropped model through the next)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.mask(model, x, amount=0.5)
    was = gc.isenabled()
    gc.disable()
    try:
        for method in ("baseline", "reorder"):
            pruned = chanprune.export(model, x, method=method)
            assert pruned.graph.owning_module is pruned
            twin = copy.deepcopy(pruned)
            assert twin.graph.owning_module is twin
            assert torch.equal(twin(x), pruned(x))
            weight = weakref.ref(next(pruned.parameters()))
            del pruned, twin
            assert weight() is None
    finally:
        if was:
            gc.enable()
