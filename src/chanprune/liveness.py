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

from .analysis import ABSORBED, Axis, ChannelAnalysis


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
        pinned = self.analysis.pinned[self.analysis.root[self.analysis.axes[node.name].ids]]
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
    from .rules import rule_for

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
    return lv


def round_depthwise(lv: Liveness, quantum: int) -> None:
    """Keep extra channels so that every depthwise conv's channel count is a multiple of
    ``quantum`` (never above its original count).

    Why: ONNX Runtime runs a convolution in its fast blocked (NCHWc) kernels only when the
    channel counts are multiples of its block size (8 on this machine); in ORT's profile a
    pruned depthwise conv of 886 channels took 0.9 ms, the unpruned model's 960 channels 0.05
    and the rounded 896 0.08 (ad hoc profile; whole models:
    ``benchmarks/results/depthwise_quantum.md``). The extra
    channels are original channels that are zero or read by nobody in the masked model, so
    keeping them is exact. They are kept in every tensor of their segment, producers included,
    so no op between needs a pad or a gather; a consumer reads them (with its zero weights)
    when it reads every other channel its input keeps (``rules.linear.input_reads``).
    """
    if quantum <= 1:
        return
    from .rules.linear import _groups

    an = lv.analysis
    depthwise = [
        n
        for n in an.capture.graph.nodes
        if an.kinds.get(n.name) == "channelwise"
        and _groups(n) > 1
        and isinstance(an.axes.get(n.name), Axis)
        and isinstance(lv.demand.get(n.name), np.ndarray)
    ]
    for node in depthwise:
        ax = an.axes[node.name]
        # the conv runs on every channel its input holds (a channelwise op takes its input's
        # layout when that covers what it keeps: rewrite.cover), so round that union
        x = node.args[0]
        held = np.zeros(len(ax), dtype=bool)
        held[lv.kept(x)] = True
        kept = np.union1d(lv.kept(node), np.flatnonzero(held))
        need = -len(kept) % quantum
        if not len(kept) or not need or len(kept) + need > len(ax):
            continue
        # prefer channels the input already holds, then non-zero ones: the fewest new rows
        zx = lv.zero_of(x)
        nonzero = ~zx if zx is not None else np.zeros(len(ax), dtype=bool)
        spare = np.setdiff1d(np.arange(len(ax)), kept)
        spare = spare[np.lexsort((spare, ~nonzero[spare], ~held[spare]))]
        fillers = an.root[ax.ids[spare[:need]]]
        for name, other in an.axes.items():  # every tensor of the segment carries them
            demand = lv.demand.get(name)
            if not isinstance(other, Axis) or not isinstance(demand, np.ndarray):
                continue
            pos = np.isin(an.root[other.ids], fillers)
            if pos.any():
                for table in (lv.padding, lv.revive):
                    table[name] = table.get(name, np.zeros(len(demand), dtype=bool)) | pos
                demand |= pos
