"""Capture at a static marker batch, generalised (capture/batch.py): exact at every batch size,
and the symbolic trace wherever the pass cannot vouch for the graph."""

import pytest
import torch
import torchvision
from torch import nn

import chanprune
import chanprune.capture.trace as capture_mod
from chanprune.capture.batch import MARKERS, generalise, marker_inputs
from helpers import outputs_match


class Flat(nn.Module):
    """flatten -> view [marker, n]: the batch becomes -1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Heads(nn.Module):
    """Batch times heads in one size, and a token expanded to the batch (sym_size)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.token = nn.Parameter(torch.randn(1, 1, 16))
        self.out = nn.Linear(16, 3)

    def forward(self, x):  # x: n, t, 8
        n, t = x.shape[:2]
        h = self.proj(x).reshape(n * 4, t, 4).relu().reshape(n, t, 16)
        h = torch.cat([self.token.expand(n, -1, -1), h], 1)
        return self.out(h.mean(1))


class Arange(nn.Module):
    """A batch-sized integer outside a size argument: the pass refuses it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return y + torch.arange(x.shape[0], dtype=y.dtype)[:, None]


class Coincidence(nn.Module):
    """A channel count that is a multiple of the marker (194 = 2 * 97) in a view: the pass
    rescales it wrongly, the export's check (at another batch) catches that, and export
    recaptures with a symbolic batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 194, 1)
        self.fc = nn.Linear(97, 2)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))  # n, 194
        return self.fc(y.view(x.shape[0], 2, 97)).sum(1)


def _export(model, x, amount=0.3):
    chanprune.mask(model, x, amount=amount)
    return chanprune.export(model, x)


def _marker(model):
    return capture_mod._CACHE[model][1].marker


@pytest.mark.parametrize(
    "cls, shape", [(Flat, (2, 3, 4, 4)), (Heads, (2, 5, 8)), (Arange, (2, 3, 4, 4))]
)
def test_exports_are_exact_at_every_batch(cls, shape):
    torch.manual_seed(0)
    model = cls().eval()
    exported = _export(model, torch.randn(*shape))
    for n in (1, 3, 97, 98):
        x = torch.randn(n, *shape[1:])
        with torch.no_grad():
            assert outputs_match(model(x), exported(x)), n


def test_the_marker_path_is_taken_where_the_pass_vouches():
    torch.manual_seed(0)
    flat, heads, arange = Flat().eval(), Heads().eval(), Arange().eval()
    _export(flat, torch.randn(2, 3, 4, 4))
    _export(heads, torch.randn(2, 5, 8))
    _export(arange, torch.randn(2, 3, 4, 4))
    assert _marker(flat) == MARKERS[0] and _marker(heads) == MARKERS[0]
    assert _marker(arange) is None  # the symbolic trace


def test_heads_graph_uses_the_input_size_not_a_constant():
    model = Heads().eval()
    cap = capture_mod.capture(model, torch.randn(2, 5, 8))
    args = [a for n in cap.graph.nodes if n.op == "call_function" for a in n.args]
    flat = [v for a in args if isinstance(a, list | tuple) for v in a]
    assert not any(type(v) is int and v % cap.marker == 0 and v for v in flat)
    assert any(str(n.target) == "aten.sym_size.int" for n in cap.graph.nodes)  # the expand


def test_a_wrong_generalisation_is_caught_and_recaptured():
    torch.manual_seed(0)
    model = Coincidence().eval()
    x = torch.randn(2, 3, 4, 4)
    chanprune.mask(model, x, amount=0.3)
    assert _marker(model) == MARKERS[0]  # mask() used the marker capture
    exported = chanprune.export(model, x)
    assert _marker(model) is None  # export's check failed on it: recaptured symbolically
    for n in (1, 5):
        y = torch.randn(n, 3, 4, 4)
        with torch.no_grad():
            assert outputs_match(model(y), exported(y))


def test_a_user_batch_equal_to_the_marker_gets_another_marker():
    model = Flat().eval()
    exported = _export(model, torch.randn(MARKERS[0], 3, 4, 4))
    assert _marker(model) == MARKERS[1]
    y = torch.randn(4, 3, 4, 4)
    with torch.no_grad():
        assert outputs_match(model(y), exported(y))


def test_inputs_without_one_batch_size_are_not_marked():
    assert marker_inputs((torch.zeros(2, 3), torch.zeros(4, 3))) is None
    assert marker_inputs((torch.zeros(0, 3),)) is None
    stand_ins, marker = marker_inputs((torch.zeros(2, 3), torch.tensor(1.0)))
    assert stand_ins[0].shape == (marker, 3) and stand_ins[1].dim() == 0


