"""Targets by MACs and parameters: ``mask(target_macs=t)`` / ``target_params=t`` finds the amount
whose export keeps ``t`` of the unpruned model's cost, and applies that one mask."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import chanprune
from chanprune import InputError, MaskError
from chanprune.analysis import analyze
from chanprune.capture import capture
from chanprune.masking.masks import _choose, _group_sizes, _units
from chanprune.masking.targets import TOLERANCE, amounts_between_cuts, search

COST = {
    "target_macs": chanprune.count_macs,
    "target_params": lambda m, x: chanprune.count_params(m),
}


class Block(nn.Module):
    def __init__(self, c: int, inner: int):
        super().__init__()
        self.a = nn.Conv2d(c, inner, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(inner)
        self.b = nn.Conv2d(inner, c, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn_b(self.b(torch.relu(self.bn_a(self.a(x))))))


class ResNetLike(nn.Module):
    """A stem, two residual blocks sharing one stream (what constrained masks prune together)
    and a conv + linear head."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(Block(c, 48), Block(c, 40))
        self.head = nn.Conv2d(c, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.fc(torch.relu(self.head(x)).mean((2, 3)))


class Cumsums(nn.Module):
    """Every conv feeds a cumsum over channels (an op without a channel rule): nothing prunes."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return torch.cumsum(self.b(torch.cumsum(self.a(x), 1)), 1).mean((2, 3))


class HalfPinned(nn.Module):
    """Conv ``a`` prunes; ``b``'s outputs and all of ``c`` feed cumsums over channels and stay:
    the most masking keeps about two thirds of the MACs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 32, 3, padding=1)
        self.c = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        x = torch.cumsum(self.b(torch.relu(self.a(x))), 1)
        return torch.cumsum(self.c(x), 1).mean((2, 3))


X = torch.randn(2, 3, 12, 12)


