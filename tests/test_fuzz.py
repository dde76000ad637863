"""Differential fuzzing: random networks and masks, exported == masked for both methods, and
every correct export rebuilt from its pruning spec.

CI runs a few hundred cases (75 networks x 4 mask sets); benchmarks/soak.py runs many thousands
with the same generator. A failure prints the minimal (shrunk) case; rebuild it with
``chanprune.fuzz.run_case(case)``.
"""

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from chanprune import fuzz
from chanprune.fuzz import Case, MaskSet, MaskSpec, NetSpec, Op, RandomDraw, draw_case
from chanprune.fuzz.run import _channels

SETTINGS = settings(
    max_examples=75,
    deadline=None,
    derandomize=True,  # CI sees the same cases every run; the soak explores further
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(fuzz.case_strategy(max_ops=8, masksets=4))
def test_exported_equals_masked(case):
    """... and every correct export can be saved as a spec that rebuilds it."""
    assert_all_ok(case)


def assert_all_ok(case: Case) -> None:
    """Every mask set of ``case`` exports exactly with both methods and rebuilds from its spec."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcomes = fuzz.run_case(case, spec=True)
    for ms, out in zip(case.masksets, outcomes, strict=True):
        assert out.ok, (ms, out.log, out.results)


def test_generator_covers_the_listed_constructs():
    """Over a few hundred seeds the soak's generator draws every construct the issue lists."""
    seen = set()
    for seed in range(300):
        case = draw_case(RandomDraw(seed), 12, 4, extra=True)
        for ms in case.masksets:
            seen |= fuzz.features(case, ms)
    wanted = {
        "conv", "conv:grouped", "conv:depthwise", "conv:strided", "conv:dilated", "linear",
        "bn", "ln", "gn", "add", "cat", "split:sizes", "split:chunk", "se", "pool", "gap",
        "flatten", "shuffle:view", "shuffle:module", "plin", "mlp", "slice", "gate", "scale",
        "two outputs", "frozen:frozen", "frozen:div", "views:split", "views:slice", "convt",
        "convt:depthwise", "addmm", "rmsnorm:rms", "rmsnorm:rms64", "rmsnorm:ln",
        "rmsnorm:lnvar", "rmsnorm:stat", "attention:sdpa", "attention:fused",
        "attention:rotary", "attention:gqa", "attention:gqa-sdpa", "attention:written",
        "inorm:affine", "inorm:plain", "twice:pair", "twice:chain", "shift:roll", "shift:gru",
        "embed",
        "mask:output none", "mask:input all_but_one", "mask:output all", "mask:input nested",
        "mask:input disjoint", "mask:input same", "mask:output all raw",
        "mask:auto input constrained", "mask:auto output", "mask:auto output mixed",
        "mask:auto input mixed",
    }  # fmt: skip
    assert wanted <= seen, wanted - seen


def test_cases_are_reproducible_from_their_seed():
    a, b = draw_case(RandomDraw(7), 12, 3), draw_case(RandomDraw(7), 12, 3)
    assert a == b
    (m1, x1), (m2, x2) = fuzz.build(a), fuzz.build(b)
    assert torch.equal(x1, x2)
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m1.state_dict().items())


NET = NetSpec(
    in_ch=2,
    size=4,
    ops=(
        Op("conv", (0,), (("bias", False), ("dil", 1), ("groups", 1), ("k", 3), ("out", 6),
                          ("stride", 1), ("style", "plain"))),
        Op("bn", (1,)),
        Op("act", (2,), (("fn", "relu"),)),
        Op("conv", (3,), (("bias", True), ("dil", 1), ("groups", 1), ("k", 1), ("out", 3),
                          ("stride", 1), ("style", "plain"))),
        Op("gap", (4,), (("how", "mean"),)),
    ),
    outputs=(5,),
)  # fmt: skip


