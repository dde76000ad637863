"""Liveness: which channels are provably zero, and which are needed, given the weight values.

Forward, every op rule computes the *zero* mask of its output channels (a pruned filter, a BN
whose scale and shift are zero, a product with a zero gate ...). Backward, every rule turns the
*demand* on its output into demand on its inputs (a consumer needs only the columns it has
weights for). A channel is *kept* where it is non-zero and demanded; everything else can be
removed without changing any output. Pure over the analysis and a name -> tensor mapping.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..analysis.rules import rule_for
from ..analysis.types import ABSORBED, Axis, ChannelAnalysis


class Liveness:
    def __init__(self, analysis: ChannelAnalysis, tensors: dict[str, torch.Tensor] | None = None):
        self.analysis = analysis
        self.capture = analysis.capture
        self.tensors = tensors if tensors is not None else analysis.capture.tensors
        self.zero: dict[str, object] = {}
        self.demand: dict[str, object] = {}
        self.cache: dict[object, object] = {}
        self.revive: dict[str, np.ndarray] = {}  # zero channels kept so an op after needs no pad
        self.padding: dict[str, np.ndarray] = {}  # channels kept only to round a width (below)
        # per root: its segment is dense, consumers read all of it (liveness.dense); None: none
        self.dense_roots: np.ndarray | None = None
        for name, v in analysis.axes.items():
            if isinstance(v, Axis):
                self.demand[name] = np.zeros(len(v), dtype=bool)
            elif isinstance(v, list):
                self.demand[name] = [
                    np.zeros(len(a), dtype=bool) if isinstance(a, Axis) else None for a in v
                ]

    # accessors used by rules -----------------------------------------------------------
    def axis(self, arg: object) -> Axis | None:
        if isinstance(arg, fx.Node):
            v = self.analysis.axes.get(arg.name)
            return v if isinstance(v, Axis) else None
        return None

    def t(self, arg: object) -> torch.Tensor | None:
        """The tensor behind a parameter/buffer/constant placeholder, else None."""
        if isinstance(arg, fx.Node) and arg.name in self.capture.state_names:
            return self.tensors[self.capture.state_names[arg.name]].detach()
        return None

    def zero_of(self, arg: object) -> np.ndarray | None:
        if isinstance(arg, fx.Node):
            z = self.zero.get(arg.name)
            return z if isinstance(z, np.ndarray) else None
        return None

    def out_demand(self, node: fx.Node) -> np.ndarray | None:
        d = self.demand.get(node.name)
        return d if isinstance(d, np.ndarray) else None

    def want(self, arg: object, mask: np.ndarray) -> None:
        if isinstance(arg, fx.Node):
            d = self.demand.get(arg.name)
            if isinstance(d, np.ndarray):
                d |= mask

    def require_all(self, arg: object) -> None:
        if isinstance(arg, fx.Node):
            d = self.demand.get(arg.name)
            for x in d if isinstance(d, list) else [d]:
                if isinstance(x, np.ndarray):
                    x[:] = True

    def kept(self, node: fx.Node) -> np.ndarray:
        """Positions of ``node``'s channel axis that are demanded and non-zero or pinned.

        Pinned channels (they reach a barrier or an output) stay even when zero: the op after
        needs them at full width anyway, and a zero row is cheaper than padding it back.
        """
        z, d = self._zd(node)
        ax = self.analysis.axes[node.name]
        ax = ax[0] if isinstance(ax, list) else ax  # ops returning several: the first output
        pinned = self.analysis.pinned[self.analysis.root[ax.ids]]
        live = ~z | pinned
        if node.name in self.revive:
            live |= self.revive[node.name]
        return np.flatnonzero(live & d).astype(np.int64)

    def _zd(self, node: fx.Node) -> tuple[np.ndarray, np.ndarray]:
        z, d = self.zero.get(node.name), self.demand.get(node.name)
        return (z[0], d[0]) if isinstance(z, list) else (z, d)

    def revive_input(self, node: fx.Node, x: fx.Node) -> None:
        """A channel-preserving op turns some zero input channels into live ones (a BN shift):
        keep those zero channels in the input rather than pad them back in later."""
        z_in = self.zero_of(x)
        if z_in is None or self.axis(x) is None:
            return
        z, d = self._zd(node)
        live_out = (~z | self.revive.get(node.name, False)) & d
        want = live_out & z_in
        if want.any():
            self.revive[x.name] = self.revive.get(x.name, np.zeros_like(want)) | want


def liveness(analysis: ChannelAnalysis, tensors: dict[str, torch.Tensor] | None = None) -> Liveness:
    """Zero masks forward, demand backward, over the whole graph."""

    lv = Liveness(analysis, tensors)
    nodes = list(analysis.capture.graph.nodes)
    with torch.no_grad():
        absorbed = {n for n, k in analysis.kinds.items() if k == ABSORBED}
        for node in nodes:
            if node.op == "call_function" and node.name not in absorbed:
                rule_for(node).zeros(node, lv)
            else:
                lv.zero[node.name] = None
        for node in reversed(nodes):
            if node.op == "output":
                for a in node.all_input_nodes:
                    lv.require_all(a)
            elif node.op == "call_function" and node.name not in absorbed:
                rule_for(node).demand(node, lv)
    _tie(lv)
    return lv


def _tie(lv: Liveness) -> None:
    """Every call of a layer called several times keeps the same rows (it has one weight): the
    union of what each call keeps. A call's extra rows are read by nobody after it."""
    calls: dict[str, list[fx.Node]] = {}
    for node in lv.analysis.capture.graph.nodes:
        if node.name in lv.analysis.tie_of and _first(lv.demand.get(node.name)) is not None:
            calls.setdefault(lv.analysis.tie_of[node.name], []).append(node)
    for nodes in calls.values():
        union = np.zeros(len(_first(lv.demand[nodes[0].name])), dtype=bool)
        for n in nodes:
            union[lv.kept(n)] = True
        for n in nodes:
            lv.revive[n.name] = lv.revive.get(n.name, np.zeros_like(union)) | union
            _first(lv.demand[n.name])[:] |= union


def _first(d: object) -> np.ndarray | None:
    """The channel demand of a node (of its first output, for ops returning several)."""
    d = d[0] if isinstance(d, list) and d else d
    return d if isinstance(d, np.ndarray) else None
