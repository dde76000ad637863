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


def same_calls(node: fx.Node, params: list[object]) -> bool:
    """Whether every op reading any of ``params`` (parameter nodes of ``node``) is a call of
    the same op with the same parameters at the same places: one layer applied several times
    (RAFT's update block, a siamese encoder). Then the calls are tied (liveness/flow.py)."""
    places = [i for i, a in enumerate(node.args) if any(a is p for p in params if p is not None)]
    users = {u for p in params if isinstance(p, fx.Node) for u in p.users}
    users = {u for u in users if not str(u.target).startswith("aten._assert")}
    return all(
        u.op == "call_function"
        and u.target == node.target
        and all(i < len(u.args) and u.args[i] is node.args[i] for i in places)
        and not any(a is p for p in params if p is not None for a in u.kwargs.values())
        for u in users
    )
