"""Channel importance heuristics. Lower score = pruned first. Pure functions over tensors.

Each scorer takes one row per channel: the channel's weights flattened (a filter's row for
output-side pruning, the columns a consumer reads for input-side pruning), except HRank, which
scores feature maps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

HEURISTICS: tuple[str, ...] = ("l1", "l2", "lamp", "fpgm", "hrank", "taylor")
"""The names ``mask(heuristic=...)`` accepts: ``l1``, ``l2``, ``lamp`` and ``fpgm`` score a
channel's weights, ``hrank`` its feature maps on calibration batches, ``taylor`` the loss its
removal costs, from gradients on calibration batches (``chanprune.masking.taylor``)."""

COMPARABLE: frozenset[str] = frozenset({"taylor"})
"""Heuristics whose scores compare across layers (mixed masks need not normalise them)."""


def l1(rows: torch.Tensor) -> torch.Tensor:
    """Sum of absolute weights per channel (Li et al. 2017)."""
    return rows.abs().sum(1)


def l2(rows: torch.Tensor) -> torch.Tensor:
    """Euclidean norm per channel."""
    return rows.pow(2).sum(1).sqrt()


def lamp(rows: torch.Tensor) -> torch.Tensor:
    """LAMP (Lee et al. 2021) on channel norms: n_i / sum of n_j over channels at least as large.

    Channels are sorted by squared norm ascending; a channel's score is its squared norm over the
    sum of its own and every later (larger) one. Scores are mapped back to channel order with
    the inverse of the sort, so they land on the right channels for any norm order.
    """
    n = rows.pow(2).sum(1)
    order = torch.argsort(n, stable=True)
    sorted_n = n[order]
    tail = torch.flip(torch.cumsum(torch.flip(sorted_n, [0]), 0), [0])  # sum_{j >= i}
    sorted_scores = sorted_n / tail.clamp_min(torch.finfo(n.dtype).tiny)
    scores = torch.empty_like(n)
    scores[order] = sorted_scores
    return scores


def fpgm(rows: torch.Tensor) -> torch.Tensor:
    """FPGM (He et al. 2019): summed distance to all other channels; the channels closest to the
    geometric median are the most replaceable, so they score lowest."""
    return torch.cdist(rows.double()[None], rows.double()[None])[0].sum(1).to(rows.dtype)


def hrank(maps: torch.Tensor) -> torch.Tensor:
    """HRank (Lin et al. 2020): average rank of each channel's feature map over a batch.

    ``maps`` is (batch, channels, *spatial). With two or more spatial dims each map is a matrix
    (the trailing dims flattened into its columns); with fewer (a linear layer's features) a
    rank says nothing, so the mean absolute activation stands in for it.
    """
    b, c = maps.shape[0], maps.shape[1]
    if maps.dim() < 4:
        return maps.abs().reshape(b, c, -1).mean((0, 2))
    mats = maps.reshape(b, c, maps.shape[2], -1).double()
    return torch.linalg.matrix_rank(mats).double().mean(0).to(maps.dtype)


WEIGHT_SCORERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "l1": l1,
    "l2": l2,
    "lamp": lamp,
    "fpgm": fpgm,
}
