"""Griffe extension for the API reference: Sphinx roles in docstrings become code spans.

The docstrings use ``:class:`Capture```, ``:func:`register``` and the like; Markdown would
print the role literally. This turns ``:role:`target``` (``:role:`~a.b.Target```: ```Target```)
into ```target``` before mkdocstrings renders the docstring. Nothing else is changed.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _code(m: re.Match) -> str:
    target = m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)
    return f"`{target}`"


class SphinxRolesToCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
