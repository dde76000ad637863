"""Drawing random cases through a tiny interface backed by hypothesis or random.Random."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from .spec import (
    ACTS,
    ATTENTION_KINDS,
    EXTRA_MAP_OPS,
    MAP,
    MAP_OPS,
    MASK_KINDS,
    VEC_OPS,
    AutoMask,
    Case,
    MaskSet,
    MaskSpec,
    NetSpec,
    Op,
    out_shapes,
)


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
    if op == "frozen":  # FrozenBatchNorm2d-style: scale and shift computed in forward
        return Op("frozen", (src,), (("how", d.choice(("frozen", "div"))),))
    if op == "views":  # two views split off the batch, each through its own conv, cat back
        body = d.choice(("conv", "none"))
        out = (c if d.boolean() else d.integer(1, 8)) if body == "conv" else c
        how = d.choice(("split", "slice"))
        p = (("body", body), ("how", how), ("out", out), ("swap", d.boolean()))
        return Op("views", (src,), p)
    if op == "convt":  # a transposed conv at the same size: dense, or depthwise
        depthwise = d.boolean()
        out = c if depthwise or d.boolean() else d.integer(1, 10)
        p = (("bias", d.boolean()), ("groups", c if depthwise else 1), ("k", d.choice((1, 3))))
        return Op("convt", (src,), (*p, ("out", out)))
    if op == "addmm":  # GPT-2's Conv1D over the channels: addmm with an (in, out) weight
        return Op("addmm", (src,), (("out", c if d.boolean() else d.integer(1, 8)),))
    if op == "rmsnorm":  # Llama's RMSNorm, a LayerNorm or a gate, written out (WrittenNorm)
        how = d.choice(("rms", "rms64", "ln", "lnvar", "stat"))
        return Op("rmsnorm", (src,), (("how", how), ("last", d.boolean())))
    if op == "embed":  # a lookup of ids thresholded from the map, added to it (a stream start)
        return Op("embed", (src,), (("vocab", d.integer(2, 5)),))
    if op == "shift":  # roll over h, w (Swin's shifted windows), + a new_zeros mask, 1 - z
        return Op("shift", (src,), (("by", d.choice((1, -1, 2))), ("gru", d.boolean())))
    if op == "twice":  # one conv (+ BN) module called twice: chained, or on two values
        other = d.choice(same)
        p = (("bn", d.boolean()), ("k", d.choice((1, 3))), ("pair", d.boolean()))
        return Op("twice", (src, other), p)
    if op == "inorm":  # InstanceNorm2d, with an affine and/or running statistics
        return Op("inorm", (src,), (("affine", d.boolean()), ("track", d.boolean())))
    if op == "attention":  # over the h*w positions: q/k/v heads, SDPA or written out
        how = d.choice(ATTENTION_KINDS)
        heads = d.choice((2, 4)) if how.startswith("gqa") else d.choice((1, 2, 3))
        p = (("d", d.choice((2, 4))), ("heads", heads), ("how", how))
        return Op("attention", (src,), (*p, ("out", c if d.boolean() else d.integer(1, 8))))
    return Op("act", (src,), (("fn", "relu"),))  # the op did not fit: a harmless fallback


def draw_maskset(d: Draw, max_masks: int = 4) -> MaskSet:
    auto = None
    if d.integer(0, 2) == 0:
        auto = AutoMask(
            amount=d.choice((0.0, 0.25, 0.5, 0.75)),
            heuristic=d.choice(("l1", "l2", "fpgm", "lamp")),
            scope=d.choice(("local", "global")),
            side=d.choice(("output", "input")),
            constrained=d.choice((False, True, "mixed")),
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
