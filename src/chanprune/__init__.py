"""chanprune: unconstrained channel pruning that exports smaller models which are really faster."""

from .api import export
from .deploy.onnx import to_onnx
from .deploy.saving import load_program, load_pruned, save_program, save_pruned
from .errors import CaptureError, ChanpruneError, ExportError, InputError, MaskError
from .evaluation.recovery import recalibrate
from .evaluation.stats import count_macs, count_params
from .masking.heuristics import HEURISTICS
from .masking.masks import apply_masks, mask
from .plan import Plan, plan
from .rewrite.ideal import ideal

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
    "load_program",
    "load_pruned",
    "mask",
    "plan",
    "recalibrate",
    "save_program",
    "save_pruned",
    "to_onnx",
]
__version__ = "0.1.0"
