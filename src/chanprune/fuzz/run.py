"""The property: mask a built network, export it both ways, compare with the masked model."""

from __future__ import annotations

import random
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..analysis.propagate import analyze
from ..capture.trace import capture
from ..deploy.spec import check_spec, kept_indices
from ..errors import ExportError
from ..masking.masks import _units
from ..rewrite.verify import compare
from .build import build
from .spec import Case, MaskSet


# masking ---------------------------------------------------------------------------------------
def _channels(kind: str, n: int, rng: random.Random, prev: list[int] | None) -> list[int]:
    every = list(range(n))
    if kind == "none" or n == 0:
        return []
    if kind == "all":
        return every
    if kind == "all_but_one":
        keep = rng.randrange(n)
        return [c for c in every if c != keep]
    if prev is not None and kind in ("same", "nested", "disjoint"):
        prev = [c for c in prev if c < n]
        if kind == "same":
            return prev
        if kind == "nested":  # a subset or a superset of the previous set, at random
            if rng.random() < 0.5:
                return sorted(rng.sample(prev, rng.randint(0, len(prev))))
            rest = [c for c in every if c not in prev]
            return sorted(prev + rng.sample(rest, rng.randint(0, len(rest))))
        rest = [c for c in every if c not in prev]
        return sorted(rng.sample(rest, rng.randint(0, len(rest))))
    return sorted(rng.sample(every, rng.randint(1, n)))


def apply_maskset(model: nn.Module, x: torch.Tensor, ms_set: MaskSet) -> list[str]:
    """Apply a mask set to ``model`` in place; returns what was done, for the report."""
    import chanprune

    log = []
    if ms_set.auto is not None:
        a = ms_set.auto
        chanprune.mask(model, x, a.amount, a.heuristic, a.scope, a.side, a.constrained)
        log.append(f"auto {a}")
    if not ms_set.masks:
        return log
    an = analyze(capture(model, x))
    layers = {}
    for side in ("output", "input"):
        count: dict[str, int] = {}
        for u in _units(an, side, candidates_only=False):
            count[u.param] = max(count.get(u.param, 0), u.channel + 1)
        layers[side] = sorted(count.items())
    params = dict(model.named_parameters())
    prev: list[int] | None = None
    for ms in ms_set.masks:
        if not layers[ms.side]:
            continue
        name, n = layers[ms.side][ms.target % len(layers[ms.side])]
        w = params[name]
        if not ms.api:  # by hand: the raw weight slice (conv input channels within a group)
            n = w.shape[0] if ms.side == "output" else w.shape[1]
        chans = _channels(ms.kind, n, random.Random(ms.seed), prev)
        prev = chans
        if not chans:
            continue
        if ms.api:
            chanprune.apply_masks(model, x, {name: chans}, side=ms.side)
        else:
            with torch.no_grad():
                idx = torch.tensor(chans)
                if ms.side == "output":
                    w.index_fill_(0, idx, 0.0)
                else:
                    w.index_fill_(1, idx, 0.0)
        log.append(f"{ms.side} {name} {'api' if ms.api else 'raw'} {ms.kind} {chans}")
    return log


# the property ----------------------------------------------------------------------------------
METHODS = ("reorder", "baseline")


@dataclass
class Outcome:
    """What happened to one case, per method: "ok", "error:<Kind>: msg", "mismatch ..." or
    "crash ..." (an undocumented exception). ``ok`` is the property."""

    results: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)  # parameters removed, per method

    @property
    def ok(self) -> bool:
        return all(r == "ok" or r.startswith("error:") for r in self.results.values())


def _close(a: Any, b: Any) -> tuple[bool, float]:

    c = compare(a, b)
    return c.ok, c.max_abs_diff


def run_case(case: Case, methods: Sequence[str] = METHODS, spec: bool = False) -> list[Outcome]:
    """Per mask set: build, mask, export with each method; compare on the example input and on
    a batch of another size (the export's dynamic batch). ``spec``: also read each correct
    export's pruning spec and rebuild the model from it (``save_pruned``'s round trip, without
    files), recorded as ``"<method> spec"``."""
    model, x = build(case)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(case.seed + 1)
    x2 = torch.randn((5, *x.shape[1:]), generator=gen)
    outcomes = []
    for ms_set in case.masksets:
        model.load_state_dict(initial)
        outcomes.append(_run_maskset(model, x, x2, ms_set, methods, spec))
    return outcomes