def build(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ResNetLike().eval()


def exported_ratio(model: nn.Module, unpruned: nn.Module, x, name: str) -> float:
    """The cost ratio of the checked export, measured apart from the search."""
    pruned = chanprune.export(model, x)
    return COST[name](pruned, x) / COST[name](unpruned, x)


def mask_quietly(model, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a missed target would warn
        return chanprune.mask(model, x, **kw)


@pytest.mark.parametrize("name", ["target_macs", "target_params"])
@pytest.mark.parametrize("side", ["output", "input"])
@pytest.mark.parametrize("constrained", [False, True])
def test_small_cnn_export_lands_within_tolerance_of_each_target(name, side, constrained):
    unpruned = build()
    for t in (0.8, 0.55):
        model = build()
        got = mask_quietly(model, X, side=side, constrained=constrained, **{name: t})
        measured = exported_ratio(model, unpruned, X, name)
        assert measured == pytest.approx(got.ratio, abs=1e-9)  # the search measured the export
        assert abs(measured - t) <= TOLERANCE, (t, measured)
        assert got.target.name == name and got.target.value == t and 0 < got.amount < 1


@pytest.mark.parametrize(
    "side, constrained, name, t",
    [
        ("output", False, "target_macs", 0.7),
        ("input", False, "target_macs", 0.4),
        ("output", True, "target_params", 0.6),
        ("input", True, "target_params", 0.5),
        ("input", False, "target_params", 0.3),
    ],
)
def test_resnet18_at_a_small_input(side, constrained, name, t):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    unpruned = tv.models.resnet18().eval()
    model = copy.deepcopy(unpruned)
    x = torch.randn(1, 3, 32, 32)
    got = mask_quietly(model, x, side=side, constrained=constrained, **{name: t})
    assert abs(exported_ratio(model, unpruned, x, name) - t) <= TOLERANCE
    assert abs(got.ratio - t) <= TOLERANCE


@pytest.mark.parametrize("kind", [False, "mixed"])  # mixed: the default with a target
def test_the_model_ends_with_the_one_mask_found_and_hand_zeroed_channels_stay_zero(kind):
    model = build()
    with torch.no_grad():  # the user zeroed a filter (and its BatchNorm) by hand
        for t in (model.blocks[0].a.weight, model.blocks[0].bn_a.weight, model.blocks[0].bn_a.bias):
            t[5] = 0
    twin = copy.deepcopy(model)
    got = chanprune.mask(model, X, scope="global", target_macs=0.6, constrained=kind)
    direct = chanprune.mask(twin, X, scope="global", amount=got.amount, constrained=kind)
    assert got == direct  # the same dict, as mask() has always returned
    state, twin_state = model.state_dict(), twin.state_dict()
    assert all(torch.equal(state[k], twin_state[k]) for k in state)
    assert not model.blocks[0].a.weight[5].any()


def test_hand_zeroed_channels_count_as_pruned():
    """With half of every block's inner channels zeroed by hand the unmasked export is already
    smaller; a target above that masks nothing and says so, leaving the model as it was."""
    model = build()
    with torch.no_grad():
        for b in model.blocks:
            for t in (b.a.weight, b.bn_a.weight, b.bn_a.bias):
                t[: t.shape[0] // 2] = 0
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match="with nothing masked the export already has 0.") as w:
        got = chanprune.mask(model, X, target_macs=0.99)
    assert "target_macs=0.99" in str(w[0].message) and got == {} and got.amount == 0.0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # a target below it is met counting the hand-zeroed channels as pruned
    got = chanprune.mask(model, X, target_macs=got.ratio - 0.2)
    assert abs(exported_ratio(model, build(), X, "target_macs") - got.target.value) <= TOLERANCE


def test_a_target_missed_by_whole_channel_steps_is_met_as_closely_as_possible_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Conv2d(2, 64, 3)).eval()
    unpruned = copy.deepcopy(model)
    # the only prunable channels are conv 0's two filters: keeping one of them halves conv 2
    with pytest.warns(UserWarning, match="target_macs=0.7 missed by more than 0.02"):
        got = chanprune.mask(model, X, target_macs=0.7)
    measured = exported_ratio(model, unpruned, X, "target_macs")
    assert measured == pytest.approx(got.ratio) and abs(measured - 0.7) > TOLERANCE
    assert sum(map(len, got.values())) == 1


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(target_macs=0.5, target_params=0.5), "target_macs and target_params were both"),
        (dict(amount=0.3, target_macs=0.5), r"amount=0.3 and target_macs=0.5 were both given"),
        (dict(amount=0.0, target_params=0.5), r"amount=0.0 and target_params=0.5"),
        (dict(target_macs=0.0), r"target_macs must be a fraction .* in \(0, 1\], got 0.0"),
        (dict(target_macs=1.5), r"target_macs must be a fraction"),
        (dict(target_params=-0.2), r"target_params must be a fraction .*parameters"),
        (dict(target_params=math.nan), r"target_params must be a fraction"),
        (dict(target_macs=True), r"target_macs must be a fraction"),
        (dict(target_macs="0.5"), r"target_macs must be a fraction"),
        (dict(target_macs=0.5, submodules=["blocks"]), "target_macs is a share of the whole"),
    ],
)
def test_bad_targets_are_refused_by_name_and_leave_the_model(kw, match):
    model = build()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InputError, match=match):
        chanprune.mask(model, X, **kw)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_amount_defaults_to_0_3_without_a_target():
    a, b = build(), build()
    assert chanprune.mask(a, X) == chanprune.mask(b, X, amount=0.3)


@pytest.mark.parametrize(
    "model, t, reached",
    [
        (Cumsums(), 0.5, r"leaves the export at 1\.000 of the unpruned model's MACs; 0 of 32"),
        (HalfPinned(), 0.5, r"leaves the export at 0\.6\d\d of the unpruned model's MACs; 16 of"),
    ],
)
def test_an_unreachable_target_says_what_it_reached_and_why(model, t, reached):
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(MaskError, match=rf"target_macs={t:g} is out of reach") as e:
        chanprune.mask(model, X, target_macs=t)
    assert e.match(reached)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_cumsum_barrier_is_named_as_the_cause():
    with pytest.raises(MaskError, match="cumsum"):
        chanprune.mask(Cumsums(), X, target_params=0.5)


