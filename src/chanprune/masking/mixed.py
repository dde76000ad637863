"""Mixed masks: unconstrained units and whole segment channels ranked together by importance lost
per cost saved, so each kind is picked where it pays (issue 26, "latency-aware mixed masks").

Two kinds of unit compete. An *unconstrained* unit is one :class:`~chanprune.masking.masks.Unit`
of the side: a producer's row (``side="output"``) or a consumer's input channel
(``side="input"``). A *constrained* unit is a whole segment channel (a root): every unit of that
root on the side, as ``constrained=True`` masks zero it, which also narrows the stream and the
elementwise ops on it. What removing a unit saves comes from a
:class:`~chanprune.latency.costs.ChannelCosts` (seconds or MACs alike). A segment channel
leaves its segment only when every producer row of it is zero (output side) or every reader's
column (input side), as liveness decides; so a row saves its producer's ``row`` cost, and the
unit that completes its root (the last row, or the one row of a private segment) saves the
root's whole cost instead: every producer row, every reader's column and the stream.

Importance: heuristic scores are not comparable across layers, so each unit's score is divided
by the mean score of its layer's candidates (LAMP scores are already normalised within a layer;
the same division only rescales them, which keeps one rule for every heuristic), and grows as
its layer is depleted (:func:`importance`). A constrained unit's importance is the sum of its
members'. Taylor scores (``heuristic="taylor"``) are a loss already, comparable across layers,
so they are not divided, and they are computed again on the partly masked model after every
5% of the cost saved: iterative pruning, which keeps a layer whose first channels went cheaply
from being emptied (the one-shot ranking does not see that its last channels carry more).
The greedy order is budget-free: it pops the unit
with the lowest importance per saving, counting only what is not taken yet, never empties a
layer, and the budget only says how long a prefix to keep (:func:`take`), so a target search
steps over prefixes (:func:`budgets_between_picks`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..analysis.types import ChannelAnalysis
from ..errors import InputError
from ..latency.costs import ChannelCosts
from ..latency.macs import depthwise_nodes
from ..latency.macs import mac_costs as mac_costs  # mixed masks rank by it (re-exported)
from .units import Unit


@dataclass(frozen=True)
class Pick:
    """One step of the greedy order: the units it zeroes (one, or the untaken units of a
    segment channel when ``whole``), their ``root`` and the predicted ``saving`` it adds."""

    units: tuple[Unit, ...]
    root: int
    whole: bool
    saving: float


# costs ----------------------------------------------------------------------------------------
def param_costs(an: ChannelAnalysis) -> ChannelCosts:
    """Parameter elements per output row (weight row and bias) and per input channel (weight
    columns) of every producer and consumer; a depthwise convolution's per-channel weights are
    the ``stream`` cost of their root. ``total``: every parameter element of the model. What a
    ``target_params`` search ranks with."""
    t = an.capture.tensors
    row = {
        i: (t[p.weight].numel() + (t[p.bias].numel() if p.bias else 0)) / max(p.channels, 1)
        for i, p in enumerate(an.producers)
    }
    col = {
        j: t[c.weight].numel() / max(len(np.unique(c.ids)), 1) for j, c in enumerate(an.consumers)
    }
    names = an.capture.state_names
    stream: dict[int, float] = {}
    for node, ids in depthwise_nodes(an):
        n = sum(t[names[a.name]].numel() for a in node.all_input_nodes if a.name in names)
        for r in an.root[ids]:
            stream[int(r)] = stream.get(int(r), 0.0) + n / len(ids)
    total = sum(v.numel() for k, v in t.items() if k in an.capture.parameter_names)
    return ChannelCosts("parameters", row, col, stream, float(total))


# the greedy order -----------------------------------------------------------------------------
@dataclass
class _Root:
    """A segment channel on one side: its candidate units (indices), how many units of the side
    it has in all (candidates or not), and what it saves once it leaves its segment."""

    members: list[int]
    count: int
    full: float

    @property
    def completes(self) -> bool:
        return len(self.members) == self.count


def importance(units: Sequence[Unit], comparable: bool = False) -> list[float]:
    """Each unit's score over the mean score of its layer's units (1 where that mean is not
    positive), so that scores of different layers compare, times ``1 / (1 - k / n)`` for the
    unit a layer of ``n`` candidates loses ``k``-th (lowest score first). ``comparable``
    scores (``taylor``: a loss, the same units in every layer) are not divided.

    Why the depletion factor: normalised scores sit near 1, so without it the cost alone
    decides and a layer whose channels are cheap to remove is cut to its last channel; taking
    most of a layer costs more accuracy than its channels' scores say, since the few left must
    carry everything. With it a layer loses half its channels only where that saves twice as
    much per score as elsewhere, four fifths where it saves five times as much."""
    by_layer: dict[int, list[int]] = {}
    for i, u in enumerate(units):
        by_layer.setdefault(u.layer, []).append(i)
    out = [0.0] * len(units)
    for idx in by_layer.values():
        mean = 1.0 if comparable else float(np.mean([units[i].score for i in idx]))
        mean = mean if mean > 0 else 1.0
        n = len(idx)
        for k, i in enumerate(sorted(idx, key=lambda i: (units[i].score, units[i].channel))):
            out[i] = units[i].score / mean / (1.0 - k / n)
    return out


def mixed_order(
    units: Sequence[Unit],
    an: ChannelAnalysis,
    side: str,
    costs: ChannelCosts,
    comparable: bool = False,
    rescore: Callable[[list[Unit]], list[float]] | None = None,
    every: float = 0.05,
    partial: bool = True,
) -> list[Pick]:
    """The greedy order of picks: at each step the unconstrained unit or whole segment channel
    with the lowest importance per saving, both counted over what is not taken yet (a pick that
    saves nothing is never made), skipping picks that would leave a layer of the side without a
    channel. Pure over its arguments: the same units, scores and costs give the same order.

    ``rescore(taken)``, if given, returns every unit's score with the ``taken`` units zeroed;
    it is called each time another ``every`` of ``costs.total`` has been saved, and the order
    goes on with those scores (iterative pruning: a layer's remaining channels matter more once
    many of its others are gone, which one scoring of the whole model cannot see).

    ``partial=False`` is for the dense export (``export(method="dense")``), which keeps a
    segment channel's every row and column while any unit of it stays: there a unit saves
    nothing until it completes its segment channel, so the order holds whole segment channels
    and units of private ones only."""
    own_cost = costs.row if side == "output" else costs.col
    own = [float(own_cost.get(u.layer, 0.0)) if partial else 0.0 for u in units]
    units = list(units)  # rescoring replaces entries with rescored copies, never the caller's
    imp = importance(units, comparable)
    roots = _roots(units, an, side, costs)
    left = {li: _layer_size(an, side, li) for li in {u.layer for u in units}}
    taken = [False] * len(units)
    n_taken = dict.fromkeys(roots, 0)
    saved = dict.fromkeys(roots, 0.0)  # what each root saves with the units taken so far
    # an entry is stale once its unit's or root's version moved on (its gain changed)
    single_version, whole_version = [0] * len(units), dict.fromkeys(roots, 0)
    heap: list[tuple] = []

    def gain(r: int, new: list[int]) -> float:
        info = roots[r]
        if info.completes and n_taken[r] + len(new) == info.count:
            return info.full - saved[r]
        return sum(own[i] for i in new)

    def push(r: int, new: list[int]) -> None:
        s = gain(r, new)
        if s <= 0:
            return
        if len(new) > 1:
            tie, version = (0, r, 0, 0), whole_version[r]
        else:
            u = units[new[0]]
            tie, version = (1, r, u.layer, u.channel), single_version[new[0]]
        heapq.heappush(heap, (sum(imp[i] for i in new) / s, tie, version, new))

    def fill() -> None:
        heap.clear()
        for r, info in roots.items():
            untaken = [i for i in info.members if not taken[i]]
            for i in untaken:
                push(r, [i])
            if len(untaken) > 1:
                push(r, untaken)

    fill()
    order: list[Pick] = []
    total_saved, next_rescore = 0.0, every * costs.total
    while heap:
        _, tie, version, new = heapq.heappop(heap)
        whole, r = tie[0] == 0, tie[1]
        if version != (whole_version[r] if whole else single_version[new[0]]):
            continue
        need = Counter(units[i].layer for i in new)
        if any(k >= left[li] for li, k in need.items()):
            continue  # it would empty a layer; layers only lose channels, so never again
        s = gain(r, new)
        for i in new:
            taken[i] = True
            single_version[i] += 1
        for li, k in need.items():
            left[li] -= k
        n_taken[r] += len(new)
        saved[r] += s
        order.append(Pick(tuple(units[i] for i in new), r, whole, s))
        total_saved += s
        if rescore is not None and total_saved >= next_rescore:
            while next_rescore <= total_saved:
                next_rescore += every * costs.total
            scores = rescore([u for u, t in zip(units, taken, strict=True) if t])
            units = [replace(u, score=v) for u, v in zip(units, scores, strict=True)]
            imp = importance(units, comparable)
            fill()
            continue
        # the root's whole pick now holds fewer units; a single's gain changes only when it
        # becomes the last unit of a root that can complete
        whole_version[r] += 1
        untaken = [i for i in roots[r].members if not taken[i]]
        if len(untaken) > 1:
            push(r, untaken)
        if len(untaken) == 1 and roots[r].completes:
            single_version[untaken[0]] += 1
            push(r, untaken)
    return order


def _roots(
    units: Sequence[Unit], an: ChannelAnalysis, side: str, costs: ChannelCosts
) -> dict[int, _Root]:
    """Per root of ``units``: its members, its count of side units (producer rows of the root on
    the output side, consumers reading it on the input side) and its whole saving: every
    producer row of it, every reader's column and the stream."""
    rows: Counter = Counter()
    row_cost: Counter = Counter()
    for i, p in enumerate(an.producers):
        for r in an.root[p.ids]:
            rows[int(r)] += 1
            row_cost[int(r)] += float(costs.row.get(i, 0.0))
    readers: Counter = Counter()
    col_cost: Counter = Counter()
    for j, c in enumerate(an.consumers):
        for r in np.unique(an.root[c.ids]):
            readers[int(r)] += 1
            col_cost[int(r)] += float(costs.col.get(j, 0.0))
    members: dict[int, list[int]] = {}
    for k, u in enumerate(units):
        members.setdefault(u.root, []).append(k)
    count = rows if side == "output" else readers
    return {
        r: _Root(ms, count[r], row_cost[r] + col_cost[r] + float(costs.stream.get(r, 0.0)))
        for r, ms in members.items()
    }


