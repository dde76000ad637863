"""Op rules: per ATen op, how channels flow through it (analysis), which are zero or needed
(liveness) and how to rewrite it at a smaller width (rewrite).

Register a rule with :func:`register`; anything unregistered is a barrier (``base.Rule``).
"""

from . import channelwise, concat, elementwise, linear, norm, shape  # noqa: F401  (registration)
from .registry import known_ops, register, rule_for

__all__ = ["known_ops", "register", "rule_for"]
