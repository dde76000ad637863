"""Masking, beside the pipeline: choose channels with a heuristic and zero them in place; the masked
model is the reference the export must reproduce.
"""

from .heuristics import HEURISTICS
from .masks import apply_masks, mask

__all__ = ["HEURISTICS", "apply_masks", "mask"]
