"""mask(round_to=q): each layer's (or family's) cut moves so the kept count is a multiple of q,
as Torch-Pruning's round_to does; the export stays exact."""

from __future__ import annotations

import pytest
import torch
import torchvision

import chanprune
from chanprune import InputError
from chanprune.masking.masks import rounded_cut


@pytest.mark.parametrize(
    ("n", "k", "q", "want"),
    [
        (64, 19, 16, 16),  # keeps 45: 48 is nearest
        (64, 27, 16, 32),  # keeps 37: 32 is nearer than 48
        (64, 0, 16, 0),  # nothing pruned stays so
        (10, 3, 16, 3),  # a layer narrower than q is left as it is
        (30, 6, 16, 0),  # keeps 24: its own 30 is nearer than 16
        (32, 8, 16, 0),  # keeps 24: a tie between 16 and 32 keeps more
        (64, 19, 1, 19),  # q=1: no rounding
        (48, 47, 16, 32),  # keeps 1: at least q kept
    ],
)
def test_rounded_cut_keeps_the_nearest_multiple(n, k, q, want):
    assert rounded_cut(n, k, q) == want


@pytest.mark.parametrize("constrained", [False, True])
def test_kept_counts_land_on_the_quantum_and_the_export_stays_exact(constrained):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    masks = chanprune.mask(model, x, amount=0.3, constrained=constrained, round_to=16)
    assert masks
    for name, p in model.named_parameters():
        if p.dim() == 4 and name in masks:
            kept = p.shape[0] - len(masks[name])
            assert kept % 16 == 0 or kept == p.shape[0], (name, kept)
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=10).eval()
    got = chanprune.mask(plain, x, amount=0.3, constrained=constrained)
    assert sum(map(len, got.values())) != sum(map(len, masks.values()))  # it moved the cuts
    chanprune.export(model, x)  # exact (checks itself)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"round_to": 0}, "round_to must be a positive int"),
        ({"round_to": "16"}, "round_to must be a positive int"),
        ({"round_to": 16, "scope": "global"}, "scope='global'"),
        ({"round_to": 16, "constrained": "mixed"}, "mixed masks"),
    ],
)
def test_bad_round_to_is_refused_by_name(kw, match):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 4, 1)
    )
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(InputError, match=match):
        chanprune.mask(model, torch.randn(1, 3, 8, 8), amount=0.3, **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_cli_passes_round_to_and_refuses_zero(monkeypatch, capsys):
    from chanprune.cli import build_parser
    from chanprune.cli import prune as P

    args = build_parser().parse_args(["prune", "resnet18", "--round-to", "16"])
    seen: dict = {}
    monkeypatch.setattr(P, "mask", lambda *a, **kw: seen.update(kw) or {})
    P.mask_from_args(None, None, args)
    assert seen["round_to"] == 16
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "resnet18", "--round-to", "0"])
    assert "--round-to" in capsys.readouterr().err
