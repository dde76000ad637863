"""``chanprune bench``: run a benchmark script of the source checkout (latency, copies or
export time).

The benchmarks live in ``benchmarks/`` next to ``src/`` (they need the peers and write their
tables into the repository), so this command finds them relative to the installed package and
says so plainly when chanprune was installed without its source tree.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from ..errors import ChanpruneError

SCRIPTS = {"latency": "latency.py", "copies": "copies.py", "export-time": "export_time.py"}


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "benchmarks"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run benchmarks/latency.py (default), copies.py or export_time.py",
        description="Run a benchmark of the source checkout; arguments after the name are "
        "passed on (see `chanprune bench latency -- --help`).",
    )
    p.add_argument("which", nargs="?", default="latency", choices=sorted(SCRIPTS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
    p.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    script = benchmarks_dir() / SCRIPTS[args.which]
    if not script.is_file():
        raise ChanpruneError(
            f"benchmark script {script} not found: `chanprune bench` runs the scripts of a source "
            "checkout (git clone, then pip install -e .)"
        )
    rest = [a for a in args.args if a != "--"]
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *rest]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    return 0
