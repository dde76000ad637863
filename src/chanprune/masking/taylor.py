"""Taylor importance: the loss a unit's removal would cost, estimated from gradients on calibration
batches, in the same units for every layer (Molchanov et al. 2019, "Importance Estimation for
Neural Network Pruning", group form).

For a unit whose removal zeroes parameter entries E (a filter row with its bias and the
BatchNorm entries after it, or a consumer's input columns), the first-order change of the loss on
a batch is ``sum over e in E of g_e * w_e``; its square, summed over the batches, is the unit's
score. Weight norms (l1, l2, ...) only rank channels *within* a layer, so mixed masks, which
trade channels of different layers against their costs, need a score that compares across
layers: this one does, and mixed masks then rank by it without normalising per layer
(:func:`chanprune.masking.mixed.importance`).

No labels are needed: the loss is the cross-entropy against the model's own predictions (its
argmax over dim 1), so a classifier's calibration images alone suffice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.types import ChannelAnalysis
from ..errors import InputError
from .units import Unit

Edits = Callable[[ChannelAnalysis, list[Unit], str], tuple[dict, list]]


def pseudo_label_loss(out: object) -> torch.Tensor:
    """Cross-entropy of logits ``out`` (batch, classes, ...) against their own argmax."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
        kind = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"heuristic='taylor' needs a model whose output is class logits (batch, classes, ...); "
            f"this one returns {kind}: use a weight heuristic (l1, l2, lamp, fpgm) or hrank"
        )
    return F.cross_entropy(out, out.detach().argmax(1))


class TaylorScorer:
    """Taylor scores of fixed ``units`` (module docstring), ready to be computed again and again:
    which entries each unit zeroes is worked out once (``edits(an, [unit], side)``), so each
    call costs the forward and backward passes and one weighted bincount per batch (mixed masks
    score again on the partly masked model: :func:`chanprune.masking.mixed.mixed_order`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        an: ChannelAnalysis,
        units: Sequence[Unit],
        side: str,
        edits: Edits,
    ) -> None:
        by_ptr = {p.data_ptr(): p for p in model.parameters() if p.is_floating_point()}
        self.model, self.n = model, len(units)
        self.plist = list(by_ptr.values())
        index_of = {id(p): i for i, p in enumerate(self.plist)}
        per_unit: list[list[tuple[int, int, np.ndarray]]] = []
        for u in units:
            entries = []
            for t, dim, idx in edits(an, [u], side)[1]:
                p = by_ptr.get(t.data_ptr())
                if p is not None:  # a buffer has no gradient: no first-order term
                    entries.append((index_of[id(p)], dim, np.asarray(idx, dtype=np.int64)))
            per_unit.append(entries)
        self.needed = sorted({(i, dim) for es in per_unit for i, dim, _ in es})
        # every unit's entries as positions in one vector of per-slice sums: a unit's
        # first-order term is then one weighted bincount per batch
        self.offset, at = {}, 0
        for i, dim in self.needed:
            self.offset[i, dim] = at
            at += self.plist[i].shape[dim]
        self.size = at
        self.owner = np.concatenate(
            [np.full(len(idx), k) for k, es in enumerate(per_unit) for _, _, idx in es] or [[]]
        ).astype(np.int64)
        self.where = np.concatenate(
            [self.offset[i, dim] + idx for es in per_unit for i, dim, idx in es] or [[]]
        ).astype(np.int64)

    def __call__(self, batches: Iterable[tuple], kwargs: dict) -> list[float]:
        """The scores on ``batches`` (tuples of positional inputs; ``kwargs`` go to every call).
        Runs the model in eval mode (inference semantics: BatchNorm's running statistics, no
        dropout) and leaves its ``.grad`` fields, training flags and ``requires_grad`` flags as
        they were."""
        model, plist = self.model, self.plist
        scores = np.zeros(self.n)
        flags = [(m, m.training) for m in model.modules()]
        frozen = [p for p in plist if not p.requires_grad]  # a frozen model still has gradients
        seen = 0
        try:
            model.eval()
            for p in frozen:
                p.requires_grad_(True)
            for batch in batches:
                with torch.enable_grad():
                    loss = pseudo_label_loss(model(*batch, **kwargs))
                    grads = torch.autograd.grad(loss, plist, allow_unused=True)
                sums = np.zeros(self.size)
                for i, dim in self.needed:
                    g = grads[i]
                    if g is None:
                        continue
                    gw = (g * plist[i].detach()).movedim(dim, 0)
                    at = self.offset[i, dim]
                    sums[at : at + gw.shape[0]] = (
                        gw.reshape(gw.shape[0], -1).sum(1).double().numpy()
                    )
                first = np.bincount(self.owner, weights=sums[self.where], minlength=self.n)
                scores += first**2
                seen += 1
        finally:
            for m, was in flags:
                m.training = was
            for p in frozen:
                p.requires_grad_(False)
        if seen == 0:
            raise InputError("heuristic='taylor' got no calibration batches")
        return (scores / seen).tolist()


def taylor_scores(
    model: torch.nn.Module,
    an: ChannelAnalysis,
    units: Sequence[Unit],
    side: str,
    batches: Iterable[tuple],
    kwargs: dict,
    edits: Edits,
) -> list[float]:
    """Each unit's Taylor score (module docstring) on ``batches``, once: a
    :class:`TaylorScorer` called one time."""
    return TaylorScorer(model, an, units, side, edits)(batches, kwargs)
