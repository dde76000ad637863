"""The op-rule protocol and the barrier rule every unknown op falls back to.

A rule answers four questions about one op, one per pipeline stage:
``flow`` (analysis: which channel ids leave the op), ``zeros`` (liveness: which output channels
are provably zero given the weights), ``demand`` (liveness: which input channels are needed for
the demanded output channels) and ``emit`` (rewriting: the op on physically pruned tensors).
"""

from __future__ import annotations

import numpy as np
from torch import fx

from ..types import Axis, FlowState


def op_name(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def tensor_args(node: fx.Node) -> list[fx.Node]:
    return list(node.all_input_nodes)


class Rule:
    """Default behaviour: a barrier. Channels reaching the op are pinned and shown to it in full."""

    def flow(self, node: fx.Node, st: FlowState) -> None:
        if any(_tracked(st, a) for a in node.all_input_nodes):
            st.barrier(node, f"no channel rule for {op_name(node)}")
        else:
            st.axes[node.name] = None

    def zeros(self, node: fx.Node, lv) -> None:
        lv.zero[node.name] = None

    def demand(self, node: fx.Node, lv) -> None:
        for a in node.all_input_nodes:
            lv.require_all(a)

    def emit(self, node: fx.Node, rw) -> None:
        rw.verbatim(node)


def _tracked(st: FlowState, a: fx.Node) -> bool:
    v = st.axes.get(a.name)
    if isinstance(v, list):
        return any(isinstance(x, Axis) for x in v)
    return isinstance(v, Axis)


def positions(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)
