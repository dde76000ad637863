"""Each op rule on a small hand-built multi-branch module: exact export, and channels removed."""

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from helpers import outputs_match, prune_and_check

MASKINGS = [
    dict(amount=0.5, side="output", constrained=False),
    dict(amount=0.5, side="output", constrained=True),
    dict(amount=0.5, side="input", constrained=False),
    dict(amount=0.5, side="input", constrained=True),
]


def cbr(i, o, k=3, groups=1):
    return nn.Sequential(
        nn.Conv2d(i, o, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(o), nn.ReLU()
    )


def randomise_bn(model):
    """Non-trivial BN statistics so a forgotten BN shift would show."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


class Residual(nn.Module):
    """Two residual blocks sharing one segment, then a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.a = nn.Sequential(cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.b = nn.Sequential(cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = torch.relu(self.b(x) - x)  # sub unifies channels like add
        return self.head(x.mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = cbr(3, 24, 1)
        self.reduce = nn.Conv2d(24, 6, 1)
        self.gate = nn.Conv2d(6, 24, 1)
        self.project = nn.Conv2d(24, 8, 1)

    def forward(self, x):
        x = self.expand(x)
        s = torch.sigmoid(self.gate(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.project(x * s).flatten(1).sum(1, keepdim=True)


class Concat(nn.Module):
    """Inception-style branches and a DenseNet-style concat that includes an untracked input."""

    def __init__(self):
        super().__init__()
        self.b1, self.b2 = cbr(3, 8, 1), cbr(3, 12, 3)
        self.norm = nn.BatchNorm2d(23)
        self.out = nn.Conv2d(23, 5, 1)

    def forward(self, x):
        y = torch.cat([self.b1(x), x, self.b2(x)], 1)
        return self.out(torch.relu(self.norm(y)))


class SplitSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(3, 16)
        self.left, self.right = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)
        self.tail = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        x = self.conv(x)
        a, b = x.chunk(2, dim=1)
        c = torch.split(x, [10, 6], dim=1)[1]
        return torch.cat([self.left(a), self.right(b)], 1).sum(1, keepdim=True) + self.tail(c)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = cbr(3, 16, 1)
        self.dw = cbr(16, 16, 3, groups=16)
        self.pw2 = cbr(16, 16, 1)
        self.gc = cbr(16, 16, 3, groups=4)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.out(self.gc(self.pw2(self.dw(self.pw(x)))))


class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(3, 16)
        self.out = nn.Linear(16 * 2 * 2, 3)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.conv(x), 2)
        x = nn.functional.avg_pool2d(x, 2)
        x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.out(torch.flatten(x, 1))  # flatten into a linear: 4 columns per channel


class ChannelsLast(nn.Module):
    """ConvNeXt-like: depthwise conv, permute, MLP on the last dim, layer scale, permute back."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.gamma = nn.Parameter(torch.rand(16))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(y))) * self.gamma
        return self.head(x + y.permute(0, 3, 1, 2))


class Norms(nn.Module):
    """LayerNorm / GroupNorm over channels do not commute with removing channels."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.ln = nn.LayerNorm(16)
        self.c3 = nn.Conv2d(16, 8, 1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.gn(self.c2(torch.relu(self.c1(x))))
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.out(torch.relu(self.c3(x)))


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 16, 1)
        self.c2 = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = self.c1(x)
        n, c, h, w = x.shape
        x = x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.c2(x)


MODULES = [
    Residual,
    SqueezeExcite,
    Concat,
    SplitSlice,
    Grouped,
    Pools,
    ChannelsLast,
    Norms,
    Shuffle,
]


@pytest.mark.parametrize("method", ["baseline", "reorder"])
@pytest.mark.parametrize(
    "masking", MASKINGS, ids=lambda m: f"{m['side']}-{'c' if m['constrained'] else 'u'}"
)
@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_rule_export_is_exact(cls, masking, method):
    model = randomise_bn(cls())
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported, masks = prune_and_check(model, x, method=method, **masking)
    assert masks, "something was masked"
    assert chanprune.count_params(exported) < chanprune.count_params(model)


def _pinned_weights(model, x):
    an = analyze(capture(model, x), warn=False)
    return {p.weight for p in an.producers if an.pinned[an.root[p.ids]].all()}


def test_residual_stage_is_one_segment():
    model = Residual().eval()
    an = analyze(capture(model, torch.randn(1, 3, 8, 8)))
    stem = an.producer_of("stem.0.weight")
    for w in ("a.1.weight", "b.1.weight"):
        assert (an.root[an.producer_of(w).ids] == an.root[stem.ids]).all()
    inner = an.producer_of("a.0.0.weight")
    assert not set(an.root[inner.ids]) & set(an.root[stem.ids])


def test_squeeze_excite_gate_joins_the_gated_segment():
    model = SqueezeExcite().eval()
    an = analyze(capture(model, torch.randn(1, 3, 8, 8)))
    gate, expand = an.producer_of("gate.weight"), an.producer_of("expand.0.weight")
    assert (an.root[gate.ids] == an.root[expand.ids]).all()
    # zeroing a gate filter leaves sigmoid(0) = 0.5, not zero: never an output-side candidate
    assert an.dependent[gate.first : gate.first + gate.channels].all()


def test_grouped_conv_channels_are_prunable_with_per_group_padding():
    model = randomise_bn(Grouped()).eval()
    x = torch.randn(2, 3, 8, 8)
    masks = chanprune.mask(model, x, amount=0.5)
    assert {"pw.0.weight", "pw2.0.weight", "gc.0.weight"} <= set(masks)
    # one row of every group of gc (4 groups of 4) and two rows of group 0 of pw2's readers
    with torch.no_grad():
        model.load_state_dict(randomise_bn(Grouped()).state_dict())
    chanprune.apply_masks(model, x, {"gc.0.weight": [0, 5, 10, 15], "pw2.0.weight": [0, 1]})
    exported, _ = prune_and_check(model, x, method="reorder", group_quantum=1)  # exact counts
    gc = exported.get_parameter("gc.0.weight")
    assert tuple(gc.shape) == (12, 4, 3, 3)  # 3 kept rows per group
    # uneven: group 0 loses three rows, the others none -> every group keeps 4 slots
    with torch.no_grad():
        model.load_state_dict(randomise_bn(Grouped()).state_dict())
    chanprune.apply_masks(model, x, {"gc.0.weight": [0, 1, 2]})
    exported, _ = prune_and_check(model, x, method="baseline", group_quantum=1)
    assert tuple(exported.get_parameter("gc.0.weight").shape) == (16, 4, 3, 3)


class WideGroups(nn.Module):
    """Two groups of 16 channels, RegNet-like: 1x1, grouped 3x3, 1x1."""

    def __init__(self):
        super().__init__()
        self.a = cbr(3, 32, 1)
        self.gc = cbr(32, 32, 3, groups=2)
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.out(self.gc(self.a(x)))


@pytest.mark.parametrize(
    "pruned_rows, quantum, per_group",
    [
        (3, 8, 16),  # 13 kept rows per group: rounded up to the whole group of 16
        (9, 8, 8),  # 7 kept: rounded up to 8
        (8, 8, 8),  # 8 kept: already a multiple
        (3, 1, 13),  # no rounding: the fullest group's count
    ],
)
def test_grouped_conv_groups_round_up_to_the_quantum(pruned_rows, quantum, per_group):
    """oneDNN's grouped kernels are fastest at 8 or 16 channels a group (kernels table of
    benchmarks/studies/results/group_quantum.md): the rounded conv must have those and stay
    exact."""
    model = randomise_bn(WideGroups()).eval()
    x = torch.randn(2, 3, 8, 8)
    rows = [g * 16 + i for g in range(2) for i in range(pruned_rows)]
    chanprune.apply_masks(model, x, {"gc.0.weight": rows})
    for method in ("reorder", "baseline"):
        exported, _ = prune_and_check(model, x, method=method, group_quantum=quantum)
        w = exported.get_parameter("gc.0.weight")
        assert tuple(w.shape) == (2 * per_group, 16, 3, 3), method
        assert exported.chanprune_group_quantum == quantum


class InvertedResidual(nn.Module):
    """MobileNet-like: expand 1x1, depthwise 3x3, squeeze-excitation, project 1x1."""

    def __init__(self):
        super().__init__()
        self.expand = cbr(3, 32, 1)
        self.dw = cbr(32, 32, 3, groups=32)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 8, 1), nn.ReLU())
        self.se_up = nn.Conv2d(8, 32, 1)
        self.project = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        h = self.dw(self.expand(x))
        return self.project(h * torch.sigmoid(self.se_up(self.se(h))))


@pytest.mark.parametrize(
    "pruned, quantum, width",
    [
        (3, 8, 32),  # 29 kept: rounded up to 32
        (9, 8, 24),  # 23 kept: 24
        (8, 8, 24),  # 24 kept: already a multiple
        (3, 1, 29),  # no rounding
        (30, 8, 8),  # 2 kept: 8, all but 2 of them fillers
    ],
)
def test_depthwise_width_rounds_up_to_the_quantum(pruned, quantum, width):
    """ONNX Runtime runs a depthwise conv blocked only at multiples of 8 channels
    (benchmarks/studies/results/depthwise_quantum.md). The fillers are kept in every tensor of the
    segment (the expand rows, both BNs, the SE gate) so nothing pads or gathers between them,
    and the project conv, which reads every other channel, reads them too: no slice."""
    model = randomise_bn(InvertedResidual()).eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"expand.0.weight": list(range(1, 1 + pruned))})
    for method in ("reorder", "baseline"):
        exported, _ = prune_and_check(model, x, method=method, group_quantum=quantum)
        assert tuple(exported.get_parameter("dw.0.weight").shape) == (width, 1, 3, 3), method
        assert exported.get_parameter("expand.0.weight").shape[0] == width, method
        assert exported.get_parameter("se_up.weight").shape[0] == width, method
        assert exported.get_parameter("project.weight").shape[1] == width, method
        assert exported.get_parameter("se.1.weight").shape[1] == width, method
        assert exported.chanprune_copies == [], method


