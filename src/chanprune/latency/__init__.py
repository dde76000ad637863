"""Latency: what a backend takes to run a model, measured and predicted, so that masks can be
asked for a speed (``mask(target_latency=...)``) and can rank channels by the time they save."""

from .costs import ChannelCosts

__all__ = ["ChannelCosts"]
