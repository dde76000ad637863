"""Evaluation on top of the pipeline: data sets (``data``), top-1 accuracy (``accuracy``),
training (``training``), BatchNorm recalibration and fine-tuning of masked models
(``recovery``), latency measurement (``timing``) and model statistics (``stats``).
"""

from .stats import count_macs, count_params
from .timing import measure_latency

__all__ = ["count_macs", "count_params", "measure_latency"]
