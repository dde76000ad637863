"""Capture's fast path (capture/functional.py) against run_decompositions, and the union-find it
feeds."""

import contextlib
import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import chanprune
import chanprune.capture.trace as capture_mod
from chanprune.analysis.propagate import analyze
from chanprune.analysis.types import find_roots, union_pairs
from chanprune.capture.functional import functionalize
from helpers import outputs_match


def _export_program(model, x):
    return torch.export.export(
        model, (torch.cat([x, x]),), strict=False, dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )


def _pruned(name, fast, monkeypatch):
    monkeypatch.setattr(capture_mod, "FAST_PATH", fast)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    masks = chanprune.mask(model, x, amount=0.3, side="input")
    exported = chanprune.export(model, x)
    graph = capture_mod.capture(model, x).graph
    return model, masks, exported, graph


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5"]
)
def test_fast_capture_gives_the_same_pruning_as_run_decompositions(name, monkeypatch):
    m_fast, masks_fast, fast, g_fast = _pruned(name, True, monkeypatch)
    _, masks_slow, slow, _ = _pruned(name, False, monkeypatch)
    # the fast graph really is the training IR rewritten (no in-place op, no batch_norm left)
    assert not any(str(n.target).endswith("_.default") for n in g_fast.nodes)
    assert "aten.batch_norm.default" not in {str(n.target) for n in g_fast.nodes}
    assert {k: sorted(v) for k, v in masks_fast.items()} == {
        k: sorted(v) for k, v in masks_slow.items()
    }
    assert {k: v.shape for k, v in fast.state_dict().items()} == {
        k: v.shape for k, v in slow.state_dict().items()
    }
    copies = [(c.kind, c.channels, c.elements, c.positions) for c in fast.chanprune_copies]
    assert copies == [(c.kind, c.channels, c.elements, c.positions) for c in slow.chanprune_copies]
    x = torch.randn(3, 3, 64, 64)  # another batch size: the batch stayed dynamic
    with torch.no_grad():
        assert outputs_match(m_fast(x), fast(x))
        assert torch.allclose(fast(x), slow(x), atol=1e-5)


def test_resnet_training_ir_is_rewritten_in_place():
    model = torchvision.models.resnet18().eval()
    ep = _export_program(model, torch.randn(1, 3, 32, 32))
    assert functionalize(ep) is ep.graph
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "aten._native_batch_norm_legit_no_training.default" in targets
    assert not targets & {"aten.relu_.default", "aten.add_.Tensor", "aten.flatten.using_ints"}
    y = torch.randn(3, 3, 32, 32)
    assert torch.allclose(ep.module()(y), model(y), atol=1e-5)


class Spellings(nn.Module):
    """The training-IR spellings the pass renames: unflatten, chunk, swapaxes, contiguous,
    reshape, dropout, flatten, in-place ops on fresh tensors."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.mix = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(16 * 4, 5)

    def forward(self, x):
        y = nn.functional.relu(self.bn(self.stem(x)), inplace=True)  # n, 16, 8, 8
        a, b = y.chunk(2, dim=1)
        a = self.mix(a.flatten(2).swapaxes(1, 2)).swapaxes(1, 2).unflatten(2, (8, 8))
        y = torch.cat([a, b], 1).contiguous()
        y = nn.functional.adaptive_avg_pool2d(y, 2).reshape(y.shape[0], -1)
        return self.head(self.drop(y))


def _both_paths(monkeypatch, make, x, y) -> list:
    """(masks, exported shapes) with the fast path on, then off; each export checked on ``y``."""
    results = []
    for fast in (True, False):
        monkeypatch.setattr(capture_mod, "FAST_PATH", fast)
        torch.manual_seed(0)
        model = make().eval()
        masks = chanprune.mask(model, x, amount=0.5, side="output")
        exported = chanprune.export(model, x)
        with torch.no_grad():
            assert outputs_match(model(y), exported(y))
        results.append((masks, {k: v.shape for k, v in exported.state_dict().items()}))
    return results


def test_renamed_spellings_take_the_fast_path_and_prune_alike(monkeypatch):
    x = torch.randn(1, 3, 8, 8)
    ep = _export_program(Spellings().eval(), x)
    assert functionalize(ep) is ep.graph
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not targets & {
        "aten.chunk.default", "aten.swapaxes.default", "aten.unflatten.int",
        "aten.contiguous.default", "aten.dropout.default", "aten.flatten.using_ints",
    }  # fmt: skip
    results = _both_paths(monkeypatch, Spellings, x, torch.randn(4, 3, 8, 8))
    assert results[0] == results[1]
    assert any(len(v) for v in results[0][0].values())  # something was pruned


class MutatesAView(nn.Module):
    """relu_ on a tensor that a view taken earlier still reads: the view sees the mutation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        alias = y.view(y.shape)
        y.relu_()
        return self.head(torch.cat([alias, y], 1))


class UnknownOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.nn.functional.elu(self.conv(x)))


@pytest.mark.parametrize("cls", [MutatesAView, UnknownOp])
def test_graphs_the_pass_cannot_vouch_for_fall_back_and_stay_exact(cls):
    model = cls().eval()
    x = torch.randn(1, 3, 8, 8)
    assert functionalize(_export_program(model, x)) is None
    chanprune.mask(model, x, amount=0.5, side="input")
    exported = chanprune.export(model, x)
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))


def test_aliased_relu_keeps_its_semantics():
    """The fallback really is needed: a functional relu would leave the alias un-rectified."""
    model = MutatesAView().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = model.conv(x)
    assert (model(x) - model.head(torch.cat([y.relu(), y.relu()], 1))).abs().max() < 1e-5


def _naive_components(n, pairs):
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(a) for a in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_union_find_matches_the_textbook_one(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, 80))]
    parent = np.arange(n, dtype=np.int64)
    for chunk in range(0, len(pairs), 7):  # several calls, repeated ids inside each
        a, b = zip(*pairs[chunk : chunk + 7], strict=True)
        union_pairs(parent, np.array(a, dtype=np.int64), np.array(b, dtype=np.int64))
    roots = find_roots(parent, np.arange(n, dtype=np.int64))
    assert roots.tolist() == _naive_components(n, pairs)  # same partition, root = its minimum


def test_segments_group_roots_that_share_a_tensor():
    model = torchvision.models.resnet18().eval()
    an = analyze(capture_mod.capture(model, torch.randn(1, 3, 32, 32)), warn=False)
    segments = an.segments()
    flat = np.concatenate(segments)
    assert len(flat) == len(set(flat.tolist()))  # a partition
    where = {int(r): i for i, seg in enumerate(segments) for r in seg}
    for v in an.axes.values():
        for ax in v if isinstance(v, list) else [v]:
            if ax is not None and len(ax):
                assert len({where[int(r)] for r in an.root[ax.ids]}) == 1
    assert all(list(s) == sorted(s) for s in segments)


def test_capture_generates_no_code_for_graphs_it_only_reads(monkeypatch):
    """torch.export's passes recompile every intermediate graph (six times on a ResNet); the
    capture only reads the graph, so it makes them lazy (the code is generated on first call)."""
    calls = []
    recompile = torch.fx.GraphModule.recompile

    def counted(self):
        calls.append(type(self).__name__)
        return recompile(self)

    monkeypatch.setattr(torch.fx.GraphModule, "recompile", counted)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    capture_mod._capture(model, (x,), True, True)
    assert len(calls) <= 1, calls
    calls.clear()
    monkeypatch.setattr(capture_mod, "_lazy_graph_modules", contextlib.nullcontext)
    capture_mod._capture(model, (x,), True, True)
    assert len(calls) >= 4  # the test sees recompiles when they happen


class NewRules(nn.Module):
    """FrozenBatchNorm2d (rsqrt of a buffer), a transposed conv and GPT-2's Conv1D (addmm)."""

    def __init__(self):
        super().__init__()
        from torchvision.ops.misc import FrozenBatchNorm2d

        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.frozen = FrozenBatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 8, 2, 2)
        self.weight = nn.Parameter(torch.randn(8, 4) * 0.3)
        self.bias = nn.Parameter(torch.randn(4) * 0.1)

    def forward(self, x):
        y = self.up(torch.relu(self.frozen(self.conv(x)))).mean((2, 3))
        return torch.addmm(self.bias, y, self.weight)


def test_frozen_bn_transposed_convs_and_addmm_take_the_fast_path_and_prune_alike(monkeypatch):
    x = torch.randn(2, 3, 8, 8)
    ep = _export_program(NewRules().eval(), x)
    assert functionalize(ep) is ep.graph  # rsqrt, conv_transpose2d and addmm are listed
    results = _both_paths(monkeypatch, NewRules, x, x)
    assert results[0] == results[1]
    assert {"conv.weight", "up.weight"} <= set(results[0][0])
