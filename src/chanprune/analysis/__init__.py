"""Stage 2, channel analysis: :class:`Capture` -> :class:`ChannelAnalysis`.

Per tensor, which channels are the same channel (segments), who produces and who consumes them,
and which ops are barriers. ``types`` holds the data the stage and its op rules (``rules``)
share; ``propagate`` runs the rules over the graph. It reads structure only; liveness adds the
weight values.
"""

from .propagate import analyze
from .types import Axis, Barrier, ChannelAnalysis, Companion, Consumer, FlowState, Producer

__all__ = [
    "Axis",
    "Barrier",
    "ChannelAnalysis",
    "Companion",
    "Consumer",
    "FlowState",
    "Producer",
    "analyze",
]
