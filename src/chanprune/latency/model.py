"""The latency model: a module's time on a backend, predicted as the sum of its op calls' times
measured alone (:mod:`chanprune.latency.table`), and what each channel costs.

Summing calls timed alone ignores what the whole model shares (warm caches, fused kernels in ONNX
Runtime), so its seconds are not the whole model's; its *ratios* of an export to the unpruned
model are what targets use, and their error against measured whole models is published in
``benchmarks/results/latency_model.md``. Backend ``"ort"`` predicts with the CPU table (ONNX
Runtime runs other kernels, so its error is larger there); a target search then corrects by
measuring (:func:`chanprune.masking.targets`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx

from ..analysis.types import Axis, ChannelAnalysis
from ..capture.batch import per_sample
from ..errors import InputError
from .costs import ChannelCosts
from .macs import is_layer, mac_costs, traced_batch
from .table import LatencyTable, default_cache_dir
from .trace import OpCall, op_trace

BACKENDS = {"eager": "cpu", "ort": "cpu", "cuda": "cuda"}


@dataclass(frozen=True)
class Prediction:
    """Predicted seconds of one forward pass, split by kind of op (compute, memory, view)."""

    seconds: float
    by_kind: dict[str, float]
    calls: int


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


class LatencyModel:
    """Predicts a module's latency on ``backend`` from a cached :class:`LatencyTable`.

    ``cache_dir``: where the table lives (default ``~/.cache/chanprune``, or
    ``$CHANPRUNE_CACHE``; None keeps it in memory). ``timer`` replaces the measurement of one op
    call (tests)."""

    def __init__(
        self,
        backend: str = "eager",
        threads: int | None = None,
        cache_dir: Path | str | bool | None = True,
        timer: Callable[[OpCall], float] | None = None,
    ) -> None:
        self.backend = check_backend(backend)
        where = default_cache_dir() if cache_dir is True else cache_dir or None
        self.table = LatencyTable(BACKENDS[backend], threads, where, timer)

    def predict(
        self,
        module: Callable[..., object],
        example_inputs: object,
        example_kwargs: dict | None = None,
    ) -> Prediction:
        """The predicted time of one forward pass of ``module`` on the example inputs."""
        by_kind = {"compute": 0.0, "memory": 0.0, "view": 0.0}
        calls = op_trace(module, example_inputs, example_kwargs)
        for c in calls:
            by_kind[c.kind] += self.table.seconds(c)
        self.table.save()
        return Prediction(sum(by_kind.values()), by_kind, len(calls))

    def channel_costs(self, an: ChannelAnalysis, unpruned: Prediction) -> ChannelCosts:
        """Seconds each channel of ``an``'s model costs: a conv/linear row or column its MACs
        at the seconds per MAC the ``unpruned`` prediction spent in compute ops, the bytes the
        ops between layers move per channel at the seconds per byte it spent in memory ops
        (:func:`graph_costs` with that exchange rate, scaled to the prediction)."""
        macs, moved = graph_totals(an)
        per_mac = unpruned.by_kind["compute"] / max(macs, 1.0)
        per_byte = (unpruned.by_kind["memory"] + unpruned.by_kind["view"]) / max(moved, 1.0)
        units = graph_costs(an, per_mac / per_byte if per_byte > 0 else BYTES_PER_MAC)
        scale = unpruned.seconds / units.total if units.total > 0 else 0.0
        return ChannelCosts(
            "s",
            {k: v * scale for k, v in units.row.items()},
            {k: v * scale for k, v in units.col.items()},
            {k: v * scale for k, v in units.stream.items()},
            unpruned.seconds,
        )


# costs from the captured graph -----------------------------------------------------------------
BYTES_PER_MAC = 0.25  # one MAC costs about what moving this many bytes costs (fp32 CPU kernels)


def graph_costs(an: ChannelAnalysis, bytes_per_mac: float = BYTES_PER_MAC) -> ChannelCosts:
    """Per-sample costs of ``an``'s graph in MAC-equivalents: :func:`~chanprune.latency.macs.
    mac_costs` for the conv/linear rows, columns and depthwise convs, plus, for every other op,
    the bytes it reads and writes times ``1 / bytes_per_mac``, per channel of its output in
    ``stream`` (so a segment channel's stream cost adds up the ops whose output holds it)."""
    macs = mac_costs(an)
    stream = dict(macs.stream)
    moved_total = 0.0
    for node in an.capture.graph.nodes:
        if node.op != "call_function" or is_layer(node):
            continue
        moved = _per_sample_bytes(an, node) / bytes_per_mac
        moved_total += moved
        ax = an.axes.get(node.name)
        if not isinstance(ax, Axis) or not len(ax) or not moved:
            continue
        per = moved / len(ax)
        for r in an.root[ax.ids].tolist():
            stream[r] = stream.get(r, 0.0) + per
    return ChannelCosts("MACs", macs.row, macs.col, stream, macs.total + moved_total)


def graph_totals(an: ChannelAnalysis) -> tuple[float, float]:
    """Per sample, the MACs of ``an``'s conv/linear ops and the bytes its other ops move."""
    moved = sum(
        _per_sample_bytes(an, n)
        for n in an.capture.graph.nodes
        if n.op == "call_function" and not is_layer(n)
    )
    return mac_costs(an).total, moved


def _per_sample_bytes(an: ChannelAnalysis, node: fx.Node) -> float:
    """:func:`node_bytes` per sample, as :func:`~chanprune.latency.macs.mac_costs` counts: a
    marker capture knows its batch dimensions, any other is divided by its traced batch."""
    marker = an.capture.marker
    return node_bytes(node, marker) / (1 if marker else traced_batch(an))


def _numel(val: object, marker: int | None) -> int:
    if not isinstance(val, torch.Tensor):
        return 0
    return math.prod(per_sample(s, marker) for s in val.shape)


def node_bytes(node: fx.Node, marker: int | None) -> float:
    """Bytes per sample a node reads (its tensor inputs) and writes (its output)."""
    vals = [a.meta.get("val") for a in node.all_input_nodes] + [node.meta.get("val")]
    total = 0
    for v in vals:
        for t in v if isinstance(v, tuple | list) else [v]:
            if isinstance(t, torch.Tensor):
                total += _numel(t, marker) * t.element_size()
    return float(total)
