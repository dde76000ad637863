"""The in-place activation pass: which activations it rewrites, and that exports stay exact and
trainable with them."""

import operator

import pytest
import torch
from torch import fx, nn

import chanprune
from chanprune.rewrite.inplace import INPLACE, inplace_activations, undo_inplace
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


@pytest.mark.parametrize("method", ["reorder", "baseline"])
def test_exports_are_exact_and_train_alike_with_activations_in_place(method):
    torch.manual_seed(0)
    model = Acts().eval()
    x = torch.randn(4, 3, 8, 8)
    chanprune.mask(model, x, amount=0.5, constrained=False)
    exported = chanprune.export(model, x, method=method)
    inplace = [n.target for n in exported.graph.nodes if n.target in INPLACE.values()]
    assert len(inplace) == 5, exported.graph  # relu6, hardswish, silu, relu, gelu
    with torch.no_grad():
        assert outputs_match(model(x), exported(x))
    # training: the same gradients as with functional activations
    functional = undo_inplace(exported)
    assert not any(n.target in INPLACE.values() for n in functional.graph.nodes)
    grads = []
    for m in (exported, functional):
        m.zero_grad()
        m(x).square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-6), k
