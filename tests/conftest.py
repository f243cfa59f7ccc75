from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("callschedule.testing")

from freezegun import freeze_time  # noqa: E402

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
