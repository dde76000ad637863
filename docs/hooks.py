"""MkDocs hooks for the chanprune site (referenced by ``hooks:`` in mkdocs.yml).

- ``on_files``: the benchmark results (``benchmarks/results/`` and
  ``benchmarks/studies/results/``, markdown and PNG only) become site files at the same paths,
  e.g. ``benchmarks/results/latency.md`` -> ``/benchmarks/results/latency/``. The docs pages
  link to them with relative links, so ``mkdocs build --strict`` checks every such link. The raw
  ``.json``/``.jsonl`` files stay out of the site.
- ``on_page_markdown``: a relative link from a page under docs/ to a result file, written as it
  works when browsing the repository (``../benchmarks/results/soak.md`` from docs/), is
  rewritten to where that file lies in the site, so the same link works in both places and is
  checked by ``--strict``. And ``<!-- chanprune-help COMMAND -->`` is replaced by the argparse help
  of ``chanprune COMMAND`` (``<!-- chanprune-help -->``: of ``chanprune`` itself), so the
  command-line page never drifts from the parser.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parent.parent
RESULTS = (
    ("benchmarks/results", "*"),  # the product benchmarks' results
    ("benchmarks/studies/results", "**/*"),  # the studies', malloc/<run>/ included
)
SUFFIXES = {".md", ".png"}
HELP = re.compile(r"<!-- chanprune-help(?: ([a-z-]+))? -->")
LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")


def on_files(files: Files, config) -> Files:
    for folder, pattern in RESULTS:
        base = ROOT / folder
        if not base.is_dir():
            raise PluginError(f"docs/hooks.py: {base} is missing")
        for path in sorted(base.glob(pattern)):
            if path.is_file() and path.suffix in SUFFIXES:
                uri = path.relative_to(ROOT).as_posix()
                files.append(
                    File.generated(
                        config, uri, abs_src_path=str(path), inclusion=InclusionLevel.NOT_IN_NAV
                    )
                )
    return files


def _parser():
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from chanprune.cli import build_parser

    return build_parser()


def _help(command: str | None) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: fix it
    parser = _parser()
    if command is None:
        return parser.format_help()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    if command not in subparsers.choices:
        raise PluginError(f"docs: no `chanprune {command}` command (page asks for its help)")
    return subparsers.choices[command].format_help()


def _site_links(markdown: str, page, config, files: Files) -> str:
    """Repository-relative links to result files (outside docs/) -> their site paths."""
    docs = os.path.normpath(config.docs_dir)
    src = os.path.normpath(page.file.abs_src_path)
    if os.path.commonpath([docs, src]) != docs:
        return markdown  # a result page itself: its links are relative to its own folder

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return m.group(0)
        path = os.path.normpath(os.path.join(os.path.dirname(src), target))
        if os.path.commonpath([docs, path]) == docs:
            return m.group(0)  # a link between docs pages: mkdocs checks it as it is
        uri = Path(os.path.relpath(path, ROOT)).as_posix()
        if files.get_file_from_path(uri) is None:
            return m.group(0)  # not a site file: mkdocs warns about it (strict fails)
        here = os.path.dirname(page.file.src_uri) or "."
        return m.group(1) + Path(os.path.relpath(uri, here)).as_posix() + m.group(3)

    return LINK.sub(fix, markdown)


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    markdown = _site_links(markdown, page, config, files)
    if "<!-- chanprune-help" not in markdown:
        return markdown
    return HELP.sub(lambda m: f"```text\n{_help(m.group(1)).rstrip()}\n```", markdown)
