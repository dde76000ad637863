"""Differential fuzzing of the exporter: random networks, random masks, exported == masked.

A *case* is plain data (:class:`Case`: a network spec, mask specs, a seed), so a failing case
prints readably and rebuilds exactly. Cases are drawn through a tiny :class:`Draw` interface:
``hypothesis`` drives it in the tests (so failures shrink to a minimal network), and
``random.Random`` drives it in ``benchmarks/soak.py`` (so thousands of cases are cheap and each
is reproducible from its seed). :func:`run_case` is the property: for both export methods,
export succeeds or raises a documented :class:`~chanprune.ChanpruneError`, and the exported
module reproduces the masked model on the example input and on a batch of another size.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MAP, VEC = "map", "vec"  # (N, C, H, W) feature maps and (N, C) vectors
ACTS = ("relu", "gelu", "sigmoid", "hardswish", "silu", "tanh", "relu6", "leaky_relu")
MAP_OPS = (
    "conv", "act", "conv", "bn", "add", "cat", "split", "pool", "se", "gn", "ln", "shuffle", "plin",
    "gap", "flatten", "slice", "gate", "scale",
)  # fmt: skip
EXTRA_MAP_OPS = ("mlp",)  # added after the committed soak run; opt-in keeps its seeds valid
VEC_OPS = ("act", "linear", "bn", "add", "cat", "ln", "slice", "gate", "scale")
MASK_KINDS = ("random", "none", "all_but_one", "all", "same", "nested", "disjoint")


@dataclass(frozen=True)
class Op:
    """One op of a network: ``kind`` applied to earlier values ``src`` (0 is the input)."""

    kind: str
    src: tuple[int, ...]
    p: tuple[tuple[str, Any], ...] = ()  # parameters, as sorted (name, value) pairs

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.p)
        return f"{self.kind}{self.src}" + (f"[{args}]" if args else "")

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.p).get(name, default)


@dataclass(frozen=True)
class NetSpec:
    in_ch: int
    size: int
    ops: tuple[Op, ...]
    outputs: tuple[int, ...]  # value indices returned by the model


@dataclass(frozen=True)
class MaskSpec:
    """Zero channels of one layer. ``target`` picks the layer (modulo the number of layers);
    ``api`` goes through chanprune.apply_masks (companions zeroed too), otherwise the weight
    slice is zeroed by hand (a BatchNorm shift after it then keeps the channel alive)."""

    side: str  # "output" (filter rows) or "input" (consumer columns)
    target: int
    kind: str  # one of MASK_KINDS; same/nested/disjoint relate to the previous mask's set
    seed: int
    api: bool = True


@dataclass(frozen=True)
class AutoMask:
    """chanprune.mask(...) with these arguments, applied before the explicit masks."""

    amount: float
    heuristic: str
    scope: str
    side: str
    constrained: bool


@dataclass(frozen=True)
class MaskSet:
    """One way of masking a network: optionally chanprune.mask(...), then explicit masks."""

    auto: AutoMask | None = None
    masks: tuple[MaskSpec, ...] = ()


@dataclass(frozen=True)
class Case:
    """A network and the mask sets tried on it (each from the same initial weights); the
    network is captured once for all of them, which is most of the cost of a case."""

    net: NetSpec
    masksets: tuple[MaskSet, ...] = (MaskSet(),)
    seed: int = 0
    batch: int = 2


# drawing ---------------------------------------------------------------------------------------
class Draw:
    """The choices a generator makes; subclasses back it with hypothesis or random.Random."""

    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def choice(self, items: Sequence[Any]) -> Any:
        return items[self.integer(0, len(items) - 1)]

    def boolean(self) -> bool:
        return self.integer(0, 1) == 1


class RandomDraw(Draw):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisDraw(Draw):
    """Adapter for ``st.composite``'s ``draw``: integers shrink towards ``lo``."""

    def __init__(self, draw: Callable) -> None:
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def draw_net(d: Draw, max_ops: int = 8, extra: bool = False) -> NetSpec:
    """A random valid network; shapes are tracked so every op fits its inputs. ``extra`` adds
    EXTRA_MAP_OPS to the menu (which changes what each seed draws)."""
    in_ch, size = d.integer(1, 4), d.choice((4, 6, 5, 8))
    shapes: list[tuple[str, int, int]] = [(MAP, in_ch, size)]  # (kind, channels, height=width)
    ops: list[Op] = []
    for _ in range(d.integer(1, max_ops)):
        back = min(d.integer(0, len(shapes) - 1), d.integer(0, len(shapes) - 1))
        src = len(shapes) - 1 - back  # mostly recent values (a chain); shrinks to the newest
        op = _draw_op(d, src, shapes, extra)
        ops.append(op)
        shapes.extend(out_shapes(op, shapes))
    if d.boolean():  # a classifier head: pooled or flattened into a linear
        last = len(shapes) - 1
        if shapes[last][0] == MAP:
            small = shapes[last][2] ** 2 * shapes[last][1] <= 64
            how = "flatten" if small and d.boolean() else "gap"
            ops.append(Op(how, (last,), (("how", "mean"),) if how == "gap" else ()))
            shapes.extend(out_shapes(ops[-1], shapes))
        ops.append(Op("linear", (len(shapes) - 1,), (("bias", True), ("out", d.integer(1, 5)))))
        shapes.extend(out_shapes(ops[-1], shapes))
    outputs = [len(shapes) - 1]
    if len(shapes) > 2 and d.integer(0, 3) == 0:
        other = d.integer(1, len(shapes) - 2)
        outputs.append(other)
    return NetSpec(in_ch, size, tuple(ops), tuple(outputs))


