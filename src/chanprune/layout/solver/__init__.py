"""Layout solver: order a tensor's channels so that its consumers read slices, not gathers.

Several consumers (conv/linear layers) read subsets of one tensor's channels. A consumer whose
channels are contiguous in the chosen order reads a free view; any other must gather (copy)
them. :func:`solve_layout` picks the order minimising the copied channels (weighted):

* a PQ-tree (:mod:`.pqtree`, Booth & Lueker) finds a zero-copy order whenever one exists
  (the consecutive-ones property, :func:`has_consecutive_ones`, :func:`consecutive_order`);
* otherwise branch and bound (:mod:`.search`) chooses the cheapest consumers to gather, within
  a work budget and a time limit, falling back to the best solution found (greedy at worst)
  with a lower bound.

Pure Python (standard library only). ``python -m chanprune.layout.solver`` times large instances.
"""

from .c1p import consecutive_order, has_consecutive_ones
from .layout import solve_layout
from .pqtree import PQTree
from .problem import ConsumerRead, LayoutPlan, LayoutProblem

__all__ = [
    "ConsumerRead",
    "LayoutPlan",
    "LayoutProblem",
    "PQTree",
    "consecutive_order",
    "has_consecutive_ones",
    "solve_layout",
]
