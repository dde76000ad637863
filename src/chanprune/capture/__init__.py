"""Stage 1, capture: a model and example inputs -> :class:`Capture`, a functional ATen graph whose
placeholders name the model's parameters and buffers.

``trace`` runs ``torch.export`` and gets the functional form (``functional``); ``batch``
generalises a trace at a marker batch to any batch; ``checks`` refuses values no later stage
can reason about (NaN, meta tensors).
"""

from .trace import (
    Capture,
    as_input_tuple,
    capture,
    eval_mode,
    gc_paused,
    record,
    run_graph,
    run_model,
)

__all__ = [
    "Capture",
    "as_input_tuple",
    "capture",
    "eval_mode",
    "gc_paused",
    "record",
    "run_graph",
    "run_model",
]
