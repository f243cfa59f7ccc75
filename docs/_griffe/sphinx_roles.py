"""A Griffe extension for the docs build: render Sphinx roles in docstrings as code.

The code's docstrings use reST roles (``:class:`CallScheduler```, ``:meth:`~x.y.open```), which
Markdown would show verbatim. This turns each into an inline code span of the name the role
shows (``~`` keeps only the last component, as in Sphinx), and reST double-backtick literals into
Markdown code spans. The docstrings stay as they are for ``help()`` and IDEs.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
DOUBLE_BACKTICKS = re.compile(r"``([^`]+)``")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    return f"`{shown}`"


def convert(text: str) -> str:
    """Docstring text with Sphinx roles and reST literals turned into Markdown code spans."""
    text = ROLE.sub(_role, text)
    text = DOUBLE_BACKTICKS.sub(r"`\1`", text)
    # reST's "::" ending a paragraph introduces an indented literal block; Markdown needs ":"
    # and renders the indented block as code already.
    text = re.sub(r"::\n", ":\n", text)
    return _prose_before_fields(text)


def _prose_before_fields(text: str) -> str:
    """Move paragraphs that follow the ``:param:`` field list to before it.

    The Sphinx docstring parser reads such a closing paragraph ("Stops at first non-None
    result.") as the end of the last parameter's description.
    """
    paragraphs = text.split("\n\n")
    fields = [p for p in paragraphs if p.lstrip().startswith(":")]
    if not fields:
        return text
    first_field = paragraphs.index(fields[0])
    prose_after = [p for p in paragraphs[first_field:] if not p.lstrip().startswith(":")]
    return "\n\n".join([*paragraphs[:first_field], *prose_after, *fields])


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the loaded package once, as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Convert this object's docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
