"""Op rules: per ATen op, how channels flow through it (analysis), which are zero or needed
(liveness) and how to rewrite it at a smaller width (rewrite).

Register a rule with :func:`register`; anything unregistered is a barrier (``base.Rule``).
"""

from . import (  # noqa: F401  (registration)
    channelwise,
    concat,
    elementwise,
    linear,
    norm,
    reduce,
    shape,
)
from .registry import known_ops, register, rule_for

__all__ = ["known_ops", "register", "rule_for"]
