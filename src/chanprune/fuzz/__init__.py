"""Differential fuzzing of the exporter: random networks, random masks, exported == masked.

A *case* is plain data (:class:`Case`: a network spec, mask specs, a seed), so a failing case
prints readably and rebuilds exactly. Cases are drawn through a tiny :class:`Draw` interface:
``hypothesis`` drives it in the tests (so failures shrink to a minimal network), and
``random.Random`` drives it in ``benchmarks/soak.py`` (so thousands of cases are cheap and each
is reproducible from its seed). :func:`run_case` is the property: for both export methods,
export succeeds or raises a documented :class:`~chanprune.ChanpruneError`, and the exported
module reproduces the masked model on the example input and on a batch of another size.
"""

from .build import FuzzNet, build
from .draw import Draw, HypothesisDraw, RandomDraw, case_strategy, draw_case, draw_maskset, draw_net
from .run import METHODS, Outcome, apply_maskset, features, run_case
from .spec import (
    EXTRA_MAP_OPS,
    MAP_OPS,
    MASK_KINDS,
    VEC_OPS,
    AutoMask,
    Case,
    MaskSet,
    MaskSpec,
    NetSpec,
    Op,
)

__all__ = [
    "EXTRA_MAP_OPS",
    "MAP_OPS",
    "MASK_KINDS",
    "METHODS",
    "VEC_OPS",
    "AutoMask",
    "Case",
    "Draw",
    "FuzzNet",
    "HypothesisDraw",
    "MaskSet",
    "MaskSpec",
    "NetSpec",
    "Op",
    "Outcome",
    "RandomDraw",
    "apply_maskset",
    "build",
    "case_strategy",
    "draw_case",
    "draw_maskset",
    "draw_net",
    "features",
    "run_case",
]
