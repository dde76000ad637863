"""mask, export and plan leave the user's model as it was, apart from the zeroed weights."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.rewrite.verify import compare
from helpers import load_benchmark, outputs_match


class CachingHead(nn.Module):
    """Caches what forward computes, as detection heads (anchors, strides) and rotary
    embeddings do: a tensor sized by the batch, the last batch size, a list of calls."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.anchors: torch.Tensor | None = None
        self.seen: list[int] = []

    def forward(self, x):
        y = self.conv(x)
        if self.anchors is None or self.anchors.shape[0] != y.shape[0]:
            self.anchors = torch.ones(y.shape[0], 8, 1, 1)
            self.last_batch = y.shape[0]
        self.seen.append(1)
        return y * self.anchors


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = CachingHead()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.head(self.stem(x)).mean((2, 3)))


def _attributes(model: nn.Module) -> dict[str, dict]:
    return {n: dict(m.__dict__) for n, m in model.named_modules()}


def test_caches_filled_in_forward_are_left_as_they_were():
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model(x)  # the user's own forward fills the cache at batch 2
    anchors, before = model.head.anchors, _attributes(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=0.5)
        exported = chanprune.export(model, x)
        chanprune.plan(model, x)
    assert model.head.anchors is anchors and model.head.last_batch == 2
    assert model.head.seen == [1]  # the user's one call, not ours
    after = _attributes(model)
    assert after.keys() == before.keys()
    for name in before:
        assert after[name].keys() == before[name].keys(), name
        for k, v in before[name].items():
            assert after[name][k] is v, (name, k)
    copy.deepcopy(model)  # no fake tensor left behind
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))


def test_a_model_never_run_keeps_an_empty_cache():
    model = Net().eval()
    x = torch.randn(3, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=0.5)
        chanprune.export(model, x)
    assert model.head.anchors is None and model.head.seen == []
    assert not hasattr(model.head, "last_batch")


def test_buffers_and_parameters_keep_their_slots():
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    slots = {n: t for n, t in [*model.named_parameters(), *model.named_buffers()]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=0.5)
    now = dict([*model.named_parameters(), *model.named_buffers()])
    assert now.keys() == slots.keys() and all(now[n] is t for n, t in slots.items())
    assert (model.stem[0].weight == 0).any()  # the zeroing itself is kept


class FrozenConfig(dict):
    """A read-only mapping held by a module, as diffusers' FrozenDict config: restoring the
    module's state must not write into it."""

    def update(self, *args, **kwargs):
        raise TypeError("read-only")

    def clear(self):
        raise TypeError("read-only")


def test_a_read_only_mapping_on_a_module_is_left_alone():
    model = Net().eval()
    model.config = FrozenConfig(width=8)
    x = torch.randn(2, 3, 8, 8)
    chanprune.mask(model, x, amount=0.25)
    exported = chanprune.export(model, x)
    assert model.config == {"width": 8} and type(model.config) is FrozenConfig
    x3 = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert outputs_match(model(x3), exported(x3))


# the beyond-classification zoo (benchmarks/beyond_zoo.py) --------------------------------------
ZOO = load_benchmark("beyond_zoo")


def _snapshot(model: nn.Module) -> dict[str, dict[str, tuple]]:
    """Per module, each attribute's object and, for a list, dict or set, its items' objects."""
    out = {}
    for name, m in model.named_modules():
        attrs = {}
        for k, v in m.__dict__.items():
            items = list(v.items()) if isinstance(v, dict) else v
            attrs[k] = (v, list(items) if isinstance(items, list | set) else None)
        out[name] = attrs
    return out


def assert_unchanged(before: dict, after: dict) -> None:
    """The same attributes holding the same objects, containers the same items."""
    assert after.keys() == before.keys()
    for name, attrs in before.items():
        assert after[name].keys() == attrs.keys(), name
        for k, (v, items) in attrs.items():
            now, now_items = after[name][k]
            assert now is v, (name, k)
            if items is not None:
                assert len(now_items) == len(items), (name, k)
                assert all(_same(a, b) for a, b in zip(now_items, items, strict=True)), (name, k)


def _same(a: object, b: object) -> bool:
    """Identical objects (dict items: same key, identical value)."""
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 2:
        return a[0] == b[0] and a[1] is b[1]
    return a is b


def _zoo_params():
    for case in ZOO.cases():
        yield pytest.param(case, id=case.name, marks=[pytest.mark.slow] if case.slow else [])


@pytest.mark.parametrize("case", _zoo_params())
def test_the_beyond_zoo_is_left_as_it_was(case):
    """Segmentation, detection (whole detectors through submodules=), video, optical flow,
    Hugging Face and diffusers models: after mask, export and plan, every module holds the same
    attributes, parameters and buffers as before, deep-copies, and runs as the export does."""
    for package in case.needs:
        pytest.importorskip(package)
    model, (x, kw) = case.build(), case.example(2)
    parts = list(case.submodules) if case.submodules else None
    how = {"submodules": parts, "example_kwargs": kw or None}
    with torch.no_grad():
        model(*x, **kw)  # the user's own forward first: caches filled at the user's sizes
    before = _snapshot(model)
    slots = dict([*model.named_parameters(), *model.named_buffers()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=0.3, **how)
        if case.ill_conditioned:  # its check refuses the export: the model is left alone still
            with pytest.raises(chanprune.ExportError, match="code between the parts"):
                chanprune.export(model, x, **how)
        else:
            exported = chanprune.export(model, x, **how)
        if parts is None:  # plan prunes a whole model
            chanprune.plan(model, x, example_kwargs=kw or None)
    assert_unchanged(before, _snapshot(model))
    now = dict([*model.named_parameters(), *model.named_buffers()])
    assert now.keys() == slots.keys() and all(now[n] is t for n, t in slots.items())
    copy.deepcopy(model)  # no fake tensor left behind
    if not case.ill_conditioned:
        with torch.no_grad():
            assert compare(model(*x, **kw), exported(*x, **kw)).ok


def test_the_snapshot_sees_a_cache_refilled_in_place():
    """What the zoo test relies on: a list item swapped for an equal tensor, or an attribute
    added, is a change."""
    model = ZOO.TinyYOLO().eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    before = _snapshot(model)
    model.head.grids[0] = model.head.grids[0].clone()
    with pytest.raises(AssertionError):
        assert_unchanged(before, _snapshot(model))
    model.head.grids[0] = before["head"]["grids"][1][0]
    assert_unchanged(before, _snapshot(model))
    model.head.last_size = (64, 64)  # an attribute added
    with pytest.raises(AssertionError):
        assert_unchanged(before, _snapshot(model))
