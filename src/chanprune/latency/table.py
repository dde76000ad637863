"""Latency tables: the measured time of single op calls on one device, cached on disk.

As HALP does for layers, every distinct op call (op, shapes, arguments) is timed alone the first
time a prediction needs it, and kept in a JSON file per machine, device, thread count and torch
version, so that a model's second prediction, and any export of it, costs no measurement of the
calls it shares. Timings are the fastest of repeated blocks, each long enough for the clock: a
block that another process interrupted is slower, never faster.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InputError
from .trace import OpCall, TensorSpec, replay_args, resolve_op

DEVICES = ("cpu", "cuda")
PROBE_KEY = "<probe>"  # the table's entry for PROBE, timed when the table was started
PROBE_SLACK = 1.25  # a cached table whose probe ran this much slower than now is stale
#: a fixed call every table times first: a 3x3 conv, 64 channels at 56x56 (about 1 ms)
PROBE = OpCall(
    "aten.convolution.default",
    (
        TensorSpec((1, 64, 56, 56), "float32", True),
        TensorSpec((64, 64, 3, 3), "float32", True),
        None,
        [1, 1],
        [1, 1],
        [1, 1],
        False,
        [0, 0],
        1,
    ),
    (),
    0,
    0,
)
BLOCK_S = 0.001  # a timed block runs the op for at least this long
BLOCKS = 7  # timed blocks per op; the fastest is kept (the one no other process interrupted)
VIEW_KEY = "<view>"  # the table's entry for the cost of a view (a dispatch, no kernel)


def default_cache_dir() -> Path:
    """``$CHANPRUNE_CACHE`` or ``~/.cache/chanprune``: where tables are kept."""
    return Path(os.environ.get("CHANPRUNE_CACHE", Path.home() / ".cache" / "chanprune"))


def table_name(device: str, threads: int) -> str:
    """The file name that identifies what a table's timings hold for: device, CPU, threads and
    torch version (a table measured elsewhere predicts nothing here)."""
    if device == "cuda":
        where = torch.cuda.get_device_name().replace(" ", "_")
    else:
        where = f"{platform.machine()}-{torch.backends.cpu.get_cpu_capability()}"
    return f"latency-{device}-{where}-{threads}t-torch{torch.__version__.split('+')[0]}.json"


class LatencyTable:
    """Seconds per op call on ``device`` ("cpu" or "cuda") with ``threads`` intra-op threads
    (default: torch's), measured at first use and cached in ``cache_dir`` (None: in memory)."""

    def __init__(
        self,
        device: str = "cpu",
        threads: int | None = None,
        cache_dir: Path | str | None = None,
        timer: Callable[[OpCall], float] | None = None,
    ) -> None:
        if device not in DEVICES:
            raise InputError(f"unknown latency device {device!r}; choose one of {DEVICES}")
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError(
                "device 'cuda' asked for, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}, cuda build {torch.version.cuda}); use 'cpu'"
            )
        self.device = device
        self.threads = threads or torch.get_num_threads()
        self.timer = timer or self._measure
        self.path = None
        self.entries: dict[str, float] = {}
        self.measured = 0  # op calls timed by this table object (not found in the cache)
        if cache_dir is not None:
            self.path = Path(cache_dir) / table_name(device, self.threads)
            if self.path.exists():
                self.entries = json.loads(self.path.read_text())
        if timer is None:  # a real clock: check what the cache was timed under
            self._check_probe()

    def _check_probe(self) -> None:
        """Time :data:`PROBE` now and compare with the cached table's: a table timed while
        another job slowed the machine would mislead every prediction, so one whose probe ran
        more than :data:`PROBE_SLACK` slower than now is dropped (and re-measured as needed);
        a machine slower now than when its table was timed gets a warning."""
        now = self._measure(PROBE)
        then = self.entries.get(PROBE_KEY)
        if then is not None and then > now * PROBE_SLACK:
            self.entries = {}
            self.measured += 1  # saving replaces the stale file
        elif then is not None and now > then * PROBE_SLACK:
            warnings.warn(
                f"chanprune: this machine runs {now / then:.1f}x slower than when its latency "
                f"table ({self.path}) was measured: another job is using the cores? Latency "
                "predictions and measurements made now are off by as much",
                stacklevel=3,
            )
        self.entries.setdefault(PROBE_KEY, now)

    def seconds(self, call: OpCall) -> float:
        """The time of ``call`` alone; views cost one dispatch."""
        key = VIEW_KEY if call.kind == "view" else call.key
        if key not in self.entries:
            self.entries[key] = self.timer(call)
            self.measured += 1
        return self.entries[key]

    def save(self) -> None:
        """Write the table to its cache file (if any); concurrent writers each write whole files."""
        if self.path is None or not self.measured:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries))
        tmp.replace(self.path)

    def _measure(self, call: OpCall) -> float:
        if call.kind == "view":
            call = OpCall("aten.view.default", (TensorSpec((1,), "float32", True), [1]), (), 4, 4)
        op = resolve_op(call.op)
        args, kwargs = replay_args(call, self.device)
        sync = torch.cuda.synchronize if self.device == "cuda" else _noop
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for _ in range(2):
                    op(*args, **kwargs)
                sync()
                n, spent = 1, 0.0
                while True:  # calls per block: enough for the block to last BLOCK_S
                    t0 = time.perf_counter()
                    for _ in range(n):
                        op(*args, **kwargs)
                    sync()
                    spent = time.perf_counter() - t0
                    if spent >= BLOCK_S or n >= 1 << 16:
                        break
                    n *= 2 if spent <= 0 else max(2, min(16, int(BLOCK_S / spent) + 1))
                times = [spent / n]
                for _ in range(BLOCKS - 1):
                    t0 = time.perf_counter()
                    for _ in range(n):
                        op(*args, **kwargs)
                    sync()
                    times.append((time.perf_counter() - t0) / n)
        finally:
            torch.set_num_threads(old)
        return min(times)


def _noop() -> None:
    return None
