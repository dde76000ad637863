"""chanprune: unconstrained channel pruning that exports smaller models which are really faster."""

from .api import export
from .errors import CaptureError, ChanpruneError, ExportError, InputError, MaskError
from .heuristics import HEURISTICS
from .ideal import ideal
from .masking import apply_masks, mask
from .plan import Plan, plan
from .stats import count_macs, count_params

__all__ = [
    "HEURISTICS",
    "CaptureError",
    "ChanpruneError",
    "ExportError",
    "InputError",
    "MaskError",
    "Plan",
    "apply_masks",
    "count_macs",
    "count_params",
    "export",
    "ideal",
    "mask",
    "plan",
]
__version__ = "0.1.0"
