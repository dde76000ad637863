"""Masking: choose channels with a heuristic and zero them in place so their activations are 0.

Output side: a producer's filter rows (and bias) are zeroed, plus every per-channel parameter
that would otherwise turn the zero into a constant (the following BatchNorm's weight and bias,
a depthwise bias ...: the analysis' *companions*). Input side: a consumer's weight columns.
Unconstrained masks let every layer choose its own channels; ``constrained=True`` makes all
layers that share a segment channel prune it together (the classic, copy-free scheme);
``constrained="mixed"`` ranks both kinds of unit by importance per cost saved and mixes them
(``masking/mixed.py``); it is the default for a target with Taylor scores, constrained masks
the default for a target with weight-norm scores.
Only channels the exporter can remove are candidates: never pinned ones, never model outputs.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..analysis.propagate import analyze
from ..analysis.share import low_share_message, prunable_share
from ..analysis.types import ChannelAnalysis
from ..capture.submodules import for_each_part
from ..capture.trace import as_example, as_input_tuple, capture, eval_mode, gc_paused, run_graph
from ..errors import InputError, MaskError
from ..latency.costs import ChannelCosts
from ..latency.measure import Measured, measure_calls, runner
from ..latency.model import Prediction
from .heuristics import COMPARABLE, HEURISTICS, WEIGHT_SCORERS, hrank
from .mixed import budgets_between_picks, mac_costs, mixed_order, param_costs, take
from .targets import (
    Target,
    TargetMasks,
    Try,
    amounts_between_cuts,
    cost,
    export_cost,
    latency_model,
    refine,
    resolve,
    search,
    target_export,
    unpruned_prediction,
    verdict,
)
from .taylor import TaylorScorer
from .units import Unit

SIDES = ("output", "input")
SCOPES = ("local", "global")
MIXED = "mixed"  # constrained="mixed": masks.mixed ranks both kinds of unit together


def masking_kind(constrained: object, target: Target | None, heuristic: str = "l1") -> bool | str:
    """What ``constrained`` asks for: ``True``, ``False`` or ``"mixed"``; ``None`` (the
    default) means, for a target, mixed masks when the scores compare across layers (Taylor)
    and constrained masks otherwise, and plain unconstrained masks for an amount.

    Why: in the frontier study (benchmarks/results/frontier.md) mixed masks ranked by weight
    norms lost to constrained masks at equal latency, and mixed masks ranked by iterative
    Taylor scores beat both."""
    if constrained is None:
        if target is None:
            return False
        return MIXED if heuristic in COMPARABLE else True
    if isinstance(constrained, str) and constrained == MIXED:
        return MIXED
    if isinstance(constrained, bool | np.bool_):
        return bool(constrained)
    raise InputError(
        f"constrained must be True, False, None (for a target: mixed with taylor scores, else "
        f"True; without one False) or "
        f"{MIXED!r}, got {constrained!r}"
    )


def validate(amount: float, heuristic: str, scope: str, side: str) -> None:
    if not isinstance(amount, int | float) or not 0.0 <= float(amount) < 1.0:
        raise InputError(f"amount must be a number in [0, 1), got {amount!r}")
    if heuristic not in HEURISTICS:
        raise InputError(f"unknown heuristic {heuristic!r}; choose one of {', '.join(HEURISTICS)}")
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}; choose 'local' or 'global'")
    if side not in SIDES:
        raise InputError(f"unknown side {side!r}; choose 'output' or 'input'")


@gc_paused
def mask(
    model: torch.nn.Module,
    example_inputs: object,
    amount: float | None = None,
    heuristic: str = "l1",
    scope: str = "local",
    side: str = "output",
    constrained: bool | str | None = None,
    calibration: Iterable[object] | None = None,
    submodules: Sequence[str] | None = None,
    example_kwargs: dict[str, object] | None = None,
    dynamic_shapes: object = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    backend: str = "eager",
    round_to: int = 1,
) -> dict[str, list[int]]:
    """Zero ``amount`` of the prunable channels of ``model`` in place; return what was zeroed.

    ``amount`` defaults to 0.3. ``target_macs=t`` or ``target_params=t`` (one of them, and no
    ``amount``) chooses the amount instead: the one whose export (``chanprune.export`` with its
    defaults) has ``t`` of the unpruned model's MACs (at the example inputs) or parameters,
    within 0.02 absolute, masked with the ``heuristic``, ``scope``, ``side`` and
    ``constrained`` given (``chanprune.masking.targets``; mixed masks unless ``constrained``
    says otherwise, their amount then being the budget's share of the MACs, or of the
    parameters for ``target_params``). The model ends with that one mask
    applied (channels it already had zeroed stay zero, and count as pruned). A target below
    what the most masking reaches raises :class:`MaskError` saying what it reached and why,
    leaving the model as it was; a target only missed because the cost falls in steps of whole
    channels, or one above what the unmasked export already costs, is met as closely as
    possible with a warning. The result then also has ``target``, ``amount`` (the one found) and
    ``ratio`` (the export's measured ratio) attributes.

    ``target_latency=t`` asks for an export that runs in ``t`` of the unpruned model's time on
    ``backend`` (``"eager"`` PyTorch on this CPU, ``"ort"`` ONNX Runtime, ``"cuda"``), within
    5%: the latency model (``chanprune.latency``: the op calls of each try timed alone, cached
    per machine) predicts each try's ratio, and the chosen export is then measured against the
    unpruned model, paired per round, correcting the model's aim by its error (at most four
    measurements: ``targets.refine``). ``ratio`` is the measured ratio (``measured`` holds its
    interval, ``predicted`` the model's). Mixed masks rank channels by score per second saved.
    Timing needs a quiet machine: other jobs on the cores move every measurement. On ``"ort"``
    the target is predicted and measured for ``export(method="dense")``, which runs faster
    there than the reorder export, and mixed masks count only what that export saves (a unit
    saves nothing until its segment channel leaves: ``mixed_order(partial=False)``);
    ``method`` on the result says which export the ratio holds for.

    ``heuristic`` is one of ``chanprune.HEURISTICS`` (lower score: pruned first); HRank scores
    feature maps of ``calibration`` batches (default: the example inputs). ``scope="local"``
    prunes ``amount`` of each layer's channels, ``"global"`` of all candidate channels (never
    emptying a layer). ``side="output"`` zeroes producers' filters, with the per-channel
    parameters that would otherwise turn the zero into a constant (a following BatchNorm, a
    bias); ``side="input"`` zeroes consumers' weight columns. ``constrained=True`` makes all
    layers that share a channel (a residual stage) prune it together, the classic copy-free
    scheme; ``constrained=False`` lets every layer choose its own channels.
    ``constrained="mixed"`` ranks a layer's own channels and whole segment channels together by
    normalised score per MAC saved (``chanprune.masking.mixed``: a whole segment channel also
    narrows the stream), zeroing the cheapest until the predicted saving reaches ``amount`` of
    the model's conv/linear MACs; ``scope`` does not apply (the ranking is global, never
    emptying a layer). ``None``, the default, means for a target mixed masks with
    ``heuristic="taylor"`` (scores that compare across layers, computed again as the mask
    grows) and constrained masks with any other heuristic, and ``False`` without a target:
    the combinations the frontier study found most accurate at equal latency
    (benchmarks/results/frontier.md).

    Returns {weight parameter name: sorted channel indices}: output channels (rows) for
    ``side="output"``, input channels of the consumer for ``side="input"``. Warns, naming the
    causes, when less than half of the conv/linear channels can be pruned at all
    (``chanprune.analysis.share``).

    ``submodules=["backbone", ...]`` masks each named submodule on the inputs it receives in one
    eager run of ``model`` (for models torch.export cannot capture whole, such as detectors with
    their post-processing); ``amount`` and ``scope`` then apply to each part on its own.

    ``example_kwargs`` and ``dynamic_shapes`` are as in :func:`chanprune.export` (pass the same
    to both, so the export reuses this capture).

    ``round_to=q`` moves each layer's cut (each family's, constrained) to the nearest count
    that keeps a multiple of ``q`` channels (or the layer's own count), as Torch-Pruning's
    ``round_to`` does, so that kept widths land on the backend's channel quantum without the
    zero channels ``export(width_quantum=...)`` would add; ``scope="local"`` masks only.
    """
    amount, target = resolve(amount, target_macs, target_params, target_latency, backend)
    validate(amount, heuristic, scope, side)
    constrained = masking_kind(constrained, target, heuristic)
    check_round_to(round_to, scope, constrained)
    if submodules is not None:
        if target is not None:
            raise InputError(
                f"{target.name} is a share of the whole model's export, which submodules= does "
                "not build in one piece; mask the parts with amount= instead"
            )
        if calibration is not None:
            raise InputError(
                "calibration batches are the whole model's inputs; with submodules, HRank scores "
                "each part on the inputs it receives from the example inputs"
            )
        kw = dict(
            heuristic=heuristic,
            scope=scope,
            side=side,
            constrained=constrained,
            round_to=round_to,
        )
        if dynamic_shapes is not None:
            raise InputError(
                "dynamic_shapes names the whole model's inputs; with submodules, each part is "
                "captured at the sizes it receives (batch aside)"
            )
        parts = for_each_part(
            model,
            example_inputs,
            submodules,
            lambda sub, xs: mask(sub, xs, amount, calibration=calibration, **kw),
            example_kwargs,
        )
        return {f"{n}.{k}": v for n, got in parts.items() for k, v in got.items()}
    inputs, kwargs = as_example(example_inputs, example_kwargs)
    if calibration is not None:
        calibration = list(calibration)  # read more than once (Taylor scores again)
    if calibration is not None and any(isinstance(v, torch.Tensor) for v in kwargs.values()):
        raise InputError(
            "calibration batches are positional inputs only, and example_kwargs holds tensors "
            f"({', '.join(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))}) that "
            "would not match their batch: score with HRank on the example inputs (no "
            "calibration) or with a weight heuristic"
        )
    # HRank runs the captured graph on calibration batches, unchecked: the symbolic trace
    cap = capture(
        model,
        inputs,
        marked=heuristic != "hrank" and target is None,
        example_kwargs=kwargs,
        dynamic_shapes=dynamic_shapes,
    )
    an = analyze(cap)
    if (low := low_share_message(prunable_share(an))) is not None:
        warnings.warn(low, stacklevel=3)
    units = _units(an, side)
    rescore = None
    if heuristic == "taylor":  # one index of the units' entries, for every scoring
        rescore = _rescorer(model, an, units, side, (inputs, kwargs), calibration)
    _score(model, units, an, heuristic, side, (inputs, kwargs), calibration, rescore)
    ranking = _Ranking(heuristic in COMPARABLE, rescore if constrained == MIXED else None)
    if target is not None:
        return _mask_to_target(
            model,
            an,
            units,
            target,
            (scope, constrained, side, ranking, round_to),
            (inputs, kwargs, dynamic_shapes),
        )
    chosen = _choose(units, float(amount), scope, constrained, an, side, ranking, round_to)
    return _apply(an, chosen, side)


def _mask_to_target(
    model: torch.nn.Module,
    an: ChannelAnalysis,
    units: list[Unit],
    target: Target,
    how: tuple[str, bool | str, str, _Ranking, int],
    example: tuple[tuple, dict, object],
) -> TargetMasks:
    """Search the amount whose export meets ``target`` (``how``: scope, constrained, side,
    how mixed masks rank, round_to),
    trying each amount's masks and putting them back, then apply the closest one. ``example``:
    positional inputs, keyword inputs, dynamic shapes. For mixed masks the amount is the
    budget, a share of the costs' total (MACs, or parameters for ``target_params``), tried at
    one budget per prefix of the greedy order (``mixed.budgets_between_picks``)."""
    scope, constrained, side, ranking, round_to = how
    inputs, kwargs, dynamic_shapes = example
    latency = target.name == "target_latency"
    base = runner(model, inputs, kwargs, target.backend) if latency else None  # before masking
    predicted = (
        unpruned_prediction(model, inputs, kwargs, dynamic_shapes, target.backend)
        if latency
        else None
    )
    unpruned = predicted.seconds if predicted else cost(model, inputs, kwargs, target)
    tried: dict[frozenset, float] = {}  # amounts that choose the same channels share a try
    if constrained == MIXED:  # the amount is a budget: a share of the costs' total
        costs = _costs_for(target, an, predicted)
        order = mixed_order(units, an, side, costs, *ranking, partial=target.method != "dense")
        amounts = budgets_between_picks(order, costs.total)

        def choose(amount: float) -> list[Unit]:
            return take(order, amount * costs.total)
    else:
        amounts = amounts_between_cuts(_group_sizes(units, scope, constrained, an, side))

        def choose(amount: float) -> list[Unit]:
            return _choose(units, amount, scope, constrained, an, side, ranking, round_to)

    def ratio_at(amount: float) -> float:
        chosen = choose(amount)
        key = frozenset((u.layer, u.channel) for u in chosen)
        if key not in tried:
            saved = _zero(_edits(an, chosen, side)[1])
            try:
                pruned = export_cost(model, inputs, kwargs, dynamic_shapes, target)
                tried[key] = pruned / unpruned if unpruned > 0 else 1.0
            finally:
                _restore(saved)
        return tried[key]

    measured = None
    attempts: list[tuple[float, float]] = []  # (predicted, measured) ratio of each measurement
    if latency:

        def measure_at(amount: float) -> Measured:
            predicted_here = ratio_at(amount)  # cached: the search tried this amount
            saved = _zero(_edits(an, choose(amount), side)[1])
            try:
                pruned = target_export(model, inputs, kwargs, dynamic_shapes, target)
                with eval_mode(model):  # the base runs the user's model: no BN updates
                    got = measure_calls(runner(pruned, inputs, kwargs, target.backend), base)
                attempts.append((predicted_here, got.ratio))
                return got
            finally:
                _restore(saved)

        found, lowest, measured = refine(
            lambda goal: search(ratio_at, goal, amounts), measure_at, target.value
        )
        found_measured = Try(found.amount, measured.ratio)
    else:
        found, lowest = search(ratio_at, target.value, amounts)
        found_measured = found
    share = prunable_share(an)
    reach = str(share) + "".join(f"; {c}" for c in share.causes)
    said = verdict(found_measured, lowest, target, reach, mixed=constrained == MIXED)
    if said is not None:
        fatal, text = said
        if fatal:
            raise MaskError(text)
        warnings.warn(text, stacklevel=4)
    chosen = _apply(an, choose(found.amount), side)
    return TargetMasks(chosen, target, found, measured, attempts)


def _costs_for(target: Target, an: ChannelAnalysis, unpruned: Prediction | None) -> ChannelCosts:
    """What mixed masks rank by for ``target``: MACs, parameters for ``target_params``, or the
    latency model's seconds for ``target_latency`` (``unpruned``: its prediction)."""
    if target.name == "target_params":
        return param_costs(an)
    if target.name == "target_macs":
        return mac_costs(an)
    if target.name == "target_latency" and unpruned is not None:
        return latency_model(target.backend).channel_costs(an, unpruned)
    raise InputError(f"mixed masks have no channel costs for {target.name} yet")


@gc_paused
def apply_masks(
    model: torch.nn.Module,
    example_inputs: object,
    masks: dict[str, Iterable[int]],
    side: str = "output",
    example_kwargs: dict[str, object] | None = None,
) -> dict[str, list[int]]:
    """Zero user-chosen channels in place: ``masks`` is {producer weight: rows} for
    ``side="output"`` (the per-channel parameters after each filter are zeroed with it, as in
    :func:`mask`) or {consumer weight: input channels} for ``side="input"``. Returns what was
    zeroed, in :func:`mask`'s form."""
    if side not in SIDES:
        raise InputError(f"unknown side {side!r}; choose 'output' or 'input'")
    if not isinstance(masks, dict):
        raise MaskError(f"masks must be a dict of parameter name -> channel indices, got {masks!r}")
    inputs, kwargs = as_example(example_inputs, example_kwargs)
    cap = capture(model, inputs, example_kwargs=kwargs)
    an = analyze(cap)
    units = _units(an, side, candidates_only=False)
    by_layer: dict[str, dict[int, Unit]] = {}
    for u in units:
        by_layer.setdefault(u.param, {})[u.channel] = u
    chosen = []
    for name, channels in masks.items():
        if name not in by_layer:
            close = difflib.get_close_matches(str(name), list(by_layer), n=3)
            kind = "producer" if side == "output" else "consumer"
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise MaskError(f"mask names {name!r}, which is not the weight of a {kind}{hint}")
        for c in channels:
            if not isinstance(c, int | np.integer) or int(c) not in by_layer[name]:
                raise MaskError(
                    f"mask for {name!r} names channel {c!r}; valid channels are "
                    f"0..{max(by_layer[name])}"
                )
            chosen.append(by_layer[name][int(c)])
    return _apply(an, chosen, side)


# candidates -------------------------------------------------------------------------------------
class _Ranking(NamedTuple):
    """How mixed masks rank: whether the scores compare across layers as they are, and the
    function that scores again with some units zeroed (Taylor: iterative pruning)."""

    comparable: bool
    rescore: Callable[[list[Unit]], list[float]] | None


def _rescorer(model, an, units, side, example, calibration) -> Callable[[list[Unit]], list[float]]:
    """Taylor scores of ``units`` with the ``taken`` ones zeroed for the call (then put back):
    the first scoring (nothing taken) and mixed masks' rescorings share one scorer."""
    inputs, kwargs = example
    batches = [inputs] if calibration is None else [as_input_tuple(b) for b in calibration]
    scorer = TaylorScorer(model, an, units, side, _edits, batches, kwargs)

    def rescore(taken: list[Unit]) -> list[float]:
        saved = _zero(_edits(an, taken, side)[1])
        try:
            return scorer(recalibrate=bool(taken))
        finally:
            _restore(saved)

    return rescore


def _units(an: ChannelAnalysis, side: str, candidates_only: bool = True) -> list[Unit]:
    units: list[Unit] = []
    if side == "output":
        for li, p in enumerate(an.producers):
            roots = an.root[p.ids]
            for c in range(p.channels):
                if candidates_only and (an.pinned[roots[c]] or an.dependent[p.first + c]):
                    continue
                units.append(Unit(li, p.weight, c, np.array([c]), int(roots[c])))
    else:
        for li, con in enumerate(an.consumers):
            roots = an.root[con.ids]
            for c, r in enumerate(_unique_in_order(roots)):
                if candidates_only and an.pinned[r]:
                    continue
                units.append(Unit(li, con.weight, c, np.flatnonzero(roots == r), int(r)))
    return units


def _unique_in_order(a: np.ndarray) -> list[int]:
    _, first = np.unique(a, return_index=True)
    return [int(a[i]) for i in sorted(first)]


# scoring --------------------------------------------------------------------------------------
def _score(model, units, an, heuristic, side, inputs, calibration, rescore=None) -> None:
    """Set each unit's score. Taylor scores come from ``rescore`` (:func:`_rescorer`, made
    here if not given) with nothing taken."""
    layers = an.producers if side == "output" else an.consumers
    if heuristic == "taylor":
        rescore = rescore or _rescorer(model, an, units, side, inputs, calibration)
        for u, s in zip(units, rescore([]), strict=True):
            u.score = s
        return
    by_layer: dict[int, list[Unit]] = {}
    for u in units:
        by_layer.setdefault(u.layer, []).append(u)
    maps = _feature_maps(an, side, inputs, calibration, by_layer) if heuristic == "hrank" else {}
    for li, us in by_layer.items():
        w = an.capture.tensors[layers[li].weight].detach().float()
        if heuristic == "hrank":
            s = hrank(maps[li])
            scores = [float(s[u.rows].mean()) for u in us]
        else:
            rows = _rows(w.movedim(layers[li].dim, 0), us, side)
            scores = WEIGHT_SCORERS[heuristic](rows).tolist()
        for u, s in zip(us, scores, strict=True):
            u.score = float(s)


def _rows(w: torch.Tensor, us: list[Unit], side: str) -> torch.Tensor:
    """One row per unit: its filter (output side) or all its input columns (input side).
    ``w`` has the masked dimension first."""
    if side == "output":
        return w.flatten(1)[torch.tensor([u.channel for u in us])]
    cols = w  # (in, ...)
    flat = [cols[torch.from_numpy(u.rows)].reshape(-1) for u in us]
    # a channel read at several positions (concatenated twice) has more columns: zero-pad,
    # which leaves norms (l1, l2, lamp) unchanged
    width = max(len(f) for f in flat)
    return torch.stack([torch.nn.functional.pad(f, (0, width - len(f))) for f in flat])


def _feature_maps(an, side, example, calibration, by_layer) -> dict[int, torch.Tensor]:
    """Per layer, (batch, channel, *spatial) maps: producer outputs or consumer inputs.
    ``example``: (positional inputs, keyword inputs); calibration batches take the keyword
    inputs (constants only, ``mask`` checks) from it."""
    inputs, kwargs = example
    layers = an.producers if side == "output" else an.consumers
    want: dict[str, list[int]] = {}
    nodes = {n.name: n for n in an.capture.graph.nodes}
    for li in by_layer:
        node = nodes[layers[li].node]
        src = node if side == "output" else node.args[0]
        want.setdefault(src.name, []).append(li)
    batches = [inputs] if calibration is None else [as_input_tuple(b) for b in calibration]
    got: dict[int, list[torch.Tensor]] = {}
    for batch in batches:
        for name, value in run_graph(an.capture, batch, set(want), kwargs).items():
            for li in want[name]:
                got.setdefault(li, []).append(value.movedim(an.axes[name].dim, 1))
    return {li: torch.cat(v) for li, v in got.items()}


# choosing -----------------------------------------------------------------------------------
def _choose(
    units, amount, scope, constrained, an, side, ranking=None, round_to: int = 1
) -> list[Unit]:
    if amount == 0 or not units:
        return []
    if constrained == MIXED:  # a budget of amount * the conv/linear MACs (mask's docstring)
        costs = mac_costs(an)
        order = mixed_order(units, an, side, costs, *(ranking or _Ranking(False, None)))
        return take(order, amount * costs.total)
    if constrained:
        return _choose_constrained(units, amount, scope, an, side, round_to)
    if scope == "local":
        chosen = []
        for us in _group(units, lambda u: u.layer).values():
            n = _layer_size(an, side, us[0].layer)
            k = rounded_cut(n, int(amount * n), round_to)
            chosen += sorted(us, key=lambda u: (u.score, u.channel))[: min(k, len(us))]
        return chosen
    return _global(units, amount, an, side, key=lambda u: u.layer)


def rounded_cut(n: int, k: int, q: int) -> int:
    """How many of ``n`` channels to prune instead of ``k`` so that the count kept is the
    nearest to ``n - k`` among the multiples of ``q`` up to ``n`` and ``n`` itself (ties:
    the larger count kept). ``q=1``, or ``n < q``, leaves ``k`` as it is."""
    if q <= 1 or n < q:
        return k
    keep = n - k
    options = [*range(q, n + 1, q), n]
    return n - min(options, key=lambda c: (abs(c - keep), -c))


def check_round_to(round_to: object, scope: str, constrained: bool | str | None) -> None:
    """``round_to`` is a positive int, and only for masks that cut each layer (or family)."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise InputError(f"round_to must be a positive int (1: no rounding), got {round_to!r}")
    if round_to > 1 and (scope != "local" or constrained == MIXED):
        what = "mixed masks" if constrained == MIXED else f"scope={scope!r}"
        raise InputError(
            f"round_to={round_to} moves each layer's cut, which {what} do not make; use "
            "scope='local' with constrained=True or False, or leave the widths to "
            "export(width_quantum=...)"
        )


def _group_sizes(units, scope, constrained, an, side) -> set[int]:
    """The sizes ``n`` of the groups :func:`_choose` takes ``int(amount * n)`` channels of
    (layers, families of segment channels, or all of them), so that a target search tries each
    distinct mask once (``targets.amounts_between_cuts``). Mirrors :func:`_choose`; mixed
    masks cut a greedy order instead (``mixed.budgets_between_picks``)."""
    if constrained == MIXED:
        raise ValueError("mixed masks have no groups: use mixed.budgets_between_picks")
    if constrained:
        by_root = _group(units, lambda u: u.root)
        if scope == "global":
            return {len(by_root)}
        layers_of = {r: frozenset(u.layer for u in us) for r, us in by_root.items()}
        return {len(rs) for rs in _group(list(by_root), lambda r: layers_of[r]).values()}
    sizes = {li: _layer_size(an, side, li) for li in {u.layer for u in units}}
    return {sum(sizes.values())} if scope == "global" else set(sizes.values())


def _layer_size(an: ChannelAnalysis, side: str, layer: int) -> int:
    if side == "output":
        return an.producers[layer].channels
    return len(np.unique(an.consumers[layer].ids))


def _global(units, amount, an, side, key) -> list[Unit]:
    """Lowest scores overall, never emptying a layer (each keeps at least one channel)."""
    total = sum(_layer_size(an, side, li) for li in {u.layer for u in units})
    budget = int(amount * total)
    left = {li: _layer_size(an, side, li) for li in {u.layer for u in units}}
    chosen = []
    for u in sorted(units, key=lambda u: (u.score, u.layer, u.channel)):
        if len(chosen) >= budget:
            break
        if left[u.layer] > 1:
            left[u.layer] -= 1
            chosen.append(u)
    return chosen


def _choose_constrained(units, amount, scope, an, side, round_to: int = 1) -> list[Unit]:
    """Segment channels are pruned as a whole: every unit of a chosen root is zeroed."""
    by_root = _group(units, lambda u: u.root)
    layers_of = {r: frozenset(u.layer for u in us) for r, us in by_root.items()}
    score = {r: float(np.mean([u.score for u in us])) for r, us in by_root.items()}
    if scope == "local":
        picked = []
        families = _group(list(by_root), lambda r: layers_of[r])
        for roots in families.values():
            k = rounded_cut(len(roots), int(amount * len(roots)), round_to)
            picked += sorted(roots, key=lambda r: (score[r], r))[:k]
    else:
        budget = int(amount * len(by_root))
        picked = sorted(by_root, key=lambda r: (score[r], r))[:budget]
    return [u for r in picked for u in by_root[r]]


def _group(items, key) -> dict:
    out: dict = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out


# applying --------------------------------------------------------------------------------------
def _apply(an: ChannelAnalysis, chosen: list[Unit], side: str) -> dict[str, list[int]]:
    """Zero ``chosen`` in the model; return {weight name: sorted channels}."""
    result, edits = _edits(an, chosen, side)
    _zero(edits)
    return result


Edit = tuple[torch.Tensor, int, np.ndarray]  # (tensor, dim, positions to zero along dim)
Saved = list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]  # (tensor, dim, idx, old)


def _edits(an: ChannelAnalysis, chosen: list[Unit], side: str) -> tuple[dict, list[Edit]]:
    """What zeroing ``chosen`` returns to the user, and the tensor slices it zeroes."""
    tensors = an.capture.tensors
    result: dict[str, list[int]] = {}
    edits: list[Edit] = []
    if side == "output":
        dead = []
        for li, us in _group(chosen, key=lambda u: u.layer).items():
            p = an.producers[li]
            rows = np.array(sorted(u.channel for u in us), dtype=np.int64)
            edits.append((tensors[p.weight], p.dim, rows))
            if p.bias is not None:
                edits.append((tensors[p.bias], 0, rows))
            dead.append(p.first + rows)
            result.setdefault(p.weight, []).extend(rows.tolist())
        dead_arr = np.sort(np.concatenate(dead)) if dead else np.zeros(0, dtype=np.int64)
        for comp in an.companions:
            sel = np.isin(comp.origin, dead_arr)
            if sel.any():
                edits.append((tensors[comp.param], comp.dim, comp.index[sel]))
    else:
        for u in chosen:
            con = an.consumers[u.layer]
            edits.append((tensors[con.weight], con.dim, u.rows))
            result.setdefault(an.consumers[u.layer].weight, []).append(u.channel)
    return {k: sorted(v) for k, v in sorted(result.items())}, edits


def _zero(edits: list[Edit]) -> Saved:
    """Zero each (tensor, dim, index) slice, all or none: on any error (an interrupt included)
    the slices zeroed so far are put back. Saving only those slices, not the whole model, keeps
    mask() from doubling a large model's memory. Returns the saved slices for :func:`_restore`
    (a target search tries masks and puts each back)."""
    done: Saved = []
    with torch.no_grad():
        try:
            for t, dim, index in edits:
                idx = torch.as_tensor(np.asarray(index, dtype=np.int64), device=t.device)
                done.append((t, dim, idx, t.index_select(dim, idx)))
                t.index_fill_(dim, idx, 0)
        except BaseException:
            _restore(done)
            raise
    return done


def _restore(saved: Saved) -> None:
    """Put back the slices :func:`_zero` saved, last first (a slice zeroed twice, such as a
    companion shared by two producers, gets its original values back, zeros the user set
    included)."""
    with torch.no_grad():
        for t, dim, idx, old in reversed(saved):
            t.index_copy_(dim, idx, old)