class TwoReaders(nn.Module):
    """A depthwise conv's output read by two 1x1 convs."""

    def __init__(self):
        super().__init__()
        self.expand, self.dw = cbr(3, 32, 1), cbr(32, 32, 3, groups=32)
        self.a, self.b = nn.Conv2d(32, 4, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        h = self.dw(self.expand(x))
        return self.a(h) + self.b(h)


def test_depthwise_fillers_stay_out_of_a_consumer_reading_a_subset():
    """Only a consumer that reads every other kept channel reads the fillers (its whole input,
    no slice); one that reads a subset keeps its masked width."""
    model = randomise_bn(TwoReaders()).eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"expand.0.weight": [1, 2, 3]})  # 29 kept
    chanprune.apply_masks(model, x, {"b.weight": [4, 5]}, side="input")
    for method in ("reorder", "baseline"):
        exported, _ = prune_and_check(model, x, method=method)
        assert exported.get_parameter("dw.0.weight").shape[0] == 32, method
        assert exported.get_parameter("a.weight").shape[1] == 32, method
        assert exported.get_parameter("b.weight").shape[1] == 27, method


class SharedInput(nn.Module):
    """A depthwise conv and a 1x1 conv reading the same tensor."""

    def __init__(self):
        super().__init__()
        self.stem, self.dw = cbr(3, 16, 1), cbr(16, 16, 3, groups=16)
        self.a, self.b = nn.Conv2d(16, 4, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h = self.stem(x)
        return self.a(self.dw(h)) + self.b(h)


def test_depthwise_rounds_the_width_it_runs_at():
    """The depthwise conv keeps only the 8 channels ``a`` reads, but runs on all 13 its input
    holds (for ``b``; a channelwise op takes its input's layout): 13 is what gets rounded."""
    model = randomise_bn(SharedInput()).eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"stem.0.weight": [0, 1, 2]})  # h holds 13
    chanprune.apply_masks(model, x, {"a.weight": [3, 4, 5, 6, 7]}, side="input")
    for method in ("reorder", "baseline"):
        exported, _ = prune_and_check(model, x, method=method)
        assert exported.get_parameter("dw.0.weight").shape[0] == 16, method
        assert exported.get_parameter("b.weight").shape[1] == 16, method


