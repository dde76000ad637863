"""Stage 3, liveness: :class:`ChannelAnalysis` + weight values -> :class:`Liveness`, per tensor the
channels that are provably zero and the channels some output needs; a channel is kept where it
is both non-zero and needed. ``rounding`` keeps a few extra channels where a width runs faster
rounded up.
"""

from .flow import Liveness, liveness
from .rounding import round_depthwise

__all__ = ["Liveness", "liveness", "round_depthwise"]
