"""Writers (rewrite/writers.py): a narrower residual operand added into the stream, in place
where nothing can observe it; the layout solver places writers; copies counted alike by plan,
the export and benchmarks/copies.py."""

import operator
import warnings

import numpy as np
import pytest
import torch
from torch import fx, nn

import chanprune
from chanprune.deploy.spec import kept_indices, take
from chanprune.layout.policy import SolvedOrder
from chanprune.rewrite.writers import (
    WRITE,
    add_index_,
    add_slice,
    add_slice_,
    inplace_writes,
    spread,
)
from helpers import load_benchmark, outputs_match

aten = torch.ops.aten


def cbr(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


def branch(c):
    return nn.Sequential(cbr(c, c), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))


class Stream(nn.Module):
    """A ResNet-like stage: a downsampling block (two writers: the shortcut and the branch),
    then three blocks adding into the stream through ReLUs, then a classifier."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = cbr(3, c)
        self.down = nn.Sequential(nn.Conv2d(c, c, 1, stride=2, bias=False), nn.BatchNorm2d(c))
        self.first = nn.Sequential(
            nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )
        self.blocks = nn.ModuleList(branch(c) for _ in range(3))
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.down(x) + self.first(x))
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.head(x.mean((2, 3)))


class PreNorm(nn.Module):
    """A transformer-style stream: adds chained without activations, one written by a
    subtraction (``x - f(x)``), the stream read by norms."""

    def __init__(self, c=16):
        super().__init__()
        self.embed = nn.Conv2d(3, c, 1)
        self.f = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c), nn.Conv2d(c, c, 1)) for _ in range(3)
        )
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.f[0](x)
        x = x - self.f[1](x)
        x = x + self.f[2](x)
        return self.head(x.mean((2, 3)))


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def masked(cls, side, seed=0):
    torch.manual_seed(seed)
    model = randomise_bn(cls()).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=0.5, side=side, constrained=False)
    return model, x


def _writes(module):
    return [n.target for n in module.graph.nodes if n.target in (add_slice_, add_index_)]


def _grads(module, x):
    """Output, input gradient and parameter gradients of ``module`` on ``x``."""
    x = x.clone().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.square().sum().backward()
    return y.detach(), x.grad, {k: p.grad.clone() for k, p in module.named_parameters()}


@pytest.mark.parametrize("cls", [Stream, PreNorm])
@pytest.mark.parametrize("side", ["output", "input"])
@pytest.mark.parametrize("method", ["reorder", "baseline"])
def test_exports_are_exact_without_and_with_grad(cls, side, method):
    """Under no_grad the writes go in place; with grad (eval or train mode of the export,
    which keeps inference semantics) they add out of place, and the export's gradients equal
    the masked model's on the parameters it keeps."""
    model, x = masked(cls, side)
    exported = chanprune.export(model, x, method=method)
    if side == "output" and method == "reorder":
        assert _writes(exported)  # the stream is written into, not padded per add
    if method == "baseline":
        assert not _writes(exported)
    xb = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        ref = model(xb)
        assert outputs_match(ref, exported(xb))
        assert outputs_match(ref, exported(xb))  # a second run: nothing was overwritten
    with torch.inference_mode():
        assert outputs_match(ref, exported(xb))
    keep = kept_indices(exported, model, x)
    y_ref, gx_ref, gp_ref = _grads(model, xb)
    for mode in ("eval", "train"):
        getattr(exported, mode)()
        y, gx, gp = _grads(exported, xb)
        assert outputs_match(y_ref, y)
        assert torch.allclose(gx, gx_ref, atol=1e-5, rtol=1e-4), mode
        for k, g in gp.items():
            assert torch.allclose(g, take(gp_ref[k], keep[k]), atol=1e-4, rtol=1e-4), (mode, k)


def test_the_stream_is_padded_once_and_written_into_in_place():
    model, x = masked(Stream, "output")
    exported = chanprune.export(model, x)
    kinds = [c.kind for c in exported.chanprune_copies]
    assert kinds.count("base") == 1  # the downsampling block's add starts the stream
    assert "pad" not in kinds and "scatter" not in kinds
    assert len(_writes(exported)) == 4  # the branch of every block, written in place


