"""Dense widths rounded up to the backend's quantum (liveness/rounding.py: round_widths)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import chanprune
from chanprune.errors import InputError
from chanprune.liveness import rounding
from helpers import outputs_match


class Net(nn.Module):
    """A bottleneck (private inner widths) around a residual stream, and an MLP head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 40, 3, padding=1)
        self.a = nn.Conv2d(40, 100, 1)
        self.bn = nn.BatchNorm2d(100)
        self.b = nn.Conv2d(100, 40, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(40, 64), nn.Linear(64, 5)

    def forward(self, x):
        s = self.stem(x)
        s = s + self.b(torch.relu(self.bn(self.a(s))))
        return self.fc2(torch.relu(self.fc1(s.mean((2, 3)))))


def _masked(**kw):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 6, 6)
    chanprune.apply_masks(
        model,
        x,
        {"a.weight": list(range(40)), "fc1.weight": list(range(3)), "stem.weight": [0, 1]},
        **kw,
    )
    return model, x


def _rows(m, name):
    return m.get_parameter(name).shape[0]


def test_private_widths_round_up_to_the_quantum_exactly():
    model, x = _masked()
    plain = chanprune.export(model, x, width_quantum=1)
    assert (_rows(plain, "a.weight"), _rows(plain, "fc1.weight")) == (60, 61)
    for method in ("reorder", "baseline"):
        rounded = chanprune.export(model, x, method=method, width_quantum=16)
        # 60 -> 64 and 61 -> 64, a few channels each; b reads all 64
        assert (_rows(rounded, "a.weight"), _rows(rounded, "fc1.weight")) == (64, 64)
        assert rounded.get_parameter("b.weight").shape[1] == 64
        assert rounded.get_parameter("bn.weight").shape[0] == 64
        x3 = torch.randn(3, 3, 6, 6)
        with torch.no_grad():
            assert outputs_match(model(x3), rounded(x3))


def test_a_width_far_below_the_next_multiple_or_the_original_stays_exact():
    model, x = _masked()
    rounded = chanprune.export(model, x, width_quantum=48)
    assert _rows(rounded, "a.weight") == 60  # 96 would add more than a quarter
    assert _rows(rounded, "fc1.weight") == 61  # 96 is more than its 64 channels


def test_an_unconstrained_residual_stream_keeps_its_widths():
    """stem and b write the same stream but keep different channels: nothing to round
    there without widening one of them for nothing."""
    model, x = _masked()
    chanprune.apply_masks(model, x, {"b.weight": [5, 6, 7]})
    plain = chanprune.export(model, x, width_quantum=1)
    rounded = chanprune.export(model, x, width_quantum=16)
    assert _rows(rounded, "stem.weight") == _rows(plain, "stem.weight")
    assert _rows(rounded, "b.weight") == _rows(plain, "b.weight")


def test_constrained_stream_rounds_every_writer():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 6, 6)
    chanprune.mask(model, x, amount=0.1, constrained=True)
    plain = chanprune.export(model, x, width_quantum=1)
    assert _rows(plain, "stem.weight") == _rows(plain, "b.weight") == 36
    rounded = chanprune.export(model, x, width_quantum=8)
    assert _rows(rounded, "stem.weight") == _rows(rounded, "b.weight") == 40
    with torch.no_grad():
        assert outputs_match(model(x), rounded(x))


def test_rounded_exports_save_and_load_with_their_quantum(tmp_path):
    model, x = _masked()
    rounded = chanprune.export(model, x, width_quantum=16)
    spec, _ = chanprune.save_pruned(rounded, model, x, tmp_path / "net.json")
    loaded = chanprune.load_pruned(Net().eval(), spec, x)
    assert _rows(loaded, "a.weight") == 64
    with torch.no_grad():
        assert outputs_match(rounded(x), loaded(x))


def test_the_default_quantum_is_the_cpus_vector_width(monkeypatch):
    monkeypatch.delenv("CHANPRUNE_WIDTH_QUANTUM")
    for capability, quantum in (("AVX512", 16), ("AVX2", 8), ("DEFAULT", 4)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert rounding.default_width_quantum() == quantum
    model, x = _masked()
    assert _rows(chanprune.export(model, x), "fc1.weight") == 64  # 61 -> a multiple of 4
    monkeypatch.setenv("CHANPRUNE_WIDTH_QUANTUM", "16")
    assert rounding.default_width_quantum() == 16
    assert chanprune.export(model, x).chanprune_width_quantum == 16
    monkeypatch.setenv("CHANPRUNE_WIDTH_QUANTUM", "sixteen")
    with pytest.raises(InputError, match="CHANPRUNE_WIDTH_QUANTUM must be a positive integer"):
        chanprune.export(model, x)


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "16"])
def test_a_bad_width_quantum_is_refused_by_name(bad):
    model, x = _masked()
    with pytest.raises(InputError, match="width_quantum must be a positive integer"):
        chanprune.export(model, x, width_quantum=bad)