def test_layer_and_group_norm_keep_their_channels_prunable():
    """Norms over channels run with the original channel count (removed channels padded back
    as zeros), so the producer feeding them still loses rows and the export stays exact."""
    model = randomise_bn(Norms()).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier warning
        an = analyze(capture(model, x))
    assert not an.barriers
    exported, masks = prune_and_check(model, x, amount=0.5, side="output")
    assert "c2.weight" in masks
    assert exported.c2.weight.shape[0] == 8  # rows gone, statistics still over 16 channels
    assert exported.gn.weight.shape[0] == 16 and exported.ln.weight.shape[0] == 16


class NormedStream(nn.Module):
    """A LayerNorm reading a stream whose other readers want a non-original channel order."""

    def __init__(self):
        super().__init__()
        self.stem, self.ln = nn.Linear(8, 16), nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 6), nn.Linear(16, 4)

    def forward(self, x):
        s = self.stem(x)
        return torch.cat([self.fc1(self.ln(s)), self.fc2(s)], 1)


@pytest.mark.parametrize("absent", [[], [1, 3]])
def test_layer_norm_reads_the_planned_order_without_a_copy(absent):
    """LayerNorm statistics ignore channel order: the reorder export feeds it the segment's
    planned order (weights permuted alike) instead of gathering back to the original order, and
    pads only for channels that are really absent."""
    model = NormedStream().eval()
    x = torch.randn(3, 8)
    with torch.no_grad():  # fc1 reads 4..15, fc2 the even channels: both slices in one order
        model.fc1.weight[:, :4] = 0
        model.fc2.weight[:, 1::2] = 0
        model.stem.weight[absent] = 0
        model.stem.bias[absent] = 0
    base, _ = prune_and_check(model, x, method="baseline")
    reorder, _ = prune_and_check(model, x, method="reorder")
    assert len(base.chanprune_copies) >= 1  # fc2 gathers the even channels
    assert [c.kind for c in reorder.chanprune_copies] == ["pad"] * (len(absent) > 0)
    assert reorder.ln.weight.shape[0] == 16  # statistics over all 16 channels


class TiedNorms(nn.Module):
    """Two LayerNorms sharing one weight and bias (the second through the functional form)."""

    def __init__(self):
        super().__init__()
        self.stem, self.ln = nn.Linear(8, 16), nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 4), nn.Linear(16, 4)

    def forward(self, x):
        s = self.stem(x)
        tied = nn.functional.layer_norm(s * 2, (16,), self.ln.weight, self.ln.bias)
        return self.fc1(self.ln(s)) + self.fc2(tied)


def test_norms_sharing_a_weight_keep_it_in_one_order():
    model = TiedNorms().eval()
    x = torch.randn(3, 8)
    with torch.no_grad():  # readers that disagree, so the planned order is not the original
        model.fc1.weight[:, :4] = 0
        model.fc2.weight[:, 1::2] = 0
    for method in ("baseline", "reorder"):
        prune_and_check(model, x, method=method)