def test_in_place_under_no_grad_and_out_of_place_with_grad():
    big, small, idx = torch.randn(2, 6, 3), torch.randn(2, 2, 3), torch.tensor([4, 1])
    want = big.clone()
    want[:, [4, 1]] += small
    with torch.no_grad():
        b = big.clone()
        assert add_index_(b, 1, idx, small) is b and torch.equal(b, want)
        b = big.clone()
        assert add_slice_(b, small, 1, 2, 4) is b
        assert torch.equal(b[:, 2:4], big[:, 2:4] + small) and torch.equal(b[:, :2], big[:, :2])
    leaf = big.clone().requires_grad_()
    b = leaf * 1
    out = add_index_(b, 1, idx, small, alpha=-1)
    assert out is not b and torch.equal(b, big)  # out of place: the graph keeps b
    out.sum().backward()
    assert torch.equal(leaf.grad, torch.ones_like(big))
    assert torch.equal(add_slice(big, small, 1, 0, 2)[:, :2], big[:, :2] + small)
    s = spread(small, 1, torch.tensor([5, 0]), 6)
    assert torch.equal(s[:, [5, 0]], small) and not s[:, 1:5].any()


def _write_graph(case):
    """``conv(x, w)`` with ``y`` index_added into it, and what ``case`` adds around it."""
    g = fx.Graph()
    x, w, y, idx = (g.placeholder(n) for n in ("x", "w", "y", "idx"))
    big = x if case == "input" else g.call_function(aten.conv2d.default, (x, w))
    if case == "view_later":
        view = g.call_function(aten.slice.Tensor, (big, 1, 0, 2))
    if case == "small_is_view":
        y = g.call_function(aten.slice.Tensor, (big, 1, 0, 2))
    if case == "through_relu":
        big = g.call_function(aten.relu_.default, (big,))
    out = g.call_function(aten.index_add.default, (big, 1, idx, y))
    out.meta[WRITE] = None
    if case == "read_later":
        out = g.call_function(aten.add.Tensor, (out, big))
    if case == "view_later":
        out = g.call_function(aten.add.Tensor, (out, g.call_function(aten.relu.default, (view,))))
    if case == "output":
        out = g.call_function(operator.add, (out, 0)), big
    g.output(out)
    return g


@pytest.mark.parametrize(
    "case", ["input", "read_later", "view_later", "output", "small_is_view", "unmarked"]
)
def test_writes_others_can_observe_stay_out_of_place(case):
    g = _write_graph(case)
    if case == "unmarked":  # not a write the exporter emitted: the model's own index_add
        for n in g.nodes:
            n.meta.pop(WRITE, None)
    assert inplace_writes(g) == []
    assert aten.index_add.default in [n.target for n in g.nodes]


@pytest.mark.parametrize("case", ["fresh", "through_relu"])
def test_a_private_stream_is_written_in_place(case):
    g = _write_graph(case)
    assert [n.target for n in inplace_writes(g)] == [add_index_]
    gm = fx.GraphModule(torch.nn.Module(), g)
    x, w, y = torch.randn(1, 2, 4, 4), torch.randn(4, 2, 1, 1), torch.randn(1, 2, 4, 4)
    idx = torch.tensor([3, 0])
    want = torch.conv2d(x, w)
    if case == "through_relu":
        want = want.relu()
    want = want.index_add(1, idx, y)
    with torch.no_grad():
        assert torch.equal(gm(x, w, y, idx), want)


def _zero_rows(model, x, rows):
    """Zero output channels ``rows[name]`` of each named producer (and its BN)."""
    chanprune.apply_masks(model, x, rows)


def test_writers_the_solver_can_place_become_slice_adds():
    """Two blocks write the even and the odd channels 0-7 of a stream the stem fills: in the
    original order neither is a run, in the solver's both are, and both add into slices."""
    torch.manual_seed(0)
    model = randomise_bn(Stream()).eval()
    x = torch.randn(2, 3, 8, 8)
    rows = {"first.3.weight": [], "down.0.weight": []}
    rows["blocks.0.1.weight"] = [c for c in range(16) if c not in (0, 2, 4, 6)]
    rows["blocks.1.1.weight"] = [c for c in range(16) if c not in (1, 3, 5, 7)]
    _zero_rows(model, x, {k: v for k, v in rows.items() if v})
    reorder = chanprune.export(model, x)
    base = chanprune.export(model, x, method="baseline")
    assert [c.kind for c in base.chanprune_copies] == ["pad", "pad"]  # each writer padded
    assert [c.kind for c in reorder.chanprune_copies] == []
    assert _writes(reorder) == [add_slice_, add_slice_]  # the other adds are plain
    p = chanprune.plan(model, x)
    assert p.copied_bytes == 0 and all(s.optimal is not False for s in p.segments)


def test_writers_no_order_can_all_place_pay_the_proven_minimum():
    """Three writers over channels {0, 1, 2} pairwise sharing one: no order keeps all three
    contiguous, so one is written through an index, and the plan proves that minimal."""
    torch.manual_seed(0)
    model = randomise_bn(Stream()).eval()
    x = torch.randn(2, 3, 8, 8)
    rest = list(range(3, 16))
    rows = {"blocks.0.1.weight": [2, *rest], "blocks.1.1.weight": [0, *rest]}
    rows["blocks.2.1.weight"] = [1, *rest]
    _zero_rows(model, x, rows)
    exported = chanprune.export(model, x)
    kinds = [c.kind for c in exported.chanprune_copies]
    assert kinds == ["write"]
    p = chanprune.plan(model, x)
    an = p.segments
    assert p.copied_bytes == sum(s.lower_bound_bytes or 0 for s in an) > 0
    assert all(s.optimal is not False for s in an)


