"""Channel analysis: which channels of which tensors are the same channel, and who makes/reads them.

Every tensor value with a *channel axis* gets an :class:`Axis`: the dimension, and per position a
channel id. Producers (conv, linear) create fresh ids; channel-preserving ops pass them on;
residual adds, multiplicative gates and the like *unify* the ids of their operands (union-find),
so a *segment* is a connected set of ids. Ops without a rule are *barriers*: their channels are
*pinned* (never masked) and they see their input at full width, so the result is still exact.

This stage looks at structure only (no weight values); the liveness stage adds the values.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..capture.trace import Capture
from .rules import rule_for
from .share import group_barriers
from .types import ABSORBED, ChannelAnalysis, FlowState


def analyze(capture: Capture, warn: bool = True) -> ChannelAnalysis:
    """Run every op's flow rule over the graph (topological order) and resolve segments."""
    st = FlowState(capture)
    for node in capture.graph.nodes:
        if node.op == "placeholder":
            st.axes[node.name] = None
        elif node.op == "output":
            for a in node.all_input_nodes:
                st.untracked(st.axis(a), "reaches a model output")
                v = st.axes.get(a.name)
                if isinstance(v, list):
                    for ax in v:
                        st.untracked(ax, "reaches a model output")
        elif st.kinds.get(node.name) == ABSORBED:
            st.axes[node.name] = None
        elif node.op == "call_function":
            rule_for(node).flow(node, st)
        else:
            st.barrier(node, f"unsupported node kind {node.op}")
    root = st.find(np.arange(len(st.parent), dtype=np.int64))
    pinned = np.zeros(len(root), dtype=bool)
    notes: dict[int, str] = {}
    for ids, reason in st.pinned_raw:
        for r in np.unique(root[ids]).tolist():
            if not pinned[r]:
                notes[r] = reason
            pinned[r] = True
    dependent = np.zeros(st.n_producer_channels, dtype=bool)
    for g in st.dependent_raw:
        dependent[g[g >= 0]] = True
    result = ChannelAnalysis(
        capture=capture,
        axes=st.axes,
        producers=st.producers,
        consumers=st.consumers,
        companions=st.companions,
        barriers=st.barriers,
        root=root,
        pinned=pinned,
        dependent=dependent,
        notes=notes,
        kinds=st.kinds,
        shuffles=st.shuffles,
        tie_of=st.tie_of,
    )
    if warn and st.barriers:
        lines = "\n".join(f"- {g}" for g in group_barriers(result, st.barriers))
        warnings.warn(
            f"chanprune: {len(st.barriers)} op(s) without a channel rule are barriers; the "
            f"channels reaching them are not pruned:\n{lines}",
            stacklevel=3,
        )
    return result
