"""The ``postgresql://`` store, for many API servers and workers on many machines sharing one database.

This module is the plugin: it answers ``postgresql://`` and ``postgres://`` URLs and imports
psycopg only then, so the core works without the ``postgres`` extra. The store itself is
:class:`callschedule.plugins._postgres_store.PostgresStore` (also reachable as
``callschedule.plugins.postgres.PostgresStore``); see its docstring for the URL options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callschedule.hookspecs import hookimpl

if TYPE_CHECKING:
    from callschedule.abc import Store

#: The URL schemes this plugin answers.
SCHEMES = ("postgresql://", "postgres://")


def _load() -> Any:
    try:
        from callschedule.plugins import _postgres_store
    except ImportError as exc:
        raise ImportError(
            f"the postgresql:// store needs psycopg 3: pip install 'callschedule[postgres]' ({exc})"
        ) from exc
    return _postgres_store


def __getattr__(name: str) -> Any:
    if name in ("PostgresStore", "DatabaseClock", "SCHEMA_VERSION"):
        return getattr(_load(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl(trylast=True)
def callschedule_store(url: str) -> Store | None:
    """``postgresql://user:password@host:5432/dbname?schema=callschedule`` (or ``postgres://``)."""
    if url.startswith(SCHEMES):
        store: Store = _load().PostgresStore.from_url(url)
        return store
    return None
