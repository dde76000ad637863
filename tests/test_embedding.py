"""Embedding lookups produce channels (where a transformer's residual stream starts)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from helpers import outputs_match


class Tokens(nn.Module):
    """Token + position embeddings summed into a stream, an MLP, a head; ``tied``: the head
    reuses the token table (GPT-2), which stays a barrier."""

    def __init__(self, tied: bool = False):
        super().__init__()
        self.tok, self.pos = nn.Embedding(20, 16), nn.Embedding(6, 16)
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 16)
        self.head = nn.Linear(16, 20, bias=False)
        if tied:
            self.head.weight = self.tok.weight

    def forward(self, ids):
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(h)


@pytest.mark.parametrize("side", ["output", "input"])
def test_embeddings_are_producers_and_prune_exactly(side):
    torch.manual_seed(0)
    model = Tokens().eval()
    ids = torch.randint(0, 20, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no barrier
        an = analyze(capture(model, ids))
    assert an.producer_of("tok.weight").dim == 1
    chanprune.mask(model, ids, amount=0.3, side=side)
    exported = chanprune.export(model, ids)
    more = torch.randint(0, 20, (3, 6))
    with torch.no_grad():
        assert outputs_match(model(more), exported(more))


def test_zeroed_embedding_columns_are_removed():
    model = Tokens().eval()
    ids = torch.randint(0, 20, (2, 6))
    chanprune.apply_masks(model, ids, {"tok.weight": [0, 1], "pos.weight": [0, 1, 2]})
    exported = chanprune.export(model, ids)
    assert exported.get_parameter("tok.weight").shape == (20, 14)
    assert exported.get_parameter("pos.weight").shape == (6, 13)  # padded at the add
    with torch.no_grad():
        assert outputs_match(model(ids), exported(ids))


def test_a_table_shared_with_the_head_stays_a_barrier():
    model = Tokens(tied=True).eval()
    ids = torch.randint(0, 20, (2, 6))
    with pytest.warns(UserWarning, match="head.*|shared with another op"):
        an = analyze(capture(model, ids))
    assert an.producer_of("tok.weight") is None
    exported = chanprune.export(model, ids)
    with torch.no_grad():
        assert outputs_match(model(ids), exported(ids))