class Unknown(nn.Module):
    """cumsum over channels has no rule: a barrier."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c3(torch.cumsum(self.c2(torch.relu(self.c1(x))), dim=1))


def test_op_without_rule_is_a_barrier_and_export_stays_exact():
    model = Unknown().eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="cumsum"):
        masks = chanprune.mask(model, x, amount=0.5)
    assert "c2.weight" not in masks and "c1.weight" in masks  # c2 feeds the barrier
    with torch.no_grad():  # hand-zero a channel feeding the barrier: still exact
        model.c2.weight[0] = 0
        model.c2.bias[0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported, _ = prune_and_check(model, x)
    assert exported.c2.weight.shape[0] == 8  # c2 kept whole (barrier)
    assert exported.c1.weight.shape[0] == 4


def test_hand_zeroed_channels_count_as_pruned():
    model = randomise_bn(Residual()).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.a[0][0].weight[:5] = 0  # filters ...
        model.a[0][1].weight[:5] = 0  # ... and their BN: the activation is exactly zero
        model.a[0][1].bias[:5] = 0
        model.b[0][0].weight[:3] = 0  # filters only: BN shift keeps them alive
    exported, _ = prune_and_check(model, x)
    assert exported.get_parameter("a.0.0.weight").shape[0] == 11
    assert exported.get_parameter("b.0.0.weight").shape[0] == 16


def test_constrained_masks_are_shared_across_the_segment():
    model = Residual().eval()
    masks = chanprune.mask(model, torch.randn(2, 3, 8, 8), amount=0.5, constrained=True)
    assert masks["stem.0.weight"] == masks["a.1.weight"] == masks["b.1.weight"]
    assert len(masks["stem.0.weight"]) == 8


class Fan(nn.Module):
    """One tensor read by three consumers with nested/overlapping channel sets."""

    def __init__(self, out: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 1)
        self.a, self.b, self.c = (nn.Conv2d(12, out, 1) for _ in range(3))

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.a(y) + self.b(y) + self.c(y)


def test_reorder_turns_gathers_into_slices():
    model = Fan().eval()
    x = torch.randn(2, 3, 8, 8)
    # all contiguous in the order 0 5 9 3 7; none is in the original order 0 3 5 7 9
    reads = {"a.weight": [0, 5, 9], "b.weight": [3, 5, 9], "c.weight": [3, 7]}
    with torch.no_grad():  # input-side masks: each consumer reads only its own channels
        for name, keep in reads.items():
            w = model.get_parameter(name)
            drop = [i for i in range(12) if i not in keep]
            w[:, drop] = 0
    base, _ = prune_and_check(model, x, method="baseline")
    reorder, _ = prune_and_check(model, x, method="reorder")
    assert len(base.chanprune_copies) == 3  # every consumer gathers in the original order
    assert reorder.chanprune_copies == []  # an order exists in which all three are slices
    assert reorder.get_parameter("stem.weight").shape[0] == 5  # the others are read by none


def test_reorder_adds_a_narrower_residual_branch_into_a_slice():
    """The branch writes 8 of the stream's 16 channels: the reorder export places them as one
    run and adds them into that slice in place (rewrite/writers.py), copying nothing."""
    from chanprune.rewrite.writers import add_slice_

    model = randomise_bn(Residual()).eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"a.1.weight": list(range(8))})  # branch a: 8 of 16
    base, _ = prune_and_check(model, x, method="baseline")
    reorder, _ = prune_and_check(model, x, method="reorder")
    assert [c.kind for c in base.chanprune_copies] == ["pad"]
    assert reorder.chanprune_copies == []
    assert sum(n.target is add_slice_ for n in reorder.graph.nodes) == 1


class Padded(nn.Module):
    """TF 'same' padding (F.pad over the spatial dims) between two convolutions."""

    def __init__(self, value=0.0):
        super().__init__()
        self.value = value
        self.c1, self.c2 = cbr(3, 8, 1), nn.Conv2d(8, 4, 3)

    def forward(self, x):
        x = nn.functional.pad(self.c1(x), (0, 1, 1, 1), value=self.value)
        return self.c2(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_spatial_pad_keeps_channels_prunable(value):
    model = randomise_bn(Padded(value)).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a barrier
        chanprune.apply_masks(model, x, {"c1.0.weight": [0, 2, 4, 6]})
        exported, _ = prune_and_check(model, x)
    # a zero pad keeps a pruned channel zero: c2 reads 4 channels; a 0.5 pad revives them
    assert exported.get_parameter("c2.weight").shape[1] == (4 if value == 0 else 8)
    assert exported.get_parameter("c1.0.weight").shape[0] == 4


class ViewedParams(nn.Module):
    """Per-channel parameters reshaped in forward (layer scale 2d, EvoNorm/FRN-style affine)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.beta = nn.Parameter(torch.rand(8) - 0.5)

    def forward(self, x):
        y = self.c1(x) * self.gamma.view(1, -1, 1, 1)
        return self.c2(y + self.beta.reshape(1, -1, 1, 1).to(torch.float32))


def test_parameters_viewed_in_forward_are_sliced_not_pinned():
    model = ViewedParams().eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported, masks = prune_and_check(model, x, amount=0.5, side="output")
    assert len(masks["c1.weight"]) == 4
    # beta is zeroed with the pruned filter (a companion), so c2 reads 4 channels
    assert exported.get_parameter("gamma").shape == (4,)
    assert exported.get_parameter("beta").shape == (4,)
    assert exported.get_parameter("c2.weight").shape[1] == 4


class GroupStd(nn.Module):
    """EvoNorm-S style: x / group_std(x), std per group of 4 channels, broadcast back."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.c1(x)
        b, c, h, w = y.shape
        g = y.reshape(b, 4, c // 4, h, w)
        std = g.var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(1e-5).sqrt()
        return self.c2(y / std.expand(g.shape).reshape(b, c, h, w))


def test_group_statistics_use_the_original_channel_count():
    model = GroupStd().eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        an = analyze(capture(model, x))
    assert not an.pinned[an.root[an.producer_of("c1.weight").ids]].any()
    chanprune.apply_masks(model, x, {"c1.weight": [0, 1, 2, 5, 9]})
    exported, _ = prune_and_check(model, x)
    assert exported.get_parameter("c1.weight").shape[0] == 11
    assert exported.get_parameter("c2.weight").shape[1] == 11


class MaxPoolIndices(nn.Module):
    """adaptive_max_pool2d returns (values, indices): the values keep the pruned channels."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = cbr(3, 8, 1), nn.Conv2d(8, 4, (2, 1))

    def forward(self, x):
        return self.c2(nn.functional.adaptive_max_pool2d(self.c1(x), (2, 1)))


