"""The in-place activation pass: which activations it rewrites, and that exports stay exact and
trainable with them."""

import copy
import operator

import pytest
import torch
from torch import fx, nn

import chanprune
from chanprune.inplace import INPLACE, SAME_SHAPE, inplace_activations
from helpers import outputs_match

aten = torch.ops.aten


@pytest.mark.parametrize("op", list(INPLACE), ids=str)
def test_each_twin_takes_the_same_arguments(op):
    """The pass only swaps the target, so the twin must read the same arguments after self."""
    f, g = op._schema.arguments, INPLACE[op]._schema.arguments
    assert [(a.name, str(a.type)) for a in f[1:]] == [(a.name, str(a.type)) for a in g[1:]]


def _graph(build):
    """The graph ``build(graph, x, w)`` makes (it returns the output node)."""
    g = fx.Graph()
    x, w = g.placeholder("x"), g.placeholder("w")
    out = build(g, x, w)
    g.output(out)
    return g


def _targets(g):
    return [n.target for n in g.nodes if n.op == "call_function"]


def test_an_activation_of_a_private_conv_result_goes_in_place():
    def build(g, x, w):
        c = g.call_function(aten.conv2d.default, (x, w))
        return g.call_function(aten.hardtanh.default, (c, 0.0, 6.0))

    g = _graph(build)
    assert inplace_activations(g) == 1
    assert aten.hardtanh_.default in _targets(g)


def test_batch_norm_output_is_private():
    def build(g, x, w):
        bn = g.call_function(
            aten._native_batch_norm_legit_no_training.default, (x, w, w, w, w, 0.1, 1e-5)
        )
        out = g.call_function(operator.getitem, (bn, 0))
        return g.call_function(aten.relu.default, (out,))

    g = _graph(build)
    assert inplace_activations(g) == 1


@pytest.mark.parametrize(
    "case",
    ["input", "read_twice", "view", "result_saved"],
)
def test_activations_others_can_observe_stay_functional(case):
    def build(g, x, w):
        if case == "input":  # the caller's tensor
            return g.call_function(aten.relu.default, (x,))
        c = g.call_function(aten.conv2d.default, (x, w))
        if case == "read_twice":  # a residual reads the conv result after the relu
            r = g.call_function(aten.relu.default, (c,))
            return g.call_function(aten.add.Tensor, (r, c))
        if case == "view":  # a slice aliases the conv result
            s = g.call_function(aten.slice.Tensor, (c, 1, 0, 2))
            return g.call_function(aten.relu.default, (s,))
        s = g.call_function(aten.sigmoid.default, (c,))  # its backward reads its result
        return g.call_function(aten.relu.default, (s,))

    g = _graph(build)
    inplace_activations(g)
    relu = [n for n in g.nodes if "relu" in str(n.target)]
    assert [n.target for n in relu] == [aten.relu.default]


def test_extra_producers_count():
    def build(g, x, w):
        s = g.call_function(torch.flatten, (x,))
        return g.call_function(aten.relu.default, (s,))

    assert inplace_activations(_graph(build)) == 0
    assert inplace_activations(_graph(build), producers=(torch.flatten,)) == 1


class Acts(nn.Module):
    """Activations of every kind the zoo uses, after convs, norms, a linear and an add."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.b = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.c = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.SiLU())
        self.fc = nn.Linear(16, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        y = self.a(x)
        z = self.b(y)
        y = torch.relu(y + self.c(z))  # relu of a residual sum
        h = nn.functional.gelu(self.fc(y.mean((2, 3))))
        return self.out(h)


def _functional(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` with every in-place activation and add made functional again: the pass undone."""
    undo = {v: k for k, v in INPLACE.items()}
    undo[aten.add_.Tensor] = aten.add.Tensor
    gm = copy.deepcopy(gm)
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in undo:
            n.target = undo[n.target]
    gm.recompile()
    return gm


@pytest.mark.parametrize("method", ["reorder", "baseline"])
@pytest.mark.parametrize("net", ["Acts", "Residuals"])
def test_exports_are_exact_and_train_alike_in_place(net, method):
    torch.manual_seed(0)
    model = globals()[net]().eval()
    x = torch.randn(4, 3, 6, 6)
    chanprune.mask(model, x, amount=0.5, constrained=False)
    exported = chanprune.export(model, x, method=method)
    inplace = [n.target for n in exported.graph.nodes if n.target in INPLACE.values()]
    if net == "Acts":
        assert len(inplace) == 5, exported.graph  # relu6, hardswish, silu, relu, gelu
    else:
        assert aten.add_.Tensor in [n.target for n in exported.graph.nodes]
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))
    # training: the same gradients as with functional activations
    functional = _functional(exported)
    grads = []
    for m in (exported, functional):
        m.zero_grad()
        m(x).square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-6), k


def _add_graph(same, alpha=None, read_twice=False):
    g = fx.Graph()
    x, w = g.placeholder("x"), g.placeholder("w")
    c = g.call_function(aten.conv2d.default, (x, w))
    add = g.call_function(aten.add.Tensor, (x, c), {"alpha": alpha} if alpha else {})
    add.meta[SAME_SHAPE] = same
    g.output((add, c) if read_twice else add)
    return g, add


def test_an_add_overwrites_its_private_operand_vouched_for():
    g, add = _add_graph(same=(1,))
    assert inplace_activations(g) == 1
    assert add.target is aten.add_.Tensor and add.args[0].target is aten.conv2d.default


@pytest.mark.parametrize(
    "case", ["not vouched", "vouched operand not private", "alpha", "read twice"]
)
def test_adds_others_can_observe_stay_functional(case):
    g, add = _add_graph(
        same=() if case == "not vouched" else (0,) if case.startswith("vouched") else (1,),
        alpha=2 if case == "alpha" else None,  # a + 2b != b + 2a
        read_twice=case == "read twice",
    )
    assert inplace_activations(g) == 0
    assert add.target is aten.add.Tensor


class Residuals(nn.Module):
    """Adds whose fresh operand may or may not take the result: a residual (yes), a pooled
    branch broadcast over space (no), a branch computed from a parameter, broadcast over the
    batch (no)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.res = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.gate = nn.Conv2d(8, 8, 1)
        self.pos = nn.Parameter(torch.randn(1, 8, 6, 6))
        self.mix = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(self.res(y) + y)  # in place: bn output + y
        y = self.gate(y.mean((2, 3), keepdim=True)) + y  # (N, 8, 1, 1) + (N, 8, 6, 6)
        y = self.mix(self.pos) + y  # (1, 8, 6, 6) + (N, 8, 6, 6)
        return self.head(y)


@pytest.mark.parametrize("batch", [1, 3])
def test_only_adds_whose_operand_takes_the_result_go_in_place(batch):
    torch.manual_seed(0)
    model = Residuals().eval()
    x = torch.randn(batch, 3, 6, 6)
    chanprune.mask(model, x, amount=0.25, constrained=False)
    exported = chanprune.export(model, x)
    # all three adds overwrite a full-size operand (the residual's bn output, then gathers of y
    # and the sum), never the pooled or the parameter branch: that would raise at any batch
    adds = [n for n in exported.graph.nodes if n.target is aten.add_.Tensor]
    assert len(adds) == 3, exported.code
    with torch.no_grad():
        for b in (1, 2, 5):  # other batch sizes too: nothing broadcasts into an in-place add
            xb = torch.randn(b, 3, 6, 6)
            assert outputs_match(model(xb), exported(xb))
