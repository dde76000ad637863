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

No labels are needed: the loss is the cross-entropy against the predictions (argmax over dim 1)
of the model as it was when the scorer was made, the unpruned model, so a classifier's
calibration images alone suffice. Mixed masks score again on the partly masked model
(:func:`chanprune.masking.mixed.mixed_order`); each scoring first recomputes the BatchNorm
statistics on the calibration batches (and puts the old ones back after), so a partly masked
model is scored as it runs once recalibrated, against what the unpruned model predicted. Scored
with the unpruned model's statistics and against its own drifting argmax, a deeply masked
model gives gradients of a broken network (docs/design.md, "Taylor rescoring"; before and after:
benchmarks/results/frontier.md, "Replaced runs").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.types import ChannelAnalysis
from ..capture.trace import eval_mode
from ..errors import InputError
from .norms import kept_running_stats, norms_of, recompute_running_stats
from .units import Unit

Edits = Callable[[ChannelAnalysis, list[Unit], str], tuple[dict, list]]


def pseudo_labels(out: object) -> torch.Tensor:
    """The argmax over the classes of logits ``out`` (batch, classes, ...)."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
        kind = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"heuristic='taylor' needs a model whose output is class logits (batch, classes, ...); "
            f"this one returns {kind}: use a weight heuristic (l1, l2, lamp, fpgm) or hrank"
        )
    return out.detach().argmax(1)


class TaylorScorer:
    """Taylor scores of fixed ``units`` on fixed calibration ``batches`` (tuples of positional
    inputs; ``kwargs`` go to every call), ready to be computed again and again: the reference
    labels (what ``model`` predicts now) and which entries each unit zeroes
    (``edits(an, [unit], side)``) are worked out once, so each call costs a forward pass
    (recalibration), the forward and backward passes and one weighted bincount per batch
    (mixed masks score again on the partly masked model:
    :func:`chanprune.masking.mixed.mixed_order`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        an: ChannelAnalysis,
        units: Sequence[Unit],
        side: str,
        edits: Edits,
        batches: Iterable[tuple],
        kwargs: dict,
    ) -> None:
        self.batches, self.kwargs = list(batches), kwargs
        if not self.batches:
            raise InputError("heuristic='taylor' got no calibration batches")
        with eval_mode(model), torch.no_grad():
            self.labels = [pseudo_labels(model(*b, **kwargs)) for b in self.batches]
        self.norms = bool(norms_of(model))  # statistics to recompute for a masked model
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

    def __call__(self, recalibrate: bool = False) -> list[float]:
        """The scores of the model as it is now, against the reference labels. Runs the model
        in eval mode (inference semantics: no dropout), with BatchNorm statistics recomputed on
        the batches if ``recalibrate`` (a partly masked model), and leaves its statistics,
        ``.grad`` fields, training flags and ``requires_grad`` flags as they were."""
        model, plist, kwargs = self.model, self.plist, self.kwargs
        scores = np.zeros(self.n)
        flags = [(m, m.training) for m in model.modules()]
        frozen = [p for p in plist if not p.requires_grad]  # a frozen model still has gradients
        try:
            with kept_running_stats(model), torch.enable_grad():
                if recalibrate and self.norms:
                    self._recalibrate()
                model.eval()
                for p in frozen:
                    p.requires_grad_(True)
                for batch, labels in zip(self.batches, self.labels, strict=True):
                    scores += self._first_order(model(*batch, **kwargs), labels) ** 2
        finally:
            for m, was in flags:
                m.training = was
            for p in frozen:
                p.requires_grad_(False)
        return (scores / len(self.batches)).tolist()

    def _first_order(self, out: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """Each unit's first-order loss change on one batch: the gradient of the loss times the
        entries the unit zeroes, summed per unit (one weighted bincount)."""
        plist = self.plist
        with torch.enable_grad():
            grads = torch.autograd.grad(F.cross_entropy(out, labels), plist, allow_unused=True)
        sums = np.zeros(self.size)
        for i, dim in self.needed:
            if grads[i] is None:
                continue
            gw = (grads[i] * plist[i].detach()).movedim(dim, 0)
            at = self.offset[i, dim]
            sums[at : at + gw.shape[0]] = gw.reshape(gw.shape[0], -1).sum(1).double().numpy()
        return np.bincount(self.owner, weights=sums[self.where], minlength=self.n)

    def _recalibrate(self) -> None:
        def run() -> int:
            for batch in self.batches:
                self.model(*batch, **self.kwargs)
            return len(self.batches)

        try:
            recompute_running_stats(self.model, run)
        except ValueError as e:  # BatchNorm in training mode on a single value per channel
            raise InputError(
                f"heuristic='taylor' recomputes BatchNorm statistics on the calibration batches "
                f"while mixed masks grow, and the model refused them: {e}. Pass calibration "
                "batches of 2 or more samples"
            ) from e


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
    return TaylorScorer(model, an, units, side, edits, batches, kwargs)()