def test_the_property_catches_a_wrong_export(monkeypatch):
    """Break the rewriter (BN shifts treated as zero): run_case must report a mismatch."""
    from chanprune.analysis.rules import channelwise

    original = channelwise.BatchNorm.scale_shift

    def wrong(self, node, lv):
        scale, shift = original(self, node, lv)
        return scale, shift & False

    monkeypatch.setattr(channelwise.BatchNorm, "scale_shift", wrong)
    # raw zeroing of two filters: their BN shift keeps the channels alive in the masked model
    case = Case(NET, (MaskSet(masks=(MaskSpec("output", 0, "random", 3, api=False),)),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (out,) = fuzz.run_case(case)
    assert not out.ok
    assert all(r.startswith("mismatch") for r in out.results.values()), out.results


def test_the_property_catches_a_wrong_spec(monkeypatch):
    """Break the spec decoding (kept rows listed in reverse): the spec round trip must fail."""
    from chanprune.deploy import spec as spec_module

    original = spec_module._decode

    def wrong(name, probe, tensor):
        keep = original(name, probe, tensor)
        return [keep[0][::-1] if keep[0] else keep[0], *keep[1:]]

    monkeypatch.setattr(spec_module, "_decode", wrong)
    case = Case(NET, (MaskSet(masks=(MaskSpec("output", 0, "random", 3),)),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (out,) = fuzz.run_case(case, spec=True)
    assert out.results["reorder"] == "ok" and out.results["baseline"] == "ok"
    assert out.results["reorder spec"].startswith("mismatch (spec)"), out.results
    assert not out.ok


@pytest.mark.parametrize("kind", fuzz.MASK_KINDS)
def test_mask_kinds(kind):
    import random

    prev = [1, 2, 5]
    got = _channels(kind, 8, random.Random(0), prev)
    assert got == sorted(set(got)) and all(0 <= c < 8 for c in got)
    if kind == "none":
        assert got == []
    elif kind == "all":
        assert got == list(range(8))
    elif kind == "all_but_one":
        assert len(got) == 7
    elif kind == "same":
        assert got == prev
    elif kind == "nested":
        assert set(got) <= set(prev) or set(got) >= set(prev)
    elif kind == "disjoint":
        assert not set(got) & set(prev)
    else:
        assert got


class ReadTwice(torch.nn.Module):
    """A consumer reads channels 0 and 1 twice (concatenated with a slice of themselves)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.out = torch.nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.out(torch.cat([y, y[:, :2]], 1))


@pytest.mark.parametrize("heuristic", ["l1", "fpgm"])
def test_regression_input_side_scores_of_a_channel_read_twice(heuristic):
    """Found by the soak (masking/masks.py _rows): input-side scoring stacked one row per channel
    and crashed when a consumer reads some channels at more positions than others."""
    from helpers import prune_and_check

    model, x = ReadTwice().eval(), torch.randn(2, 3, 8, 8)
    exported, masks = prune_and_check(model, x, amount=0.5, heuristic=heuristic, side="input")
    assert len(masks["out.weight"]) == 2
    assert exported.out.weight.shape[1] < 6


def test_regression_a_view_whose_input_strides_change_when_pruned():
    """Found by the soak once the addmm op joined the menu (seed 5107; analysis/rules/shape.py
    View.emit): a channels-last linear's output, gated and flattened by a view that holds only
    for the original strides, crashed the export ('view size is not compatible with input
    tensor's size and stride') once a pad before the gate changed them. The case as seed 5107
    drew it then (the menu has grown since, so the seed draws another network now)."""
    ops = (
        Op("add", (0, 0), (("fn", "add"),)),
        Op("views", (1,), (("body", "none"), ("how", "slice"), ("out", 4), ("swap", True))),
        Op("addmm", (1,), (("out", 4),)),
        Op("slice", (3,), (("start", 2), ("stop", 3))),
        Op("mlp", (1,), (("act", "tanh"), ("hidden", 10), ("norm", False), ("out", 4))),
        Op("mlp", (4,), (("act", "gelu"), ("hidden", 6), ("norm", True), ("out", 1))),
        Op("gate", (5, 0), ()),
        Op("mlp", (1,), (("act", "tanh"), ("hidden", 12), ("norm", False), ("out", 4))),
        Op("addmm", (7,), (("out", 4),)),
        Op("gap", (9,), (("how", "mean"),)),
        Op("linear", (10,), (("bias", True), ("out", 3))),
    )
    masksets = (
        MaskSet(masks=(MaskSpec("input", 3, "nested", 37260),)),
        MaskSet(masks=(MaskSpec("output", 6, "none", 46977, api=False),)),
        MaskSet(),
    )
    net = NetSpec(in_ch=4, size=6, ops=ops, outputs=(11,))
    assert_all_ok(Case(net, masksets, seed=15733, batch=3))


def test_regression_flatten_of_a_non_contiguous_map_on_the_fast_capture_path():
    """Found by CI's fuzz test once conv_transpose2d joined the fast path's op list: the fast
    path wrote flatten as a view, which fails on a channels-last LayerNorm's permuted output
    (capture/functional.py _flatten now writes a reshape there)."""
    conv_t = (("bias", False), ("groups", 2), ("k", 1), ("out", 2))
    relu = (("fn", "relu"),)
    ops = (Op("convt", (0,), conv_t), Op("ln", (1,)), Op("flatten", (2,)), Op("act", (3,), relu))
    assert_all_ok(Case(net=NetSpec(in_ch=2, size=4, ops=ops, outputs=(4,)), masksets=(MaskSet(),)))


def test_regression_a_view_whose_traced_strides_are_not_the_real_ones():
    """Found by the soak once 'shift' joined the menu (seed 15): torch.export wrote a flatten
    as a view, chosen from the fake tensors' strides, which after an element-wise op on a
    rolled map and a channels-last LayerNorm's output are not the real ones, so the captured
    graph failed at run time (capture/trace.py now writes every view as a reshape)."""
    gru = (("by", 1), ("gru", True))
    ops = (
        Op("pool", (0,), (("how", "max2"),)), Op("shift", (1,), (("by", 2), ("gru", True))),
        Op("ln", (2,)), Op("se", (1,), (("gate", "hardsigmoid"), ("mid", 3))),
        Op("shift", (3,), gru), Op("gn", (4,), (("groups", 2),)), Op("flatten", (5,)),
    )  # fmt: skip
    masks = (MaskSet(masks=(MaskSpec("output", 4, "same", 64878),)), MaskSet())
    assert_all_ok(Case(NetSpec(in_ch=2, size=4, ops=ops, outputs=(7,)), masks, seed=8087, batch=1))