def _layer_size(an: ChannelAnalysis, side: str, layer: int) -> int:
    """Channels of a layer of the side: a producer's rows, a consumer's distinct inputs."""
    if side == "output":
        return an.producers[layer].channels
    return len(np.unique(an.consumers[layer].ids))


# budgets --------------------------------------------------------------------------------------
def take(order: Sequence[Pick], budget: float) -> list[Unit]:
    """The units of the shortest prefix of ``order`` whose predicted saving reaches ``budget``
    (all of them when none does)."""
    chosen: list[Unit] = []
    saved = 0.0
    for pick in order:
        if saved >= budget:
            break
        chosen += pick.units
        saved += pick.saving
    return chosen


def choose_mixed(
    units: Sequence[Unit], an: ChannelAnalysis, side: str, costs: ChannelCosts, budget: float
) -> list[Unit]:
    """The units mixed masks zero for a predicted saving of ``budget`` (in ``costs.unit``): the
    greedy order of :func:`mixed_order`, cut where its saving reaches the budget."""
    return take(mixed_order(units, an, side, costs), budget)


def budgets_between_picks(order: Sequence[Pick], total: float) -> list[float]:
    """One budget per distinct prefix of ``order``, as fractions of ``total``, increasing, 0
    first: the midpoint between the cumulative savings before and after each pick, which
    :func:`take` cuts right after that pick (the masks a target search picks among)."""
    if not order:
        return [0.0]
    if not total > 0:
        raise InputError(
            f"costs.total must be positive to express budgets as fractions, got {total!r}"
        )
    cum = [0.0, *itertools.accumulate(p.saving for p in order)]
    return [0.0] + [(a + b) / 2 / total for a, b in itertools.pairwise(cum)]
