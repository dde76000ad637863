"""Stage 4, layout: in which physical order each tensor holds its kept channels.

``policy`` gives the rewriter an order per segment: the original one (the baseline export) or
the solver's (the reorder export). ``solver`` is the exact layout solver in pure Python: an order
of a segment's channels in which consumers' read sets are contiguous, copying the fewest bytes.
"""

from .policy import NaturalOrder, SegmentLayout, SolvedOrder

__all__ = ["NaturalOrder", "SegmentLayout", "SolvedOrder"]