def test_adaptive_max_pool_tuple_output_keeps_the_layout():
    model = randomise_bn(MaxPoolIndices()).eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"c1.0.weight": [1, 3, 6]})
    exported, _ = prune_and_check(model, x, method="reorder")
    assert exported.get_parameter("c2.weight").shape[1] == 5


class Attention(nn.Module):
    """timm-style fused attention: one qkv projection, heads, SDPA, output projection."""

    def __init__(self, dim=16, heads=4, mask=False, head_first=False):
        super().__init__()
        self.heads, self.mask, self.head_first = heads, mask, head_first
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        b, n, c = x.shape
        if self.head_first:  # timm MaxViT: per head [q | k | v]
            qkv = self.qkv(self.norm(x)).view(b, -1, self.heads, 3 * c // self.heads)
            q, k, v = qkv.transpose(1, 2).chunk(3, dim=3)
        else:
            qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, c // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = torch.arange(n * n, dtype=x.dtype).reshape(n, n) / (n * n) if self.mask else None
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, c))
        return self.head(x.mean(1))


@pytest.mark.parametrize("mask", [False, True])
def test_attention_heads_keep_their_width_and_drop_zero_pairs(mask):
    model = Attention(mask=mask).eval()
    x = torch.randn(2, 5, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier
        an = analyze(capture(model, x))
    assert not an.pinned[an.root[an.producer_of("qkv.weight").ids]].any()
    # head 0 loses q0, k1 (so pairs 0 and 1) and v0..v2; head 1 loses k4..k6 (pairs 4..6)
    chanprune.apply_masks(model, x, {"qkv.weight": [0, 17, 32, 33, 34, 20, 21, 22]})
    exported, _ = prune_and_check(model, x, method="reorder")
    # a q (k) row whose partner k (q) is zero is useless too: q1, k0 of head 0, q4..q6
    assert exported.get_parameter("qkv.weight").shape[0] == 48 - 8 - 5
    # q/k width per head: head 1 keeps 1 pair, head 0 keeps 2, others 4 -> 4 slots (no gain);
    # v: head 0 keeps 1 of 4 -> still 4 slots; proj reads the 13 live v channels
    assert exported.get_parameter("proj.weight").shape[1] == 13


def test_attention_pruned_evenly_narrows_every_head():
    model = Attention().eval()
    x = torch.randn(2, 5, 16)
    drop = [h * 4 + 3 for h in range(4)]  # q channel 3 and v channel 3 of every head
    chanprune.apply_masks(model, x, {"qkv.weight": drop + [32 + c for c in drop]})
    exported, _ = prune_and_check(model, x, method="reorder")
    assert exported.get_parameter("qkv.weight").shape[0] == 36  # q3, k3 (useless), v3 per head
    assert exported.get_parameter("proj.weight").shape[1] == 12  # 3 v channels per head


def test_attention_with_per_head_qkv_layout():
    """MaxViT's layout: the projection holds [q | k | v] per head, split by chunk."""
    model = Attention(head_first=True).eval()
    x = torch.randn(2, 5, 16)
    # head 0 is rows 0..11: q 0..3, k 4..7, v 8..11; drop q0 (k4 goes too) and v8, v9
    chanprune.apply_masks(model, x, {"qkv.weight": [0, 8, 9]})
    exported, _ = prune_and_check(model, x, method="reorder")
    assert exported.get_parameter("qkv.weight").shape[0] == 48 - 4
    assert exported.get_parameter("proj.weight").shape[1] == 14


class Dense(nn.Module):
    """Two DenseNet layers: each concatenates the earlier features, then BN, ReLU, 1x1 conv;
    the last concatenation is pooled before the classifier reads it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm1, self.conv1 = nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)
        self.norm2, self.conv2 = nn.BatchNorm2d(12), nn.Conv2d(12, 4, 1)
        self.norm3, self.fc = nn.BatchNorm2d(16), nn.Linear(16, 5)

    def forward(self, x):
        x0 = self.stem(x)
        x1 = self.conv1(torch.relu(self.norm1(x0)))
        x2 = self.conv2(torch.relu(self.norm2(torch.cat([x0, x1], 1))))
        y = torch.relu(self.norm3(torch.cat([x0, x1, x2], 1)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.mark.parametrize("method", ["baseline", "reorder"])
def test_a_concatenation_is_narrowed_before_the_norm_of_its_one_reader(method):
    """conv2 reads channels 0, 2, 5 of x0 and 1 of x1, which the stem and conv1 keep for the
    other readers too: the gather conv2 needs moves above norm2, which then holds 4 channels, not
    12; the classifier's gather stays after the pooling, where it copies 49x less."""
    model = randomise_bn(Dense()).eval()
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        model.conv2.weight[:, [1, 3, 4, 6, 7, 8, 10, 11]] = 0
        model.fc.weight[:, [0, 1, 9]] = 0
    pruned, _ = prune_and_check(model, x, method=method)
    assert pruned.get_parameter("norm2.weight").shape == (4,)
    assert pruned.get_parameter("norm3.weight").shape == (16,)
    copies = {c.source: c.elements for c in pruned.chanprune_copies}
    assert set(copies) <= {"cat", "reshape_default"}  # nothing gathers after norm2 or norm3
    if method == "baseline":  # (reorder finds an order where conv2's read is a slice)
        assert copies["cat"] == 4 * 49  # conv2's read, gathered at its concatenation
    assert copies["reshape_default"] == 13  # the classifier's, after the pooling


class TokenFan(nn.Module):
    """Tokens (batch, tokens, features): one Linear read by three Linears, so the gathers run
    along the last dimension."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 12)
        self.a, self.b, self.c = nn.Linear(12, 3), nn.Linear(12, 3), nn.Linear(12, 3)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.a(y) + self.b(y) + self.c(y)


@pytest.mark.parametrize("method", ["baseline", "reorder"])
def test_a_last_dimension_gather_is_a_broadcast_gather_and_any_batch_works(method):
    """index_select along the last dimension copies element by element (5-8x slower than a
    broadcast ``gather``): the exporter emits ``gather`` there, exact at any batch size."""
    model = TokenFan().eval()
    x = torch.randn(2, 5, 6)
    reads = {"a.weight": [0, 2, 4, 6], "b.weight": [2, 4, 8], "c.weight": [0, 4, 6, 8, 10]}
    with torch.no_grad():  # {0,2,4,6}, {2,4,8}, {0,4,6,8,10}: no order makes all three contiguous
        for name, keep in reads.items():
            w = model.get_parameter(name)
            w[:, [i for i in range(12) if i not in keep]] = 0
    pruned, _ = prune_and_check(model, x, method=method)
    targets = [n.target for n in pruned.graph.nodes if n.op == "call_function"]
    assert pruned.chanprune_copies and torch.ops.aten.gather.default in targets
    assert torch.ops.aten.index_select.default not in targets
    with torch.no_grad():
        x7 = torch.randn(7, 5, 6)
        assert torch.allclose(pruned(x7), model(x7), atol=1e-5)
    ideal = chanprune.ideal(pruned)
    assert all(n.target is not torch.ops.aten.gather.default for n in ideal.graph.nodes)
    assert ideal(x7).shape == (7, 5, 3)


@pytest.mark.parametrize("min_bytes", [0, 6 * 6 * 4, None])
def test_a_large_channel_read_copies_rows_and_any_batch_works(monkeypatch, min_bytes):
    """A read copying at least ROWS_MIN_BYTES per sample becomes ``gather_rows`` (index_select
    along dim 0 of the flattened map, faster there); a smaller one keeps ``index_select``. Both
    are exact at any batch size, the ideal drops both, and ``torch.export`` traces both. The
    middle case is one channel of the 6x6 float map: every gather copies more, but only if the
    read's bytes per sample are counted right."""
    from chanprune.deploy.saving import to_program
    from chanprune.rewrite import rewriter as rewrite

    if min_bytes is not None:
        monkeypatch.setattr(rewrite, "ROWS_MIN_BYTES", min_bytes)
    model = Fan(out=3).eval()  # TokenFan's reads on NCHW maps: the gathers run along dim 1
    x = torch.randn(1, 3, 6, 6)
    reads = {"a.weight": [0, 2, 4, 6], "b.weight": [2, 4, 8], "c.weight": [0, 4, 6, 8, 10]}
    with torch.no_grad():  # no order makes all three contiguous
        for name, keep in reads.items():
            w = model.get_parameter(name)
            w[:, [i for i in range(12) if i not in keep]] = 0
    pruned, _ = prune_and_check(model, x, method="reorder")
    targets = [n.target for n in pruned.graph.nodes if n.op == "call_function"]
    assert pruned.chanprune_copies
    rows = rewrite.gather_rows in targets
    assert rows == (min_bytes is not None)
    assert (torch.ops.aten.index_select.default in targets) == (not rows)
    with torch.no_grad():
        x5 = torch.randn(5, 3, 6, 6)
        assert torch.allclose(pruned(x5), model(x5), atol=1e-5)
        program = to_program(pruned, x)
        assert torch.allclose(program.module()(x5), model(x5), atol=1e-5)
    ideal = chanprune.ideal(pruned)
    kinds = {n.target for n in ideal.graph.nodes}
    assert rewrite.gather_rows not in kinds and torch.ops.aten.index_select.default not in kinds
    assert ideal(x5).shape == (5, 3, 6, 6)


def test_gather_rows_equals_index_select():
    from chanprune.rewrite.rewriter import gather_rows

    g = torch.Generator().manual_seed(0)
    for shape in [(1, 7, 3), (4, 9, 2, 5), (3, 5, 1, 1, 2)]:
        x = torch.randn(shape, generator=g)
        idx = torch.randperm(shape[1], generator=g)[: shape[1] - 2]  # unsorted on purpose
        assert torch.equal(gather_rows(x, idx), x.index_select(1, idx))


# per-channel vectors computed in forward from parameters and buffers (issue 24) -------------------
def _frozen(c):
    """torchvision's FrozenBatchNorm2d (scale and shift computed in forward from buffers),
    with non-trivial statistics so a forgotten shift would show."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    bn = FrozenBatchNorm2d(c)
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.uniform_(-0.5, 0.5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return bn


class FrozenBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn, self.c2 = nn.Conv2d(3, 16, 3, padding=1), _frozen(16), nn.Conv2d(16, 8, 3)

    def forward(self, x):
        return self.c2(torch.relu(self.bn(self.c1(x))))


@pytest.mark.parametrize("method", ["baseline", "reorder"])
@pytest.mark.parametrize("side", ["output", "input"])
def test_frozen_batchnorm_is_channelwise(side, method):
    model = FrozenBN().eval()
    x = torch.randn(2, 3, 8, 8)
    assert not _pinned_weights(model, x) - {"c2.weight"}  # c1's channels were all pinned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported, masks = prune_and_check(model, x, method=method, amount=0.3, side=side)
    assert sum(len(v) for v in masks.values()) == 4
    if side == "output":  # companions: the weight and bias, as for BatchNorm
        for name in ("weight", "bias"):
            assert (getattr(model.bn, name)[masks["c1.weight"]] == 0).all()
    assert chanprune.count_params(exported) < chanprune.count_params(model)
    state = exported.state_dict()
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert state[f"bn.{name}"].shape == (12,), name  # the buffers are sliced
    assert state["c1.weight"].shape[0] == state["c2.weight"].shape[1] == 12


class HandAffine(nn.Module):
    """A per-channel affine computed from buffers in forward, written by hand (not FrozenBN):
    on 1-D tensors then indexed to (C, 1, 1) / (1, C, 1, 1), or BatchNorm's formula with a
    division by a computed standard deviation."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.c1, self.c2 = nn.Conv2d(3, 12, 3, padding=1), nn.Conv2d(12, 5, 1)
        self.register_buffer("mean", torch.rand(12) - 0.5)
        self.register_buffer("var", torch.rand(12) + 0.5)
        self.gamma = nn.Parameter(torch.rand(12) + 0.5)
        self.beta = nn.Parameter(torch.rand(12) - 0.5)

    def forward(self, x):
        y = self.c1(x)
        if self.form == "1d":
            scale = (self.var + 1e-3).sqrt().reciprocal() * self.gamma
            shift = self.beta - self.mean * scale
            y = y * scale[:, None, None] + shift[None, :, None, None]
        else:
            std = (self.var + 1e-5).sqrt().view(1, -1, 1, 1)
            y = (y - self.mean.view(1, -1, 1, 1)) / std * self.gamma.view(1, -1, 1, 1)
            y = y + self.beta.view(1, -1, 1, 1)
        return self.c2(torch.relu(y))


@pytest.mark.parametrize("method", ["baseline", "reorder"])
@pytest.mark.parametrize("side", ["output", "input"])
@pytest.mark.parametrize("form", ["1d", "div"])
def test_per_channel_affine_computed_from_buffers(form, side, method):
    model = HandAffine(form).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported, _ = prune_and_check(model, x, method=method, amount=0.3, side=side)
    state = exported.state_dict()
    for name in ("mean", "var", "gamma", "beta", "c1.weight", "c2.weight"):
        assert state[name].shape[1 if name == "c2.weight" else 0] == 9, name


class SharedScale(nn.Module):
    """FrozenBN whose scale is also read by an op outside the affine (its sources then stay
    whole), and a second one after filters zeroed by hand (its shift keeps them alive)."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 8, 1), _frozen(8)
        self.c2, self.bn2, self.c3 = nn.Conv2d(8, 8, 1), _frozen(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        w = self.bn1.weight.reshape(1, -1, 1, 1)
        scale = w * (self.bn1.running_var.reshape(1, -1, 1, 1) + 1e-5).rsqrt()
        shift = self.bn1.bias.reshape(1, -1, 1, 1) - self.bn1.running_mean.reshape(1, -1, 1, 1)
        y = torch.relu(self.c1(x) * scale + shift * scale)
        y = self.c3(torch.relu(self.bn2(self.c2(y))))
        return y * scale.mean()


@pytest.mark.parametrize("method", ["baseline", "reorder"])
def test_parameter_vectors_read_elsewhere_or_reviving_stay_exact(method):
    model = SharedScale().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.c2.weight[[1, 4, 6]] = 0  # filters only: bn2's shift keeps them alive
        model.c2.bias[[1, 4, 6]] = 0
    chanprune.apply_masks(model, x, {"c2.weight": [0, 3], "c3.weight": [2]}, side="input")
    exported, _ = prune_and_check(model, x, method=method)
    state = exported.state_dict()
    assert state["bn1.weight"].shape == (8,)  # the scale is read by the mean too: whole
    assert state["c1.weight"].shape[0] == 6
    assert state["c2.weight"].shape[0] == 7 and state["bn2.bias"].shape == (7,)


def test_detection_backbone_with_frozen_batchnorm_prunes():
    """torchvision's FPN backbone (FrozenBatchNorm2d throughout its body): 2% of its channels
    were pruned instead of the 30% asked for."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.fpn = resnet_fpn_backbone(
                backbone_name="resnet18", weights=None, trainable_layers=5
            )

        def forward(self, x):
            return torch.cat([v.flatten(1) for v in self.fpn(x).values()], 1)

    torch.manual_seed(0)
    model = Backbone().eval()
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.load_state_dict(_frozen(m.weight.shape[0]).state_dict())
    x = torch.randn(1, 3, 64, 64)
    body = {
        f"fpn.body.{n}.weight": m.out_channels
        for n, m in model.fpn.body.named_modules()
        if isinstance(m, nn.Conv2d)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported, _ = prune_and_check(model, x, method="reorder", amount=0.3)
    state = exported.state_dict()
    removed = sum(n - state[k].shape[0] for k, n in body.items())
    assert removed >= 0.25 * sum(body.values()), (removed, sum(body.values()))
    assert chanprune.count_params(exported) < 0.75 * chanprune.count_params(model)


# splits and concatenations along the batch and other non-channel dims (issue 24) ------------------
class TwoView(nn.Module):
    """A two-view encoder: a shared stem on both views stacked along the batch, the batch split
    back into its views (``how``), each view through its own block, the views concatenated
    along the batch again, a shared head."""

    def __init__(self, how="chunk"):
        super().__init__()
        self.how = how
        self.stem, self.a, self.b = cbr(3, 16), cbr(16, 12), cbr(16, 12)
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        f = self.stem(x)
        n = f.shape[0]
        if self.how == "chunk":
            a, b = torch.chunk(f, 2, dim=0)
        elif self.how == "split":
            a, b = f.split(n // 2, dim=0)
        elif self.how == "uneven":  # the first sample against the rest
            a, b = f.split([1, n - 1], dim=0)
        elif self.how == "slice":
            a, b = f[: n // 2], f[n // 2 :]
        return self.head(torch.cat([self.a(a), self.b(b)], dim=0))


def _views_are_exact_at_another_batch(model, exported, n):
    y = torch.randn(n, 3, 8, 8)
    with torch.no_grad():
        ref, got = model(y), exported(y)
    assert ref.shape == got.shape == (n, 5, 8, 8)
    assert outputs_match(ref, got)


@pytest.mark.parametrize("method", ["baseline", "reorder"])
@pytest.mark.parametrize("side", ["output", "input"])
@pytest.mark.parametrize("how", ["chunk", "split", "uneven", "slice"])
def test_views_split_off_the_batch_are_pruned_exactly_at_any_batch(how, side, method):
    """chunk/split/slice along dim 0 hand every view all channels (the same ids); before, the
    split rule crashed on a size computed from the batch, and the marker capture baked one in."""
    torch.manual_seed(0)
    model = randomise_bn(TwoView(how)).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier: every channel stays prunable
        exported, masks = prune_and_check(model, x, method=method, amount=0.3, side=side)
    layers = ("stem.0", "a.0", "b.0") if side == "output" else ("a.0", "b.0", "head")
    assert {f"{layer}.weight" for layer in layers} <= set(masks)
    assert chanprune.count_params(exported) < chanprune.count_params(model)
    for n in (4, 6):
        _views_are_exact_at_another_batch(model, exported, n)


def test_the_views_of_one_split_are_one_segment():
    """Both views' blocks write into the concatenation along the batch: one segment, as a
    residual add's operands; the stem's channels reach both views with the same ids."""
    model = TwoView("chunk").eval()
    an = analyze(capture(model, torch.randn(2, 3, 8, 8)))
    rows = {w: an.resolve(an.producer_of(f"{w}.0.weight").ids).tolist() for w in ("a", "b")}
    assert rows["a"] == rows["b"]
    cols = {w: an.resolve(an.consumer_of(f"{w}.0.weight").ids).tolist() for w in ("a", "b")}
    assert cols["a"] == cols["b"] == an.resolve(an.producer_of("stem.0.weight").ids).tolist()
    assert not an.barriers


class BatchCat(nn.Module):
    """Two branches concatenated along the batch (dim 0), a shared head, the halves added."""

    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 10), cbr(3, 10)
        self.head = nn.Conv2d(10, 4, 3, padding=1)

    def forward(self, x):
        n = x.shape[0]
        h = self.head(torch.cat([self.a(x), self.b(x)], 0))
        return h[:n] + h[n:]


@pytest.mark.parametrize("method", ["baseline", "reorder"])
@pytest.mark.parametrize("side", ["output", "input"])
def test_a_concatenation_along_the_batch_is_exact(side, method):
    masks = _pruned_without_barrier(BatchCat, 3, 5, method, side)
    assert masks


def _pruned_without_barrier(cls, batch: int, other: int, method: str, side: str) -> dict:
    """Mask 30% of a fresh ``cls`` with no barrier warning, export, check it shrank and is exact
    at batch ``other`` too; returns the masks."""
    torch.manual_seed(0)
    model = randomise_bn(cls()).eval()
    x = torch.randn(batch, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported, masks = prune_and_check(model, x, method=method, amount=0.3, side=side)
    assert chanprune.count_params(exported) < chanprune.count_params(model)
    y = torch.randn(other, 3, 8, 8)
    with torch.no_grad():
        assert outputs_match(model(y), exported(y))
    return masks


class OtherDims(nn.Module):
    """Splits and joins along dims that are neither the batch nor the channels: the height
    unevenly (each part through its own conv, concatenated back), the width by unbind and
    stack; and two views joined by stack."""

    def __init__(self):
        super().__init__()
        self.stem, self.top, self.bottom = cbr(3, 12), cbr(12, 8), cbr(12, 8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f = self.stem(x)
        top, bottom = f.split([3, 5], dim=2)
        g = torch.cat([self.top(top), self.bottom(bottom)], dim=2)
        g = torch.stack([c * (i + 1) for i, c in enumerate(g.unbind(3))], dim=3)
        a, b = g.chunk(2, 0)
        return self.head(torch.stack([a, b], 1).flatten(0, 1))


@pytest.mark.parametrize("method", ["baseline", "reorder"])
@pytest.mark.parametrize("side", ["output", "input"])
def test_splits_and_joins_along_other_dims_keep_channels_prunable(side, method):
    masks = _pruned_without_barrier(OtherDims, 2, 4, method, side)
    assert len(masks) == 3
