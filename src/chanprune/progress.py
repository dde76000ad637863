"""Progress bars for the command line (tqdm on stderr).

Pruning steps are single long calls (a capture, an export), so a bar would sit still; a ticker
thread refreshes it so the elapsed time keeps moving and the user sees which step runs.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from tqdm import tqdm


class Steps:
    """One bar over the named steps of a job; ``with steps.step("export"): ...``."""

    def __init__(self, title: str, total: int, enabled: bool = True) -> None:
        self.title = title
        self.bar = tqdm(
            total=total,
            desc=title,
            file=sys.stderr,
            disable=not enabled,
            bar_format="{desc} |{bar:20}| {n_fmt}/{total_fmt} steps [{elapsed}]",
            dynamic_ncols=True,
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.bar.set_description_str(f"{self.title}: {name}")
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(stop,), daemon=True)
        if not self.bar.disable and sys.stderr.isatty():  # logs get one line per step
            ticker.start()
        try:
            yield
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join()
            self.bar.update(1)

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            self.bar.refresh()

    def rounds(self, name: str, total: int):
        """A nested bar for a counted loop (latency rounds); call it once per round."""
        bar = tqdm(
            total=total,
            desc=f"  {name}",
            file=sys.stderr,
            disable=self.bar.disable,
            leave=False,
            bar_format="{desc} |{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]",
        )
        return bar

    def close(self) -> None:
        self.bar.set_description_str(self.title)
        self.bar.close()