def _run_maskset(model, x, x2, ms_set: MaskSet, methods: Sequence[str], spec: bool) -> Outcome:
    import chanprune

    out = Outcome()
    try:
        out.log = apply_maskset(model, x, ms_set)
    except chanprune.ChanpruneError as e:
        out.results = {m: f"error:{type(e).__name__}: {e}" for m in methods}
        return out
    except Exception as e:  # masking itself crashed: a chanprune bug too
        out.results = {m: f"crash in masking {type(e).__name__}: {e}" for m in methods}
        return out
    with torch.no_grad():
        ref, ref2 = model(x), model(x2)
    total = sum(p.numel() for p in model.parameters())
    for method in methods:
        try:
            exported = chanprune.export(model, x, method=method)
        except chanprune.ExportError as e:  # the exporter's own check caught a wrong model
            out.results[method] = f"mismatch (caught by export): {e}"
            continue
        except chanprune.ChanpruneError as e:
            out.results[method] = f"error:{type(e).__name__}: {e}"
            continue
        except Exception as e:
            tb = traceback.format_exc(limit=-3)
            out.results[method] = f"crash {type(e).__name__}: {e}\n{tb}"
            continue
        with torch.no_grad():
            got, got2 = exported(x), exported(x2)
        ok1, d1 = _close(ref, got)
        ok2, d2 = _close(ref2, got2)
        out.results[method] = "ok" if ok1 and ok2 else f"mismatch: max|diff| {d1:.3g}, {d2:.3g}"
        out.removed[method] = total - sum(p.numel() for p in exported.parameters())
        if spec and ok1 and ok2:
            out.results[f"{method} spec"] = _spec_round_trip(exported, model, x)
    return out


def _spec_round_trip(exported, model, x) -> str:

    try:
        check_spec(exported, model, (x,), kept_indices(exported, model, (x,)))
    except ExportError as e:  # no spec, or one that does not rebuild the export
        return f"mismatch (spec): {e}"
    except Exception as e:
        return f"crash {type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
    return "ok"


def features(case: Case, ms_set: MaskSet) -> set[str]:
    """What a network with one mask set exercises, for the soak summary."""
    f = set()
    for op in case.net.ops:
        f.add(op.kind)
        if op.kind == "conv":
            if op.get("groups") > 1:
                f.add(f"conv:{op.get('style')}")
            if op.get("stride") > 1:
                f.add("conv:strided")
            if op.get("dil") > 1:
                f.add("conv:dilated")
        if op.kind in ("act", "pool", "gap", "shuffle", "se", "frozen", "rmsnorm"):
            f.add(f"{op.kind}:{op.get('fn') or op.get('how') or op.get('gate')}")
        if op.kind == "split":
            f.add("split:chunk" if op.get("chunks") else "split:sizes")
        if op.kind == "views":
            f.add(f"views:{op.get('how')}")
        if op.kind == "shift":
            f.add(f"shift:{'gru' if op.get('gru') else 'roll'}")
        if op.kind == "twice":
            f.add(f"twice:{'pair' if op.get('pair') else 'chain'}")
        if op.kind == "inorm":
            f.add(f"inorm:{'affine' if op.get('affine') else 'plain'}")
        if op.kind == "attention":
            f.add(f"attention:{op.get('how')}")
        if op.kind == "convt":
            f.add("convt:depthwise" if op.get("groups") > 1 else "convt")
    if len(case.net.outputs) > 1:
        f.add("two outputs")
    if ms_set.auto is not None:
        a = ms_set.auto
        kind = {True: " constrained", "mixed": " mixed"}.get(a.constrained, "")
        f.add(f"mask:auto {a.side}{kind}")
    for m in ms_set.masks:
        f.add(f"mask:{m.side} {m.kind}{'' if m.api else ' raw'}")
    return f
