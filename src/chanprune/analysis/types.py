"""The data types that channel analysis and its op rules share: axes, producers, consumers,
companions, barriers, the mutable :class:`FlowState` rules write into, and the resulting
:class:`ChannelAnalysis` (plain data for every later stage)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx

from ..capture.trace import Capture

ABSORBED = "absorbed"  # kinds[] mark: a pattern rule (e.g. channel shuffle) folded this node
# into a later one; every stage skips it


@dataclass
class Axis:
    """The channel axis of one tensor: its dimension and, per position, a channel id.

    ``origin`` holds, per position, the global index of the producer channel whose zero would
    make this position zero (through zero-preserving ops only), or -1: output-side masking uses
    it to find the BatchNorms and biases that must be zeroed along with a filter.
    """

    dim: int
    ids: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def moved(self, dim: int) -> Axis:
        return Axis(dim, self.ids, self.origin)


@dataclass
class Producer:
    """A layer that creates channels (a conv or linear's output rows)."""

    node: str
    weight: str
    bias: str | None
    ids: np.ndarray  # channel id of each output row
    first: int  # global index of its first output channel (see Axis.origin)
    where: str
    dim: int = 0  # the weight's output-channel dimension (1 for addmm's (in, out) weight)

    @property
    def channels(self) -> int:
        return len(self.ids)


@dataclass
class Consumer:
    """A layer that reads channels: a conv or linear's input columns."""

    node: str
    weight: str
    ids: np.ndarray  # channel id of each input column (repeats after a flatten)
    where: str
    dim: int = 1  # the weight's input-channel dimension (0 for addmm's (in, out) weight)


@dataclass
class Companion:
    """A per-channel parameter that must be zeroed with a producer channel (BN, bias, depthwise)."""

    param: str
    dim: int
    index: np.ndarray  # positions along ``dim`` of the parameter
    origin: np.ndarray  # producer channel (global index) that each position follows


@dataclass
class Barrier:
    node: str
    where: str
    reason: str


@dataclass
class ChannelAnalysis:
    """The result of channel analysis: plain data for masking, planning and rewriting."""

    capture: Capture
    axes: dict[str, object]  # node name -> Axis | list[Axis | None] | None
    producers: list[Producer]
    consumers: list[Consumer]
    companions: list[Companion]
    barriers: list[Barrier]
    root: np.ndarray  # id -> segment channel (union-find root)
    pinned: np.ndarray  # per root id: never mask (reaches an output, a barrier, ...)
    dependent: np.ndarray  # per global producer channel: zeroing it alone does not zero a channel
    notes: dict[int, str] = field(default_factory=dict)  # root id -> why pinned
    kinds: dict[str, str] = field(default_factory=dict)  # node name -> rule mode (see rules)
    # channel-shuffle end node -> (source node, perm): see analysis.rules.shape.ChannelShuffle
    shuffles: dict[str, tuple] = field(default_factory=dict)
    # node name -> parameter it shares with other calls of the same layer (liveness ties them)
    tie_of: dict[str, str] = field(default_factory=dict)

    def resolve(self, ids: np.ndarray) -> np.ndarray:
        return self.root[ids]

    def producer_of(self, weight: str) -> Producer | None:
        return next((p for p in self.producers if p.weight == weight), None)

    def consumer_of(self, weight: str) -> Consumer | None:
        return next((c for c in self.consumers if c.weight == weight), None)

    def segments(self) -> list[np.ndarray]:
        """Connected groups of segment channels (roots) that appear together in some tensor."""
        parent = np.arange(len(self.root), dtype=np.int64)
        seen = np.zeros(len(self.root), dtype=bool)
        firsts, others = [], []
        for ax in _all_axes(self.axes):
            roots = self.root[ax.ids]
            seen[roots] = True
            firsts.append(np.full(len(roots), roots[0] if len(roots) else 0, dtype=np.int64))
            others.append(roots)
        if others:
            union_pairs(parent, np.concatenate(firsts), np.concatenate(others))
        members = np.flatnonzero(seen)
        group = find_roots(parent, members)
        order = np.lexsort((members, group))  # by group, members ascending inside
        members, group = members[order], group[order]
        cuts = np.flatnonzero(np.diff(group)) + 1
        return [g for g in np.split(members, cuts) if len(g)]


def find_roots(parent: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Union-find roots of ``ids`` (vectorised, with path halving)."""
    while True:
        p = parent[ids]
        if np.array_equal(p, ids):
            return ids
        parent[ids] = parent[p]
        ids = p


def union_pairs(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join a[i] with b[i] for every i, the smaller root becoming the parent (vectorised:
    each round links every distinct larger root once; repeats wait for the next round)."""
    while True:
        ra, rb = find_roots(parent, a), find_roots(parent, b)
        differ = ra != rb
        if not differ.any():
            return
        lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
        parent[hi] = lo
        a, b = lo, hi


def _all_axes(axes: dict[str, object]):
    for v in axes.values():
        if isinstance(v, Axis):
            yield v
        elif isinstance(v, list):
            yield from (a for a in v if isinstance(a, Axis))


class FlowState:
    """Mutable state of the analysis pass; rules call its methods."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.axes: dict[str, object] = {}
        self.parent = np.zeros(0, dtype=np.int64)
        self.pinned_raw: list[tuple[np.ndarray, str]] = []
        self.dependent_raw: list[np.ndarray] = []
        self.producers: list[Producer] = []
        self.consumers: list[Consumer] = []
        self.companions: list[Companion] = []
        self.barriers: list[Barrier] = []
        self.kinds: dict[str, str] = {}  # node name -> how a multi-mode rule treated it
        self.shuffles: dict[str, tuple] = {}  # channel-shuffle end node -> (source node, perm)
        self.tied: dict[str, Axis] = {}  # weight of a dense layer called several times -> axis
        self.tie_of: dict[str, str] = {}  # node name -> parameter shared with other calls
        self.n_producer_channels = 0
        self.param_uses: dict[str, int] = {}
        for node in capture.graph.nodes:
            for a in node.all_input_nodes:
                if a.name in capture.state_names:
                    q = capture.state_names[a.name]
                    self.param_uses[q] = self.param_uses.get(q, 0) + 1

    # ids and union-find -------------------------------------------------------------------
    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent = np.concatenate([self.parent, np.arange(start, start + n, dtype=np.int64)])
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, ids: np.ndarray) -> np.ndarray:
        return find_roots(self.parent, np.asarray(ids, dtype=np.int64))

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Declare position-wise that a[i] and b[i] are the same segment channel."""
        if len(a) != len(b):
            raise ValueError(f"union of {len(a)} and {len(b)} positions")
        union_pairs(self.parent, np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))

    def pin(self, ids: np.ndarray, reason: str) -> None:
        self.pinned_raw.append((np.asarray(ids, dtype=np.int64), reason))

    def untracked(self, ax: Axis | None, reason: str) -> None:
        if ax is not None:
            self.pin(ax.ids, reason)

    # graph helpers --------------------------------------------------------------------------
    def axis(self, arg: object) -> Axis | None:
        if isinstance(arg, fx.Node):
            v = self.axes.get(arg.name)
            return v if isinstance(v, Axis) else None
        return None

    def param(self, arg: object) -> str | None:
        """The qualified name if ``arg`` is a parameter/buffer/constant placeholder."""
        if isinstance(arg, fx.Node):
            return self.capture.state_names.get(arg.name)
        return None

    def shared(self, name: str) -> bool:
        return self.param_uses.get(name, 0) > 1

    def where(self, node: fx.Node) -> str:
        return self.capture.where(node)

    def new_axis(self, dim: int, n: int) -> Axis:
        return Axis(dim, self.fresh(n), np.full(n, -1, dtype=np.int64))

    def barrier(self, node: fx.Node, reason: str) -> None:
        """Treat ``node`` as opaque: pin what reaches it, leave its output untracked."""
        hit = False
        for a in node.all_input_nodes:
            v = self.axes.get(a.name)
            for ax in v if isinstance(v, list) else [v]:
                if isinstance(ax, Axis):
                    self.pin(ax.ids, f"reaches {self.where(node)}: {reason}")
                    hit = True
        if hit:
            self.barriers.append(Barrier(node.name, self.where(node), reason))
        self.axes[node.name] = None


def node_shape(node: object) -> tuple[int, ...] | None:
    """The concrete shape of a node's value (symbolic sizes replaced by their example hints)."""
    if not isinstance(node, fx.Node):
        return None
    return value_shape(node.meta.get("val"))


def value_shape(val: object) -> tuple[int, ...] | None:
    """The concrete shape of a (fake) tensor, symbolic sizes replaced by their example hints."""
    if not isinstance(val, torch.Tensor):
        return None
    return tuple(_hint(s) for s in val.shape)


def _hint(s: object) -> int:
    if isinstance(s, torch.SymInt):
        return int(s.node.hint) if s.node.hint is not None else -1
    return int(s)
