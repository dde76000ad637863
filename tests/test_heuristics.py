"""Each heuristic on hand-computed values."""

import math

import torch

from chanprune.masking.heuristics import fpgm, hrank, l1, l2, lamp


def test_l1_l2():
    rows = torch.tensor([[1.0, -2.0], [3.0, 4.0], [0.0, 0.0]])
    assert l1(rows).tolist() == [3.0, 7.0, 0.0]
    assert torch.allclose(l2(rows), torch.tensor([math.sqrt(5), 5.0, 0.0]))


def test_lamp_scores_land_on_the_right_channels():
    # squared norms 9, 1, 4 (not monotone in channel order)
    rows = torch.tensor([[3.0], [1.0], [2.0]])
    # ascending: 1 (ch1), 4 (ch2), 9 (ch0); score = n / sum of itself and all larger
    expected = [9 / 9, 1 / (1 + 4 + 9), 4 / (4 + 9)]
    assert torch.allclose(lamp(rows), torch.tensor(expected))


def test_fpgm_prefers_the_channel_near_the_median():
    rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    # distance sums: 0+1+10=11, 1+0+9=10, 10+9+0=19
    assert fpgm(rows).tolist() == [11.0, 10.0, 19.0]
    assert int(fpgm(rows).argmin()) == 1


def test_hrank_is_the_mean_rank_of_each_map():
    maps = torch.zeros(2, 3, 4, 4)
    maps[:, 0] = torch.eye(4)  # rank 4
    maps[:, 1, 0, :] = 1.0  # rank 1
    maps[0, 2] = torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0]))  # rank 2 then rank 0
    assert hrank(maps).tolist() == [4.0, 1.0, 1.0]


def test_hrank_without_spatial_dims_uses_mean_activation():
    maps = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    assert hrank(maps).tolist() == [2.0, 1.0]
