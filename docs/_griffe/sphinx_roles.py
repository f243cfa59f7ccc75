"""A Griffe extension for the docs build: render Sphinx roles in docstrings as links.

The code's docstrings use reST roles (``:class:`CallScheduler```, ``:meth:`~x.y.open```), which
Markdown would show verbatim. This turns each into an inline code span of the name the role
shows (``~`` keeps only the last component, as in Sphinx), linked to that object's entry in the
reference when the site renders one (an optional autoref: plain code otherwise), and reST
double-backtick literals into Markdown code spans. It also moves prose that follows a
``:param:`` list before it, where the Sphinx parser would otherwise glue it to the last
parameter. The docstrings stay as they are for ``help()`` and IDEs.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
DOUBLE_BACKTICKS = re.compile(r"``([^`]+)``")


def _identifier(target: str, scope: griffe.Object | None) -> str:
    """The full path ``target`` names, seen from ``scope`` (a class or module), as Sphinx would."""
    first, _, rest = target.partition(".")
    while scope is not None:
        member = scope.members.get(first)
        if member is not None:
            # An imported name points at its definition, where the reference renders it.
            path = member.target_path if member.is_alias else member.path  # type: ignore[union-attr]
            return f"{path}.{rest}" if rest else path
        scope = scope.parent
    return target if target.startswith("callschedule.") else f"callschedule.{target}"


def convert(text: str, scope: griffe.Object | None = None) -> str:
    """Docstring text with Sphinx roles and reST literals turned into Markdown."""

    def role(match: re.Match[str]) -> str:
        tilde, target = match.groups()
        target = target.removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if tilde else target
        if not re.fullmatch(r"[\w.]+", target):
            return f"`{shown}`"
        identifier = _identifier(target, scope)
        return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'

    text = ROLE.sub(role, text)
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
    """Rewrite every docstring of the package once it is loaded (so every scope is known)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Convert the docstrings of ``pkg`` and of everything in it, in place."""
        self._convert(pkg, seen=set())

    def _convert(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            scope = obj if obj.is_class or obj.is_module else obj.parent
            obj.docstring.value = convert(obj.docstring.value, scope)
        for member in obj.members.values():
            if not member.is_alias:
                self._convert(member, seen)  # type: ignore[arg-type]
