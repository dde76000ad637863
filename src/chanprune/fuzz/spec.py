"""The plain-data description of a fuzz case: ops, networks, masks (printable, comparable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAP, VEC = "map", "vec"  # (N, C, H, W) feature maps and (N, C) vectors
ACTS = ("relu", "gelu", "sigmoid", "hardswish", "silu", "tanh", "relu6", "leaky_relu")
MAP_OPS = (
    "conv", "act", "conv", "bn", "add", "cat", "split", "pool", "se", "gn", "ln", "shuffle", "plin",
    "gap", "flatten", "slice", "gate", "scale",
)  # fmt: skip
# added after the committed soak run; opt-in keeps its seeds valid. "views": two views split
# off the batch and concatenated back (a two-view encoder); "convt": a transposed conv (dense
# or depthwise); "addmm": a channels-last linear written as addmm (GPT-2's Conv1D);
# "rmsnorm": a norm over the channels written out as element-wise ops (Llama's RMSNorm, a
# LayerNorm), channels first or last; "attention": multi-head attention over the positions
# (separate or fused q/k/v, rotary, grouped-query, written out); "inorm": InstanceNorm2d;
# "twice": one conv (+ BN) module called twice, in a chain or on two values (siamese);
# "shift": roll over the spatial dims (Swin), a new_zeros mask, optionally a GRU's 1 - z;
# "embed": an embedding lookup of ids computed from the map, added to it
EXTRA_MAP_OPS = (
    "mlp", "frozen", "views", "convt", "addmm", "rmsnorm", "attention", "inorm", "twice",
    "shift", "embed",
)  # fmt: skip
ATTENTION_KINDS = ("sdpa", "fused", "rotary", "gqa", "gqa-sdpa", "written")
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
    constrained: bool | str  # True, False or "mixed" (masks.mixed, with MAC costs)


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
    if k in ("plin", "mlp", "views", "convt", "addmm", "attention"):
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