def test_unchecked_exports_take_the_symbolic_trace():
    torch.manual_seed(0)
    model = Flat().eval()
    x = torch.randn(2, 3, 4, 4)
    chanprune.mask(model, x, amount=0.3)
    chanprune.export(model, x, check=False)
    assert _marker(model) is None


def test_generalise_leaves_a_refused_graph_untouched():
    ep = torch.export.export(Arange().eval(), (torch.randn(97, 3, 4, 4),), strict=False)
    before = [(n.name, n.args) for n in ep.graph.nodes]
    x = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == "x")
    assert generalise(ep.graph, 97, x) is False
    assert [(n.name, n.args) for n in ep.graph.nodes] == before


def test_resnet_takes_the_marker_path_and_prunes_as_the_symbolic_trace(monkeypatch):
    def pruned(marked):
        monkeypatch.setattr(capture_mod, "MARKED_PATH", marked)
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        masks = chanprune.mask(model, x, amount=0.3, side="input")
        return model, masks, chanprune.export(model, x)

    m1, masks1, e1 = pruned(True)
    assert _marker(m1) == MARKERS[0]
    _, masks2, e2 = pruned(False)
    assert masks1 == masks2
    assert {k: v.shape for k, v in e1.state_dict().items()} == {
        k: v.shape for k, v in e2.state_dict().items()
    }
    copies = [(c.kind, c.channels, c.elements, c.positions) for c in e1.chanprune_copies]
    assert copies  # input-side masks on a ResNet: some gathers, counted per sample alike
    assert copies == [(c.kind, c.channels, c.elements, c.positions) for c in e2.chanprune_copies]
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert outputs_match(m1(x), e1(x))
        assert torch.allclose(e1(x), e2(x), atol=1e-5)


def test_hrank_runs_the_graph_on_calibration_batches_of_the_symbolic_trace():
    torch.manual_seed(0)
    model = Coincidence().eval()
    calibration = [torch.randn(5, 3, 4, 4)]
    chanprune.mask(model, torch.randn(2, 3, 4, 4), heuristic="hrank", calibration=calibration)
    assert _marker(model) is None


def test_per_sample_sizes_count_the_batch_once():
    from chanprune.capture.batch import per_sample

    assert per_sample(56, 97) == 56
    assert per_sample(4 * 97, 97) == 4  # batch x heads
    assert per_sample(97, None) == 97  # a symbolic capture: ints are plain sizes


def test_the_pipeline_pauses_the_garbage_collector_and_restores_it():
    import gc

    seen = []
    model = Flat().eval()
    real = capture_mod._capture

    def spy(*args):
        seen.append(gc.isenabled())
        return real(*args)

    capture_mod._capture = spy
    try:
        chanprune.export(model, torch.randn(2, 3, 4, 4))
        assert seen == [False] and gc.isenabled()
        gc.disable()  # a caller's own choice is kept
        chanprune.plan(Flat().eval(), torch.randn(2, 3, 4, 4))
        assert not gc.isenabled()
    finally:
        gc.enable()
        capture_mod._capture = real


class Views(nn.Module):
    """Two views split off the batch (a two-view encoder): chunk at the marker batch traces as
    a split of size 49, no multiple of the marker, which the pass would have kept."""

    def __init__(self, how="chunk"):
        super().__init__()
        self.how = how
        self.conv, self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f = self.conv(x)
        a, b = (
            f.chunk(2, 0) if self.how == "chunk" else (f[: f.shape[0] // 2], f[f.shape[0] // 2 :])
        )
        return torch.cat([self.a(a), self.b(b)], 0)


@pytest.mark.parametrize("how", ["chunk", "slice"])
def test_a_split_of_the_batch_takes_the_symbolic_trace_and_holds_at_every_batch(how):
    """At batch 2 the symbolic trace fixes the batch (each view is one sample: the 0/1 rule),
    so capture traces again at 842 (the same remainders modulo 2..8): the graph is general."""
    torch.manual_seed(0)
    model = Views(how).eval()
    x = torch.randn(2, 3, 4, 4)
    traced = torch.export.export(model, (torch.randn(97, 3, 4, 4),), strict=False)
    ep = capture_mod._functional(traced)  # chunk -> split, as capture does
    placeholder = next(n for n in ep.graph.nodes if n.name == "x")
    assert generalise(ep.graph, 97, placeholder) is False
    cap = capture_mod.capture(model, x)
    assert cap.marker is None and cap.fixed_batch is None
    batch = next(n for n in cap.graph.nodes if n.name == "x").meta["val"].shape[0]
    assert isinstance(batch, torch.SymInt)
    exported = _export(model, x)
    for n in (2, 4, 6, 8):
        y = torch.randn(n, 3, 4, 4)
        with torch.no_grad():
            assert outputs_match(model(y), exported(y)), n
