"""MACs per channel: what each conv/linear row and input channel costs in multiply-adds, from the
captured graph's shapes (the one MAC count that mixed masks and the latency model share)."""

from __future__ import annotations

import numpy as np
from torch import fx

from ..analysis.rules.base import op_name
from ..analysis.rules.linear import conv_groups
from ..analysis.types import Axis, ChannelAnalysis, node_shape
from .costs import ChannelCosts

DENSE_OPS = ("conv1d", "conv2d", "conv3d", "linear", "addmm")
TRANSPOSED_OPS = ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def mac_costs(an: ChannelAnalysis) -> ChannelCosts:
    """Exact MACs per output row and per input channel of every conv/linear node, per sample, from
    the captured graph's shapes (groups respected; a layer called several times counts each
    call). Depthwise convolutions sit between producers and consumers, so their MACs per channel
    are the ``stream`` cost of that channel's root (no other op counts MACs). ``total``: the MACs
    of every conv/linear node, barriers included."""
    graph = an.capture.graph
    batch = traced_batch(an)
    macs = {n.name: node_macs(n) / batch for n in graph.nodes if is_layer(n)}
    row = {}
    for i, p in enumerate(an.producers):
        calls = {p.node} | {n for n, w in an.tie_of.items() if w == p.weight}
        row[i] = sum(macs.get(c, 0.0) for c in calls) / max(p.channels, 1)
    col = {
        j: macs.get(c.node, 0.0) / max(len(np.unique(c.ids)), 1) for j, c in enumerate(an.consumers)
    }
    stream: dict[int, float] = {}
    for node, ids in depthwise_nodes(an):
        for r in an.root[ids]:
            stream[int(r)] = stream.get(int(r), 0.0) + macs[node.name] / len(ids)
    return ChannelCosts("MACs", row, col, stream, float(sum(macs.values())))


def is_layer(node: fx.Node) -> bool:
    return node.op == "call_function" and op_name(node).split(".")[0] in (
        *DENSE_OPS,
        *TRANSPOSED_OPS,
    )


def node_macs(node: fx.Node) -> float:
    """MACs of one conv/linear call at the traced batch: weight elements per output channel
    times output elements (a transposed conv: per input channel times input elements)."""
    addmm = op_name(node).startswith("addmm")
    x, w = (node.args[1], node.args[2]) if addmm else (node.args[0], node.args[1])
    ws = node_shape(w)
    if ws is None:
        return 0.0
    numel = float(np.prod(ws))
    if op_name(node).split(".")[0] in TRANSPOSED_OPS:
        xs = node_shape(x)
        return numel / ws[0] * float(np.prod(xs)) if xs else 0.0
    out = node_shape(node)
    n_out = ws[1] if addmm else ws[0]
    return numel / n_out * float(np.prod(out)) if out else 0.0


def traced_batch(an: ChannelAnalysis) -> int:
    """The batch the graph was traced at (the marker batch, else the first input's first
    dimension), so costs are per sample."""
    cap = an.capture
    if cap.marker:
        return int(cap.marker)
    nodes = {n.name: n for n in cap.graph.nodes}
    for name in cap.user_inputs:
        shape = node_shape(nodes.get(name))
        if shape and shape[0] > 0:
            return shape[0]
    return 1


def depthwise_nodes(an: ChannelAnalysis) -> list[tuple[fx.Node, np.ndarray]]:
    """Depthwise convolutions (channelwise convs with groups) and the channel ids they carry."""
    out = []
    for node in an.capture.graph.nodes:
        ax = an.axes.get(node.name)
        channelwise = an.kinds.get(node.name) == "channelwise" and isinstance(ax, Axis)
        if channelwise and is_layer(node) and conv_groups(node) > 1 and len(ax):
            out.append((node, ax.ids))
    return out