def _draw_op(d: Draw, src: int, shapes: list, extra: bool = False) -> Op:
    kind, c, h = shapes[src]
    menu = (MAP_OPS + EXTRA_MAP_OPS if extra else MAP_OPS) if kind == MAP else VEC_OPS
    op = d.choice(menu)
    same = [i for i, s in enumerate(shapes) if s == shapes[src]]
    if op == "act":
        return Op("act", (src,), (("fn", d.choice(ACTS)),))
    if op == "conv":
        style = d.choice(("plain", "plain", "depthwise", "grouped"))
        out = c if d.boolean() else d.integer(1, 10)
        groups = 1
        if style == "depthwise":
            groups, out = c, c * d.choice((1, 2))
        elif style == "grouped":
            groups = d.choice(_divisors(c))
            out = groups * d.integer(1, 3)
        k = d.choice((1, 3))
        stride = d.choice((1, 1, 2)) if h > 1 else 1
        dil = d.choice((1, 1, 2)) if k == 3 else 1
        p = (("bias", d.boolean()), ("dil", dil), ("groups", groups), ("k", k))
        return Op("conv", (src,), (*p, ("out", out), ("stride", stride), ("style", style)))
    if op == "linear":
        return Op("linear", (src,), (("bias", d.boolean()), ("out", d.integer(1, 10))))
    if op == "bn":
        return Op("bn", (src,))
    if op == "add":
        other = d.choice(same)
        return Op("add", (src, other), (("fn", d.choice(("add", "add", "sub"))),))
    if op == "cat":
        fits = [i for i, s in enumerate(shapes) if s[0] == kind and s[2] == h]
        more = [d.choice(fits) for _ in range(d.integer(1, 2))]
        return Op("cat", (src, *more))
    if op == "split" and c >= 2:
        if d.boolean() and c % 2 == 0:
            return Op("split", (src,), (("chunks", 2),))
        first = d.integer(1, c - 1)
        return Op("split", (src,), (("sizes", (first, c - first)),))
    if op == "pool":
        how = d.choice(("max2", "avg3", "max3s2")) if h >= 2 else "avg3"
        return Op("pool", (src,), (("how", how),))
    if op == "se":
        gate = d.choice(("sigmoid", "hardsigmoid"))
        return Op("se", (src,), (("gate", gate), ("mid", d.integer(1, 4))))
    if op == "gn":
        g = d.choice(_divisors(c))
        if c // g * h * h > 1:  # one value per group: eager GroupNorm refuses a batch of 1
            return Op("gn", (src,), (("groups", g),))
    if op == "ln":
        return Op("ln", (src,))
    if op == "shuffle" and c >= 2 and len(_divisors(c)) > 2:
        g = d.choice(_divisors(c)[1:-1])
        return Op("shuffle", (src,), (("groups", g), ("how", d.choice(("view", "module")))))
    if op == "plin":
        return Op("plin", (src,), (("out", c if d.boolean() else d.integer(1, 8)),))
    if op == "gap":
        return Op("gap", (src,), (("how", d.choice(("mean", "adaptive"))),))
    if op == "flatten" and c * h * h <= 64:
        return Op("flatten", (src,))
    if op == "slice" and c >= 2:
        a = d.integer(0, c - 1)
        return Op("slice", (src,), (("start", a), ("stop", d.integer(a + 1, c))))
    if op == "gate":  # x * sigmoid(y): a gate computed by another branch of the same shape
        return Op("gate", (src, d.choice(same)))
    if op == "scale":  # a learnable per-channel scale (layer scale), used as a bare parameter
        return Op("scale", (src,))
    if op == "mlp":  # ConvNeXt-style: channels-last LayerNorm? -> Linear -> act -> Linear
        p = (("act", d.choice(ACTS)), ("hidden", d.integer(1, 12)), ("norm", d.boolean()))
        return Op("mlp", (src,), (*p, ("out", c if d.boolean() else d.integer(1, 8))))
    return Op("act", (src,), (("fn", "relu"),))  # the op did not fit: a harmless fallback


