"""Stage 3, liveness: :class:`ChannelAnalysis` + weight values -> :class:`Liveness`, per tensor the
channels that are provably zero and the channels some output needs; a channel is kept where it
is both non-zero and needed. ``rounding`` keeps a few extra channels where a width runs faster
rounded up; ``dense`` keeps every channel of a segment in all its tensors (no run-time copies).
"""

from ..analysis.types import ChannelAnalysis
from .dense import AUTO_GROWTH, densify
from .flow import Liveness, liveness
from .rounding import round_depthwise, round_widths


def export_liveness(
    an: ChannelAnalysis, method: str, group_quantum: int, width_quantum: int
) -> Liveness:
    """The channels an export with ``method`` keeps: liveness, dense segments for
    ``method="dense"`` (all) or ``"auto"`` (the cheap ones), then width rounding (export, plan
    and specs share this)."""
    live = liveness(an)
    if method == "dense":
        densify(live)
    elif method == "auto":
        densify(live, AUTO_GROWTH)
    round_depthwise(live, group_quantum)
    round_widths(live, width_quantum)
    return live


__all__ = ["Liveness", "export_liveness", "liveness", "round_depthwise"]
