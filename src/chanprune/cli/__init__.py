"""The ``chanprune`` console command.

One module per subcommand; each exposes ``add_parser(sub)`` (registers its arguments and sets
``func``) so new commands are added here in one line without touching the others.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import ChanpruneError
from . import bench, eval, prune, report

COMMANDS = [prune, report, eval, bench]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chanprune", description="Unconstrained channel pruning with exact, smaller exports."
    )
    p.add_argument("--version", action="version", version=f"chanprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ChanpruneError as e:
        print(f"chanprune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