def out_shapes(op: Op, shapes: list) -> list[tuple[str, int, int]]:
    """Shapes of the values an op appends (split appends one per piece)."""
    kind, c, h = shapes[op.src[0]]
    k = op.kind
    if k == "conv":
        return [(MAP, op.get("out"), (h - 1) // op.get("stride") + 1)]
    if k == "linear":
        return [(VEC, op.get("out"), 1)]
    if k == "cat":
        return [(kind, sum(shapes[s][1] for s in op.src), h)]
    if k == "split":
        return [(kind, s, h) for s in _split_sizes(op, c)]
    if k == "pool":
        return [(MAP, c, {"max2": h // 2, "avg3": h, "max3s2": (h - 1) // 2 + 1}[op.get("how")])]
    if k in ("plin", "mlp"):
        return [(MAP, op.get("out"), h)]
    if k == "gap":
        return [(VEC, c, 1)]
    if k == "flatten":
        return [(VEC, c * h * h, 1)]
    if k == "slice":
        return [(kind, op.get("stop") - op.get("start"), h)]
    return [(kind, c, h)]


def _split_sizes(op: Op, c: int) -> tuple[int, ...]:
    return (c // 2, c // 2) if op.get("chunks") else op.get("sizes")


def draw_maskset(d: Draw, max_masks: int = 4) -> MaskSet:
    auto = None
    if d.integer(0, 2) == 0:
        auto = AutoMask(
            amount=d.choice((0.0, 0.25, 0.5, 0.75)),
            heuristic=d.choice(("l1", "l2", "fpgm", "lamp")),
            scope=d.choice(("local", "global")),
            side=d.choice(("output", "input")),
            constrained=d.boolean(),
        )
    masks = tuple(
        MaskSpec(
            side=d.choice(("output", "input")),
            target=d.integer(0, 15),
            kind=d.choice(MASK_KINDS),
            seed=d.integer(0, 2**16),
            api=d.integer(0, 3) > 0,
        )
        for _ in range(d.integer(0, max_masks))
    )
    return MaskSet(auto, masks)


def draw_case(d: Draw, max_ops: int = 8, masksets: int = 1, extra: bool = False) -> Case:
    """A network and ``masksets`` mask sets tried on it."""
    net = draw_net(d, max_ops, extra)
    sets = tuple(draw_maskset(d) for _ in range(masksets))
    seed, batch = d.integer(0, 2**16), d.choice((2, 1, 3))
    return Case(net, sets, seed, batch)


def case_strategy(max_ops: int = 8, masksets: int = 2, extra: bool = True):
    """A hypothesis strategy of :class:`Case` (shrinks to fewer, simpler ops and masks)."""
    from hypothesis import strategies as st

    @st.composite
    def cases(draw):
        return draw_case(HypothesisDraw(draw), max_ops, masksets, extra)

    return cases()


# building --------------------------------------------------------------------------------------
class ChannelsLast(nn.Module):
    """Apply ``inner`` (a Linear or LayerNorm over channels) to an NCHW map via NHWC permutes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelsLastMLP(nn.Module):
    """ConvNeXt's block body: NCHW -> NHWC, (LayerNorm), Linear, act, Linear -> NCHW; the
    hidden channels live on the last dimension."""

    def __init__(self, c: int, hidden: int, out: int, act: str, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.fc1, self.fc2, self.act = nn.Linear(c, hidden), nn.Linear(hidden, out), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(_act(self.act, self.fc1(self.norm(x.permute(0, 2, 3, 1)))))
        return y.permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, mid: int, gate: str) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)
        self.gate = torch.sigmoid if gate == "sigmoid" else F.hardsigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class Scale(nn.Module):
    """ConvNeXt-style layer scale: a bare per-channel parameter broadcast over the map."""

    def __init__(self, c: int, kind: str) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gamma[:, None, None] if self.kind == MAP else self.gamma)


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle, written out (view-transpose-reshape) or as the module."""

    def __init__(self, groups: int, how: str) -> None:
        super().__init__()
        self.groups, self.how = groups, how
        self.module = nn.ChannelShuffle(groups) if how == "module" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.module is not None:
            return self.module(x)
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _act(fn: str, x: torch.Tensor) -> torch.Tensor:
    if fn == "leaky_relu":
        return F.leaky_relu(x, 0.1)
    return getattr(F, fn)(x) if fn != "tanh" else torch.tanh(x)


class FuzzNet(nn.Module):
    """The network a :class:`NetSpec` describes; layer ``i`` is ``self.layers['l{i}']``."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        shapes: list[tuple[str, int, int]] = [(MAP, spec.in_ch, spec.size)]
        self.layers = nn.ModuleDict()
        for i, op in enumerate(spec.ops):
            m = _module(op, shapes[op.src[0]])
            if m is not None:
                self.layers[f"l{i}"] = m
            shapes.extend(out_shapes(op, shapes))

    def forward(self, x: torch.Tensor) -> Any:
        vals = [x]
        for i, op in enumerate(self.spec.ops):
            xs = [vals[s] for s in op.src]
            m = self.layers[f"l{i}"] if f"l{i}" in self.layers.keys() else None  # noqa: SIM118
            vals.extend(_apply(op, xs, m))
        outs = tuple(vals[i] for i in self.spec.outputs)
        return outs[0] if len(outs) == 1 else outs


def _module(op: Op, shape: tuple[str, int, int]) -> nn.Module | None:
    kind, c, _ = shape
    k = op.kind
    if k == "conv":
        pad = op.get("dil") * (op.get("k") // 2)
        return nn.Conv2d(
            c, op.get("out"), op.get("k"), op.get("stride"), pad, op.get("dil"),
            groups=op.get("groups"), bias=op.get("bias"),
        )  # fmt: skip
    if k == "linear":
        return nn.Linear(c, op.get("out"), bias=op.get("bias"))
    if k == "bn":
        return nn.BatchNorm2d(c) if kind == MAP else nn.BatchNorm1d(c)
    if k == "gn":
        return nn.GroupNorm(op.get("groups"), c)
    if k == "ln":
        return ChannelsLast(nn.LayerNorm(c)) if kind == MAP else nn.LayerNorm(c)
    if k == "plin":
        return ChannelsLast(nn.Linear(c, op.get("out")))
    if k == "se":
        return SqueezeExcite(c, op.get("mid"), op.get("gate"))
    if k == "mlp":
        return ChannelsLastMLP(c, op.get("hidden"), op.get("out"), op.get("act"), op.get("norm"))
    if k == "shuffle":
        return Shuffle(op.get("groups"), op.get("how"))
    if k == "scale":
        return Scale(c, kind)
    return None


def _apply(op: Op, xs: list[torch.Tensor], m: nn.Module | None) -> list[torch.Tensor]:
    k, x = op.kind, xs[0]
    if m is not None:
        return [m(x)]
    if k == "act":
        return [_act(op.get("fn"), x)]
    if k == "add":
        return [x + xs[1] if op.get("fn") == "add" else x - xs[1]]
    if k == "cat":
        return [torch.cat(xs, 1)]
    if k == "split":
        if op.get("chunks"):
            return list(torch.chunk(x, op.get("chunks"), 1))
        return list(torch.split(x, list(op.get("sizes")), 1))
    if k == "pool":
        how = op.get("how")
        if how == "max2":
            return [F.max_pool2d(x, 2)]
        if how == "avg3":
            return [F.avg_pool2d(x, 3, 1, 1)]
        return [F.max_pool2d(x, 3, 2, 1)]
    if k == "gap":
        if op.get("how") == "mean":
            return [x.mean((2, 3))]
        return [F.adaptive_avg_pool2d(x, 1).flatten(1)]
    if k == "flatten":
        return [x.flatten(1)]
    if k == "slice":
        return [x[:, op.get("start") : op.get("stop")]]
    if k == "gate":
        return [x * torch.sigmoid(xs[1])]
    raise ValueError(f"unknown op {op!r}")


def build(case: Case) -> tuple[FuzzNet, torch.Tensor]:
    """The model (random init from ``case.seed``, non-trivial norm statistics) and an input."""
    gen = torch.Generator().manual_seed(case.seed)
    with torch.random.fork_rng():
        torch.manual_seed(case.seed)
        model = FuzzNet(case.net).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.5, 2, generator=gen)
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
    n = case.net
    x = torch.randn(case.batch, n.in_ch, n.size, n.size, generator=gen)
    return model, x


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
    from chanprune.analysis import analyze
    from chanprune.capture import capture
    from chanprune.masking import _units

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
    from chanprune.verify import compare

    c = compare(a, b)
    return c.ok, c.max_abs_diff


def run_case(case: Case, methods: Sequence[str] = METHODS) -> list[Outcome]:
    """Per mask set: build, mask, export with each method; compare on the example input and on
    a batch of another size (the export's dynamic batch)."""
    model, x = build(case)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(case.seed + 1)
    x2 = torch.randn((5, *x.shape[1:]), generator=gen)
    outcomes = []
    for ms_set in case.masksets:
        model.load_state_dict(initial)
        outcomes.append(_run_maskset(model, x, x2, ms_set, methods))
    return outcomes


def _run_maskset(model, x, x2, ms_set: MaskSet, methods: Sequence[str]) -> Outcome:
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
    return out


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
        if op.kind in ("act", "pool", "gap", "shuffle", "se"):
            f.add(f"{op.kind}:{op.get('fn') or op.get('how') or op.get('gate')}")
        if op.kind == "split":
            f.add("split:chunk" if op.get("chunks") else "split:sizes")
    if len(case.net.outputs) > 1:
        f.add("two outputs")
    if ms_set.auto is not None:
        a = ms_set.auto
        f.add(f"mask:auto {a.side}{' constrained' if a.constrained else ''}")
    for m in ms_set.masks:
        f.add(f"mask:{m.side} {m.kind}{'' if m.api else ' raw'}")
    return f