# the search alone, on made-up cost curves ---------------------------------------------------
def steps(n: int):
    """A cost that falls in ``n`` equal steps as the amount grows, counting the tries."""
    tries = []

    def ratio_at(a: float) -> float:
        tries.append(a)
        return 1.0 - math.floor(a * n) / n

    return ratio_at, tries


def test_search_finds_the_closest_step_in_few_tries():
    ratio_at, tries = steps(1000)
    amounts = amounts_between_cuts([1000, 7])
    best, lowest = search(ratio_at, 0.37, amounts)
    assert abs(best.ratio - 0.37) <= TOLERANCE / 4 and lowest.amount == amounts[-1]
    assert len(tries) <= 8


def test_search_between_two_coarse_steps_returns_the_closer_one_of_neighbours():
    ratio_at, tries = steps(4)  # ratios 1, 0.75, 0.5, 0.25
    best, _ = search(ratio_at, 0.55, amounts_between_cuts([4]))
    assert best.ratio == 0.5 and sorted(tries) == [0.0, 0.375, 0.625, 0.875]


def test_search_below_reach_returns_the_lowest_reached():
    amounts = amounts_between_cuts([10])
    best, lowest = search(lambda a: 0.9 - 0.3 * a, 0.2, amounts)
    assert best == lowest and best.amount == amounts[-1] == 0.95


def test_the_amounts_tried_stand_for_every_mask_there_is():
    """Every amount masks the same channels as one of the amounts the search picks from (some
    of those may mask alike: a global mask never empties a layer, so its count stops growing)."""
    for scope in ("local", "global"):
        for constrained in (False, True):
            for side in ("output", "input"):
                how = dict(scope=scope, constrained=constrained, side=side)
                model = build()
                cap = capture(model, (X,))
                an = analyze(cap)
                units = _units(an, side)
                for u in units:
                    u.score = float(hash((u.layer, u.channel)) % 97)
                sizes = _group_sizes(units, scope, constrained, an, side)
                picked = amounts_between_cuts(sizes)

                def chosen(a, how=how, an=an, units=units):
                    got = _choose(units, a, how["scope"], how["constrained"], an, how["side"])
                    return frozenset((u.layer, u.channel) for u in got)

                masks = {chosen(a) for a in picked}
                assert len(masks) > 20, how
                for a in np.linspace(0, 1, 600, endpoint=False):
                    assert chosen(float(a)) in masks, (how, a)


# the command line ---------------------------------------------------------------------------
EXE = shutil.which("chanprune") or f"{sys.executable} -m chanprune.cli"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE.split(), *args], capture_output=True, text=True, timeout=600)


def test_cli_target_flags():
    pytest.importorskip("torchvision")
    args = ("prune", "resnet18", "--input-size", "32", "--runs", "0", "--quiet")
    r = run(*args, "--target-params", "0.5", "--side", "input")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.strip()}
    assert abs(float(rows["params"][2]) - 0.5) <= TOLERANCE
    assert "parameters target 0.5: amount 0." in r.stdout
    r = run(*args, "--amount", "0.3", "--target-macs", "0.5")
    assert r.returncode == 2 and "--target-macs: not allowed with argument --amount" in r.stderr
    r = run(*args, "--target-macs", "0.5", "--target-params", "0.5")
    assert r.returncode == 2 and "not allowed with argument --target-macs" in r.stderr
    r = run(*args, "--target-macs", "1.5")
    assert (
        r.returncode == 2 and "--target-macs: expected a fraction in (0, 1], got '1.5'" in r.stderr
    )
