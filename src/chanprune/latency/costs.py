"""What removing one channel saves: the plain data a cost model hands to latency-aware masking."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChannelCosts:
    """Savings per channel removed, in one ``unit`` (``"s"``: seconds on a backend, or
    ``"MACs"``), for the layers of one :class:`~chanprune.analysis.types.ChannelAnalysis`.

    ``row[i]``: what producer ``an.producers[i]`` saves per output row it no longer computes (its
    own work only). ``col[j]``: what consumer ``an.consumers[j]`` saves per input channel it no
    longer reads (its own work only). ``stream[r]``: what the ops between producers and consumers
    (norms, activations, adds, pools, copies) save when segment channel ``r`` (a root id) leaves
    every tensor of its segment. ``total``: the unpruned model's whole cost in the same unit.
    Missing keys save nothing.
    """

    unit: str
    row: dict[int, float] = field(default_factory=dict)
    col: dict[int, float] = field(default_factory=dict)
    stream: dict[int, float] = field(default_factory=dict)
    total: float = 0.0
