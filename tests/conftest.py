from __future__ import annotations

import datetime as dt
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


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL of each built-in kind."""
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture
def scheduler(store_url: str, frozen: object) -> Iterator[CallScheduler]:
    """A scheduler on a fresh store, the clock frozen at the seed's moment."""
    with CallScheduler.open(store_url) as scheduler:
        yield scheduler
