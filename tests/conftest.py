from __future__ import annotations

import datetime as dt
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("callschedule.testing")

import freezegun  # noqa: E402
from freezegun import freeze_time  # noqa: E402

# The PostgreSQL store's driver must not see freezegun's fakes: psycopg's C extension checks the
# size of datetime's types when it is imported, and the pool's threads time their waits with
# time.monotonic (frozen, they hang for seconds on close). So import it before any clock is
# frozen, and let it read the real time; the scheduler's clock stays frozen.
freezegun.configure(extend_ignore_list=["psycopg", "psycopg_pool"])
try:
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401
except ImportError:  # the postgres extra is not installed: its tests skip
    pass

from callschedule import CallScheduler  # noqa: E402

#: The moment of the seed page's example.
SEED_NOW = 1_748_452_000


def at(timestamp: float) -> dt.datetime:
    """A UTC datetime for freezegun from Unix seconds."""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)


@pytest.fixture
def frozen() -> Iterator[object]:
    """The clock frozen at the seed's moment; ``frozen.move_to(at(t))`` drives it."""
    with freeze_time(at(SEED_NOW)) as clock:
        yield clock


#: The PostgreSQL server for tests (CI: postgresql://postgres@127.0.0.1:5432/test); unset: skip.
POSTGRES_URL = os.environ.get("CALLSCHEDULE_TEST_POSTGRES_URL", "")


def with_query(url: str, **options: str) -> str:
    """``url`` with ``options`` added to its query string."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query) + list(options.items())
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)  # libpq: no "+" for spaces
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL on a schema of its own on the test server, dropped afterwards.

    Runs of several people on one server never meet: each test has its own schema, and its
    connections carry the schema's name as ``application_name`` (to cut them, and only them).
    """
    if not POSTGRES_URL:
        pytest.skip("CALLSCHEDULE_TEST_POSTGRES_URL is not set")
    schema = f"cs_test_{uuid.uuid4().hex[:12]}"
    driver = pytest.importorskip("psycopg")
    yield with_query(POSTGRES_URL, schema=schema, application_name=schema)
    with driver.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL of each built-in kind."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture
def scheduler(store_url: str, frozen: object) -> Iterator[CallScheduler]:
    """A scheduler on a fresh store, the clock frozen at the seed's moment."""
    with CallScheduler.open(store_url) as scheduler:
        yield scheduler
