"""Helpers shared by the HTTP adapter tests: a frozen clock, a scheduler with keys, a client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import freezegun
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from callschedule import Call, CallScheduler, Event
from callschedule.asgi import create_app

#: The moment of the seed page's example.
SEED_NOW = 1748452000
SEED_CALL_ID = "call_bf2a9c7d-4e5f-4318-9b2a-8d7c6e4f1a0b"


@contextmanager
def frozen_clock(at: int = SEED_NOW) -> Iterator[Any]:
    """Freeze time at ``at`` for every thread, the thread pool of the adapter included.

    freezegun answers real time to code called from a frame of the ``threading`` module near the
    top of the stack, which is every call a thread pool makes; drop that module from the ignore list.
    """
    # pytest's own timings (--durations) stay real; others' additions (psycopg) are kept.
    previous = list(freezegun.config.settings.default_ignore_list)
    freezegun.configure(
        default_ignore_list=[
            *(m for m in previous if m != "threading"),
            "_pytest.runner",
            "_pytest.timing",
        ]
    )
    try:
        with freezegun.freeze_time(_iso(at), real_asyncio=True) as frozen:
            yield frozen
    finally:
        freezegun.configure(default_ignore_list=previous)


def _iso(seconds: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()


@attrs.define
class Tenant:
    """An organization with a working API key."""

    organization_id: str
    api_key: str
    api_secret: str

    @property
    def headers(self) -> dict[str, str]:
        """The authentication headers of this organization's key."""
        return {"X-API-KEY": self.api_key, "X-API-SECRET": self.api_secret}


def tenant(scheduler: CallScheduler, organization_id: str) -> Tenant:
    """Create an API key for ``organization_id``."""
    return Tenant(organization_id, *scheduler.create_api_key(organization_id))


def mounted_client(
    scheduler: CallScheduler, *, raise_server_exceptions: bool = True, **options: Any
) -> TestClient:
    """A client of the app mounted at ``/api`` in a host Starlette app."""
    host = Starlette(routes=[Mount("/api", create_app(scheduler, **options))])
    return TestClient(host, raise_server_exceptions=raise_server_exceptions)


def snapshot(scheduler: CallScheduler, organization_id: str, call_id: str) -> tuple[Call, list[Event]]:
    """The call and its log as stored now, to check later that a refused request changed nothing."""
    return scheduler.get_call(organization_id, call_id), scheduler.events(organization_id, call_id)