def test_the_solver_problem_holds_the_writers():
    from chanprune.analysis.propagate import analyze
    from chanprune.capture.trace import capture
    from chanprune.liveness.flow import liveness

    model, x = masked(Stream, "output")
    an = analyze(capture(model, (x,)))
    policy = SolvedOrder(an, liveness(an))
    writers = [w for s in policy.segments for w in s.writers]
    assert len(writers) == 4  # the downsampling add and the three blocks


@pytest.mark.parametrize("cls", [Stream, PreNorm])
def test_copies_counted_alike_by_plan_export_and_benchmark(cls):
    """The bytes benchmarks/copies.py counts at run time (a dispatch mode) equal the plan's,
    which equal its proven bound where every segment is proven."""
    copies = load_benchmark("copies")
    model, x = masked(cls, "output")
    x1 = x[:1]
    for method in ("baseline", "reorder"):
        exported = chanprune.export(model, x1, method=method)
        p = chanprune.plan(model, x1, method=method)
        counted = copies.count(exported, x1)
        assert counted["bytes"] == p.copied_bytes  # a pad: its padded source and the gather
        if method == "reorder":
            assert counted["ops"] == p.gathers
            assert all(s.optimal is not False for s in p.segments)
            assert p.copied_bytes == sum(s.lower_bound_bytes or 0 for s in p.segments)
        else:
            assert p.copied_bytes > 0
    base = chanprune.plan(model, x1, method="baseline")
    assert p.copied_bytes < base.copied_bytes


def test_ideal_writes_into_slices():
    model, x = masked(Stream, "output", seed=3)
    exported = chanprune.export(model, x)
    ideal = chanprune.ideal(exported)
    targets = [n.target for n in ideal.graph.nodes]
    assert add_index_ not in targets and aten.index_add.default not in targets
    assert spread not in targets
    assert ideal(torch.randn(3, 3, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("method", ["reorder", "baseline"])
def test_onnx_of_an_output_side_export_is_exact(tmp_path, method):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from chanprune.deploy import ort_session, to_onnx

    model, x = masked(Stream, "output")
    exported = chanprune.export(model, x, method=method)
    path = to_onnx(exported, x, tmp_path / "s.onnx")  # checked in ONNX Runtime
    session = ort_session(path)
    xb = torch.randn(4, 3, 8, 8)
    (got,) = session.run(None, {session.get_inputs()[0].name: xb.numpy()})
    with torch.no_grad():
        want = model(xb).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_a_correct_export_with_in_place_writes_diverges_nowhere():
    """The node-by-node replay behind a failed check copies each value as it is computed: an
    in-place activation or write changes the tensor an earlier node returned, which read
    as a divergence there (the stem's BN) before."""
    from chanprune.analysis.propagate import analyze
    from chanprune.api import policy_for
    from chanprune.capture.trace import capture
    from chanprune.liveness.flow import liveness
    from chanprune.rewrite.rewriter import rewrite
    from chanprune.rewrite.verify import first_divergence

    model, x = masked(Stream, "output")
    cap = capture(model, (x,))
    an = analyze(cap)
    live = liveness(an)
    result = rewrite(an, live, policy_for("reorder", an, live))
    assert _writes(result.module)
    assert first_divergence(cap, result, (x,)).startswith("none found")


class GroupedGate(nn.Module):
    """A grouped conv (its output holds a per-group layout of its own) gated SE-style."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = cbr(3, c)
        self.g = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)
        self.out = nn.Conv2d(c, 8, 1)

    def forward(self, x):
        x = self.g(self.stem(x))
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.out(x * g)


def test_plan_proves_nothing_where_the_solver_sets_do_not_describe_the_copies():
    """The gate's reads are contiguous in the solver's order but gathered from the grouped
    conv's own layout: that segment is unproven (no bound), not "optimal at 0 bytes"."""
    model, x = masked(GroupedGate, "output")
    p = chanprune.plan(model, x)
    unproven = [s for s in p.segments if s.gathers and s.lower_bound_bytes is None]
    assert unproven and all(s.optimal is False for s in unproven)
    assert "unproven" in p.summary()
    for s in p.segments:
        if s.lower_bound_bytes is not None:
            assert s.copied_bytes >= s.lower_bound_bytes
        if s.optimal:
            assert s.copied_bytes == s.lower_bound_bytes
