"""Mixed masks (``constrained="mixed"``, the default with a target and Taylor scores): a layer's
own channels and whole segment channels ranked together by normalised importance per cost
saved."""

from __future__ import annotations

import copy
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import chanprune
from chanprune import InputError
from chanprune.analysis import analyze
from chanprune.capture import capture
from chanprune.cli import build_parser
from chanprune.cli.prune import _kind_word
from chanprune.latency.costs import ChannelCosts
from chanprune.masking.masks import _score, _units
from chanprune.masking.mixed import (
    budgets_between_picks,
    choose_mixed,
    importance,
    mac_costs,
    mixed_order,
    param_costs,
    take,
)
from chanprune.masking.targets import TOLERANCE, Target, TargetMasks, Try


class Tiny(nn.Module):
    """Three 1x1 convs add into a 4-channel stream (shared segment channels 0-3), read by
    ``inner`` and by ``tap``; ``inner`` writes a private segment through a depthwise conv into
    ``out``, whose output a linear reads flattened (each channel at 25 positions)."""

    def __init__(self):
        super().__init__()
        self.p1 = nn.Conv2d(3, 4, 1)
        self.p2 = nn.Conv2d(3, 4, 1)
        self.p3 = nn.Conv2d(3, 4, 1)
        self.inner = nn.Conv2d(4, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.out = nn.Conv2d(6, 2, 1)
        self.fc = nn.Linear(50, 3)
        self.tap = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        s = self.p1(x) + self.p2(x) + self.p3(x)
        h = self.out(self.dw(torch.relu(self.inner(s))))
        return self.fc(h.flatten(1)) + self.tap(s).mean((2, 3))


X = torch.randn(2, 3, 5, 5)


@pytest.fixture(scope="module")
def an():
    torch.manual_seed(0)
    return analyze(capture(Tiny().eval(), (X,)))


def index(layers) -> dict[str, int]:
    return {layer.weight.removesuffix(".weight"): i for i, layer in enumerate(layers)}


def units_of(an, side: str, scores: dict | None = None):
    """The side's candidate units, scored 1 except ``scores[(layer name, channel)]``."""
    us = _units(an, side)
    for u in us:
        u.score = (scores or {}).get((u.param.removesuffix(".weight"), u.channel), 1.0)
    return us


def hand_costs(an, inner_row: float = 10.0) -> ChannelCosts:
    """Round numbers: a stream channel saves 1 per producer row, 5 (inner) and 2 (tap) per
    reader column and 3 in the stream: 3 + 7 + 3 = 13 whole. A private channel of ``inner``
    saves its row, 2 in ``out`` and 1 in the depthwise conv."""
    P, C = index(an.producers), index(an.consumers)
    stream_roots = {int(r) for r in an.root[an.producers[P["p1"]].ids]}
    private = {int(r) for r in an.root[an.producers[P["inner"]].ids]}
    return ChannelCosts(
        "test",
        row={P["p1"]: 1, P["p2"]: 1, P["p3"]: 1, P["inner"]: inner_row, P["out"]: 4},
        col={C["inner"]: 5, C["tap"]: 2, C["out"]: 2, C["fc"]: 3},
        stream={**dict.fromkeys(stream_roots, 3.0), **dict.fromkeys(private, 1.0)},
        total=100.0,
    )


def picked(units) -> set[tuple[str, int]]:
    return {(u.param.removesuffix(".weight"), u.channel) for u in units}


# costs ----------------------------------------------------------------------------------------
def test_mac_costs_are_the_exact_macs_per_row_column_and_depthwise_channel(an):
    """By hand, per sample at 5x5: p rows 3 MACs x 25; inner rows 4 x 9 x 25, its input channels
    6 x 9 x 25; the depthwise conv 9 x 25 per channel; fc's input channel is read at 25
    positions by 3 outputs."""
    P, C = index(an.producers), index(an.consumers)
    c = mac_costs(an)
    assert c.unit == "MACs"
    assert c.row[P["p1"]] == 75 and c.row[P["inner"]] == 900 and c.row[P["out"]] == 150
    assert c.row[P["fc"]] == 50 and c.row[P["tap"]] == 100
    assert c.col[C["inner"]] == 1350 and c.col[C["out"]] == 50 and c.col[C["fc"]] == 75
    assert c.col[C["tap"]] == 75
    private = an.root[an.producers[P["inner"]].ids]
    assert {c.stream[int(r)] for r in private} == {225.0} and len(c.stream) == 6
    assert c.total == chanprune.count_macs(Tiny(), X[:1]) == 3 * 300 + 5400 + 1350 + 300 + 150 + 300


def test_param_costs_count_weight_rows_columns_and_every_parameter(an):
    P, C = index(an.producers), index(an.consumers)
    c = param_costs(an)
    assert c.row[P["inner"]] == 4 * 9 + 1 and c.col[C["inner"]] == 6 * 9
    assert c.col[C["fc"]] == 3 * 25  # a flattened channel: 25 columns
    assert set(c.stream.values()) == {10.0}  # depthwise: 9 weights and a bias per channel
    assert c.total == chanprune.count_params(Tiny())


# the ranking, by hand ----------------------------------------------------------------------
def test_a_cheap_unimportant_segment_channel_beats_rows(an):
    """Stream channel 0 scores 0.1 in all three producers: normalised by their layers' mean
    (0.775) it costs 0.39 of importance for 13 saved (0.03 per unit), while a row of it alone
    saves 1 (0.13) and a private row of inner 10 + 2 + 1 = 13 for 1 (0.077)."""
    low = {(p, 0): 0.1 for p in ("p1", "p2", "p3")}
    order = mixed_order(units_of(an, "output", low), an, "output", hand_costs(an))
    first = order[0]
    assert first.whole and first.saving == 13
    assert picked(first.units) == {("p1", 0), ("p2", 0), ("p3", 0)}
    got = choose_mixed(units_of(an, "output", low), an, "output", hand_costs(an), 13)
    assert picked(got) == {("p1", 0), ("p2", 0), ("p3", 0)}


def test_an_expensive_private_row_beats_the_segment_channel(an):
    """The same scores, but inner's row now saves 100 + 2 + 1: its least important channel
    (4, importance 0.5 / 0.917) comes first, then its channels of average importance while
    their depletion factor leaves them below the cheap stream channel (0.39 / 13 = 0.030): the
    k-th of inner's 6 counts 1.09 / (1 - k / 6), so k = 1, 2, 3 (0.0127, 0.0159, 0.0212 per
    unit saved) go before it and k = 4 (0.0318) after it."""
    low = {(p, 0): 0.1 for p in ("p1", "p2", "p3")} | {("inner", 4): 0.5}
    costs = hand_costs(an, inner_row=100)
    order = mixed_order(units_of(an, "output", low), an, "output", costs)
    assert not order[0].whole and picked(order[0].units) == {("inner", 4)}
    assert order[0].saving == 103
    assert all(not p.whole and p.saving == 103 for p in order[:4])  # 4 of inner's 6
    assert order[4].whole and picked(order[4].units) == {("p1", 0), ("p2", 0), ("p3", 0)}
    assert not order[5].whole and order[5].saving == 103  # inner's 5th, depleted
    assert picked(take(order, 103)) == {("inner", 4)}
    assert len(take(order, 104)) == 2


def test_the_last_unit_of_a_segment_channel_saves_the_rest_of_it(an):
    """Input side: tap's column of stream channel 1 is free (score 0) and saves 2; then inner's
    column of it is the last reader, and saves what is left of the channel: 13 - 2."""
    order = mixed_order(units_of(an, "input", {("tap", 1): 0.0}), an, "input", hand_costs(an))
    assert picked(order[0].units) == {("tap", 1)} and order[0].saving == 2
    (last,) = [p for p in order if ("inner", 1) in picked(p.units)]
    assert picked(last.units) == {("inner", 1)} and last.saving == 11


def test_for_the_dense_export_a_unit_saves_only_once_it_completes_its_segment_channel(an):
    """p1's row of stream channel 2 is free (score 0): for reorder it is picked first, alone,
    and saves its row; the dense export keeps the channel while p2 and p3 write it, so there
    that row saves nothing alone and stream channels go only whole."""
    scores = {("p1", 2): 0.0}
    P = index(an.producers)
    stream = {int(r) for r in an.root[an.producers[P["p1"]].ids]}
    reorder = mixed_order(units_of(an, "output", scores), an, "output", hand_costs(an))
    assert picked(reorder[0].units) == {("p1", 2)} and reorder[0].saving == 1
    dense = mixed_order(units_of(an, "output", scores), an, "output", hand_costs(an), partial=False)
    assert all(p.whole and p.saving == 13 for p in dense if p.root in stream)
    assert all(p.saving > 0 for p in dense)
    private = [p for p in dense if p.root not in stream]
    assert private and all(len(p.units) == 1 for p in private)  # a private channel's one row
    assert {p.saving for p in private if picked(p.units) <= {("inner", c) for c in range(6)}} == {
        13
    }


def test_scores_are_compared_across_layers_relative_to_their_layer_mean(an):
    """p1 scores in the hundreds, inner in fractions: what counts is a score over its layer's
    mean, so inner's channel at a third of its mean goes before p1's at half of its own."""
    big = {("p1", c): 100.0 * (c + 1) for c in range(4)}  # mean 250
    small = {("inner", c): 0.01 for c in range(6)} | {("inner", 2): 0.003}  # mean ~0.0088
    units = units_of(an, "output", big | small)
    imp = {
        (u.param.removesuffix(".weight"), u.channel): v
        for u, v in zip(units, importance(units), strict=True)
    }
    assert imp[("p1", 0)] == pytest.approx(0.4) and imp[("p2", 0)] == 1.0
    assert imp[("inner", 2)] == pytest.approx(0.003 / (0.053 / 6))
    costs = ChannelCosts("test", row={i: 1.0 for i in range(len(an.producers))}, total=1.0)
    order = mixed_order(units, an, "output", costs)
    assert [picked(p.units) for p in order[:2]] == [{("inner", 2)}, {("p1", 0)}]


def predicted(an, side: str, costs: ChannelCosts, taken: set) -> float:
    """The saving of a set of units, straight from the definition: a segment channel whose
    every producer row (output side) or reader (input side) is taken saves its rows, its
    readers' columns and its stream; otherwise each taken unit saves its own row or column."""
    rows: dict[int, list] = {}
    readers: dict[int, list] = {}
    for i, p in enumerate(an.producers):
        for c, r in enumerate(an.root[p.ids]):
            rows.setdefault(int(r), []).append((p.weight.removesuffix(".weight"), c, i))
    for j, con in enumerate(an.consumers):
        roots = an.root[con.ids]
        for c, r in enumerate(dict.fromkeys(roots.tolist())):
            readers.setdefault(int(r), []).append((con.weight.removesuffix(".weight"), c, j))
    total = 0.0
    for r in set(rows) | set(readers):
        full = sum(costs.row.get(i, 0) for *_, i in rows.get(r, []))
        full += sum(costs.col.get(j, 0) for *_, j in readers.get(r, [])) + costs.stream.get(r, 0)
        mine = rows.get(r, []) if side == "output" else readers.get(r, [])
        own = costs.row if side == "output" else costs.col
        if mine and all((n, c) in taken for n, c, _ in mine):
            total += full
        else:
            total += sum(own.get(k, 0) for n, c, k in mine if (n, c) in taken)
    return total


@pytest.mark.parametrize("side", ["output", "input"])
@pytest.mark.parametrize("seed", range(4))
def test_every_prefix_saves_what_it_predicts_once_per_unit_and_keeps_every_layer(an, side, seed):
    rng = random.Random(seed)
    units = units_of(an, side)
    for u in units:
        u.score = rng.choice([0.0, 0.5, 1.0, 2.0, 4.0])
    costs = hand_costs(an)
    order = mixed_order(units, an, side, costs)
    taken: set = set()
    cum = 0.0
    for p in order:
        new = picked(p.units)
        assert new and not new & taken  # never a unit twice
        taken |= new
        cum += p.saving
        assert p.saving > 0 and cum == pytest.approx(predicted(an, side, costs, taken))
    layers = an.producers if side == "output" else an.consumers
    for layer in layers:
        name = layer.weight.removesuffix(".weight")
        size = layer.channels if side == "output" else len(np.unique(layer.ids))
        n = sum(1 for t in taken if t[0] == name)
        assert n < size, name  # never emptied
    # nothing else can go: every layer is down to its last candidate
    left = dict.fromkeys((u.param for u in units), 0)
    for u in units:
        left[u.param] += (u.param.removesuffix(".weight"), u.channel) not in taken
    assert set(left.values()) == {1}
    # a budget takes the shortest prefix whose predicted saving reaches it
    for b in (0.0, 5.0, 13.0, 40.0, cum, 1e9):
        got = take(order, b)
        k = next(
            i for i in range(len(order) + 1) if sum(len(p.units) for p in order[:i]) == len(got)
        )
        assert sum(p.saving for p in order[:k]) >= b or k == len(order)
        assert k == 0 or sum(p.saving for p in order[: k - 1]) < b


def test_budgets_between_picks_stand_for_every_prefix(an):
    order = mixed_order(units_of(an, "output"), an, "output", hand_costs(an))
    budgets = budgets_between_picks(order, 100.0)
    assert budgets[0] == 0.0 and budgets == sorted(budgets) and len(budgets) == len(order) + 1
    lengths = [len(take(order, b * 100.0)) for b in budgets]
    assert lengths == [sum(len(p.units) for p in order[:k]) for k in range(len(order) + 1)]


# mask() ---------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, c: int, inner: int):
        super().__init__()
        self.a = nn.Conv2d(c, inner, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(inner)
        self.b = nn.Conv2d(inner, c, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn_b(self.b(torch.relu(self.bn_a(self.a(x))))))


class Residual(nn.Module):
    """A stem and two blocks on one stream, a conv + linear head."""

    def __init__(self, c: int = 24):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(Block(c, 32), Block(c, 40))
        self.head = nn.Conv2d(c, 48, 1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.fc(torch.relu(self.head(x)).mean((2, 3)))


XR = torch.randn(2, 3, 12, 12)


def residual(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Residual().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


COST = {
    "target_macs": chanprune.count_macs,
    "target_params": lambda m, x: chanprune.count_params(m),
}


@pytest.mark.parametrize("name", ["target_macs", "target_params"])
@pytest.mark.parametrize("side", ["output", "input"])
def test_mixed_masks_for_a_target_export_exactly_within_tolerance(name, side):
    unpruned = residual()
    for t in (0.8, 0.55):
        model = residual()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # a missed target would warn
            got = chanprune.mask(model, XR, side=side, constrained="mixed", **{name: t})
        pruned = chanprune.export(model, XR)  # checked against the masked model
        measured = COST[name](pruned, XR) / COST[name](unpruned, XR)
        assert measured == pytest.approx(got.ratio, abs=1e-9)
        assert abs(measured - t) <= TOLERANCE, (t, measured)
        if name == "target_macs":  # the budget found masks alike through amount=
            twin = residual()
            again = chanprune.mask(twin, XR, amount=got.amount, side=side, constrained="mixed")
            assert again == got
            assert all(torch.equal(v, twin.state_dict()[k]) for k, v in model.state_dict().items())


def test_mixed_masks_differ_from_both_plain_kinds_on_a_residual_stream():
    """At the same MACs target, mixed masks are neither the unconstrained nor the constrained
    ones (they take whole stream channels and inner rows alike)."""
    got = {}
    for kind in ("mixed", False, True):
        model = residual()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got[kind] = dict(chanprune.mask(model, XR, target_macs=0.6, constrained=kind))
    assert got["mixed"] != got[False] and got["mixed"] != got[True]
    stream = {"stem.weight", "blocks.0.b.weight", "blocks.1.b.weight"}
    rows = [set(got["mixed"].get(w, [])) for w in stream]
    assert set.intersection(*rows)  # some stream channel went from every writer


@pytest.mark.parametrize("side", ["output", "input"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_without_a_target_the_default_is_plain_unconstrained(side, scope):
    a, b = residual(), residual()
    got = chanprune.mask(a, XR, amount=0.4, side=side, scope=scope)
    assert got == chanprune.mask(b, XR, amount=0.4, side=side, scope=scope, constrained=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_mixed_with_an_amount_budgets_that_share_of_the_macs():
    """``amount=0.3`` with mixed masks zeroes the shortest prefix of the greedy order (L1
    scores, MAC costs) whose predicted saving reaches 0.3 of the conv/linear MACs."""
    model = residual()
    got = chanprune.mask(model, XR, amount=0.3, constrained="mixed")
    an = analyze(capture(residual(), (XR,)))
    units = _units(an, "output")
    _score(None, units, an, "l1", "output", ((XR,), {}), None)
    costs = mac_costs(an)
    order = mixed_order(units, an, "output", costs)
    cut = take(order, 0.3 * costs.total)
    assert {(u.param, u.channel) for u in cut} == {(k, c) for k, v in got.items() for c in v}
    k = next(i for i in range(len(order) + 1) if sum(len(p.units) for p in order[:i]) == len(cut))
    assert sum(p.saving for p in order[:k]) >= 0.3 * costs.total
    assert sum(p.saving for p in order[: k - 1]) < 0.3 * costs.total
    chanprune.export(model, XR)  # exact


@pytest.mark.parametrize("bad", ["yes", "Mixed", 1, 0.5, [True]])
def test_a_bad_constrained_value_is_refused_by_name(bad):
    model = residual()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InputError, match=r"constrained must be True, False, None .* 'mixed', got"):
        chanprune.mask(model, XR, constrained=bad)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# the command line -----------------------------------------------------------------------------
def test_cli_mask_kind_flags():
    parse = build_parser().parse_args
    base = ["prune", "resnet18"]
    assert parse(base).constrained is None
    assert parse([*base, "--mixed"]).constrained == "mixed"
    assert parse([*base, "--unconstrained"]).constrained is False
    assert parse([*base, "--constrained"]).constrained is True
    with pytest.raises(SystemExit):
        parse([*base, "--mixed", "--constrained"])
    assert parse(["eval", "resnet18", "--constrained"]).constrained is True  # eval: unchanged
    target = TargetMasks({}, Target("target_macs", 0.6), Try(0.1, 0.6))
    assert _kind_word(None, target) == ", constrained" and _kind_word(None, {}) == ""
    assert _kind_word(None, target, "taylor") == ", mixed"
    assert _kind_word(True, {}) == ", constrained" and _kind_word(False, target) == ""


def test_cli_prune_with_a_target_says_constrained_with_l1(capsys):
    pytest.importorskip("torchvision")
    from chanprune.cli import main

    args = ["prune", "resnet18", "--input-size", "32", "--runs", "0", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--target-macs", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "output side, constrained)" in out and "MACs target 0.6" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert abs(float(rows["MACs"][2]) - 0.6) <= TOLERANCE


def test_importance_grows_as_a_layer_is_depleted(an):
    """Equal scores: the k-th unit a layer of n loses counts 1 / (1 - k / n), so its last
    channel counts n times its score and a cheap layer is not cut to one channel first."""
    units = [u for u in units_of(an, "output", {}) if u.param == "inner.weight"]
    n = len(units)
    got = sorted(importance(units))
    assert got == pytest.approx([1 / (1 - k / n) for k in range(n)])


def test_rescore_is_called_per_share_saved_and_steers_the_rest_of_the_order(an):
    """``rescore(taken)`` runs each time another ``every`` of the total is saved; afterwards
    the order follows the new scores: here they make inner's private rows (13 saved each,
    just over the first 10% of the total) nearly free, so the picks after the first rescoring
    are inner's rows while the stream's rows wait."""
    units = units_of(an, "output")
    calls: list[int] = []

    def rescore(taken):
        calls.append(len(taken))
        return [0.001 if u.param == "inner.weight" else 5.0 for u in units]

    order = mixed_order(units, an, "output", hand_costs(an), True, rescore, every=0.1)
    saved, taken, want = 0.0, 0, []  # units taken when the saving crosses a new 10
    for p in order:
        before = saved
        saved += p.saving
        taken += len(p.units)
        if saved // 10.0 > before // 10.0:
            want.append(taken)
    assert calls == want and len(calls) >= 2
    cum = [sum(p.saving for p in order[: k + 1]) for k in range(len(order))]
    first = next(k for k, s in enumerate(cum) if s >= 10.0)  # the first rescoring
    after = [p for p in order[first + 1 :] if not p.whole]
    inner = [p for p in after if p.units[0].param == "inner.weight"]
    assert inner and after[: len(inner)] == inner  # inner's rows come first after it


@pytest.mark.parametrize("heuristic", ["l1", "taylor"])
def test_a_targets_default_masks_are_mixed_with_taylor_and_constrained_otherwise(heuristic):
    """constrained=None with a target: mixed masks for Taylor scores, constrained masks for
    weight norms (the frontier study's most accurate choices at equal latency)."""
    calib = [torch.randn(4, 3, 8, 8) for _ in range(2)] if heuristic == "taylor" else None
    kw = dict(target_macs=0.6, heuristic=heuristic, calibration=calib)
    want = "mixed" if heuristic == "taylor" else True
    a, b = residual(), residual()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = chanprune.mask(a, XR, **kw)
        same = chanprune.mask(b, XR, constrained=want, **kw)
    assert dict(got) == dict(same)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
