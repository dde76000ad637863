"""Norms written out as element-wise ops (Hugging Face's LlamaRMSNorm and T5LayerNorm, hand-
written LayerNorms, ConvNeXt's channels-first LayerNorm2d, CBAM's channel statistics): their
reductions over the channel axis are statistics taken over the original width, not barriers
(analysis/rules/reduce.py), and the dtype casts and metadata assertions around them pass."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from helpers import outputs_match


class LlamaRMSNorm(nn.Module):
    """As in transformers' Llama: statistics in ``compute`` dtype, cast back, times weight.
    ``compute=torch.float32`` on a float32 model traces as metadata assertions, float64 as
    ``_to_copy`` casts."""

    def __init__(self, c: int, compute: torch.dtype, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.compute, self.eps = compute, eps

    def forward(self, x):
        dtype = x.dtype
        h = x.to(self.compute)
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.eps)
        return self.weight * h.to(dtype)


class HandLayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * w + b`` over ``dim`` (-1, or 1 for an NCHW map as
    ConvNeXt's LayerNorm2d); the variance as ``pow(2).mean`` or ``var(unbiased=False)``."""

    def __init__(self, c: int, dim: int, var: str):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.bias = nn.Parameter(torch.rand(c) - 0.5)
        self.dim, self.var = dim, var

    def forward(self, x):
        u = x.mean(self.dim, keepdim=True)
        if self.var == "pow":
            s = (x - u).pow(2).mean(self.dim, keepdim=True)
        else:
            s = x.var(self.dim, keepdim=True, unbiased=False)
        y = (x - u) / torch.sqrt(s + 1e-5)
        if self.dim == 1:
            return self.weight[:, None, None] * y + self.bias[:, None, None]
        return y * self.weight + self.bias


class Mlp(nn.Module):
    """Linear -> norm -> Linear -> relu -> norm -> Linear over the last dimension."""

    def __init__(self, make):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(8, 24), nn.Linear(24, 24), nn.Linear(24, 4)
        self.n1, self.n2 = make(24), make(24)

    def forward(self, x):
        return self.head(self.n2(torch.relu(self.fc2(self.n1(self.fc1(x))))))


class ConvNet(nn.Module):
    """conv -> channels-first LayerNorm written out -> conv -> relu -> conv."""

    def __init__(self, var: str):
        super().__init__()
        self.c1, self.c2, self.c3 = (
            nn.Conv2d(3, 16, 3, padding=1),
            nn.Conv2d(16, 16, 1),
            nn.Conv2d(16, 4, 1),
        )
        self.norm = HandLayerNorm(16, 1, var)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(self.norm(self.c1(x)))))


class SpatialGate(nn.Module):
    """CBAM's spatial attention: mean and max over the channels, a conv, a sigmoid gate."""

    def __init__(self):
        super().__init__()
        self.c1, self.gate, self.c2 = (
            nn.Conv2d(3, 16, 3, padding=1),
            nn.Conv2d(2, 1, 3, padding=1),
            nn.Conv2d(16, 4, 1),
        )

    def forward(self, x):
        h = torch.relu(self.c1(x))
        stats = torch.cat([h.mean(1, keepdim=True), h.amax(1, keepdim=True)], 1)
        return self.c2(h * torch.sigmoid(self.gate(stats)))


class SumGate(nn.Module):
    """A gate from the channel sum (a sum over the channels, run on the pruned tensor) and a
    written-out instance norm (mean and biased variance over the spatial dims, which keep the
    channels and a zero channel zero)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 1)
        self.c3 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = self.c2(h * torch.sigmoid(h.sum(1, keepdim=True)))
        u, s = h.mean((2, 3), keepdim=True), h.var((2, 3), keepdim=True, unbiased=False)
        return self.c3((h - u) / torch.sqrt(s + 1e-5))


def _models():
    return {
        "llama float32": (Mlp(lambda c: LlamaRMSNorm(c, torch.float32)), (2, 5, 8)),
        "llama float64": (Mlp(lambda c: LlamaRMSNorm(c, torch.float64)), (2, 5, 8)),
        "layernorm pow": (Mlp(lambda c: HandLayerNorm(c, -1, "pow")), (2, 5, 8)),
        "layernorm var": (Mlp(lambda c: HandLayerNorm(c, -1, "var")), (2, 5, 8)),
        "layernorm2d pow": (ConvNet("pow"), (2, 3, 6, 6)),
        "layernorm2d var": (ConvNet("var"), (2, 3, 6, 6)),
        "spatial gate": (SpatialGate(), (2, 3, 6, 6)),
        "sum gate": (SumGate(), (2, 3, 6, 6)),
    }


@pytest.mark.parametrize("side", ["output", "input"])
@pytest.mark.parametrize("method", ["reorder", "baseline"])
@pytest.mark.parametrize("name", list(_models()))
def test_written_out_norms_prune_exactly(name, method, side):
    torch.manual_seed(0)
    model, shape = _models()[name]
    model.eval()
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier, no low-share warning
        masks = chanprune.mask(model, x, amount=0.5, side=side)
    assert masks
    exported = chanprune.export(model, x, method=method)
    assert chanprune.count_params(exported) < chanprune.count_params(model)
    y = torch.randn(3, *shape[1:])  # another batch
    with torch.no_grad():
        assert outputs_match(model(y), exported(y))


def test_metadata_assertions_pass_on_pruned_tensors():
    """``x.to(torch.float32)`` on a float32 model traces as ``_assert_tensor_metadata``: no
    barrier, and the export keeps the check (dtype, not the original sizes) on pruned tensors."""
    torch.manual_seed(0)
    model, x = Mlp(lambda c: LlamaRMSNorm(c, torch.float32)).eval(), torch.randn(2, 5, 8)
    cap = capture(model, x)
    asserts = [n for n in cap.graph.nodes if "_assert_tensor_metadata" in str(n.target)]
    assert asserts and not analyze(cap, warn=False).barriers
    chanprune.mask(model, x, amount=0.5)
    exported = chanprune.export(model, x)
    kept = [n for n in exported.graph.nodes if "_assert_tensor_metadata" in str(n.target)]
    assert len(kept) == len(asserts)
    assert all(n.args[1] is None and n.args[3] == torch.float32 for n in kept)


def test_tiny_llama_norms_are_no_barriers():
    """Hugging Face's LlamaRMSNorm (casts, pow, mean, rsqrt) leaves no barrier in a tiny Llama."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=100, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaModel(config).eval()
    an = analyze(capture(model, torch.randint(0, 100, (2, 16))), warn=False)
    reasons = {b.reason for b in an.barriers}
    assert not {r for r in reasons if "mean" in r or "_assert" in r}, reasons
