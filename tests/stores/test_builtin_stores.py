"""The conformance suite on the built-in stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callschedule.abc import Store
from callschedule.plugins.memory import MemoryStore
from callschedule.plugins.sqlite import SQLiteStore
from callschedule.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        yield MemoryStore()


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLiteStore(str(tmp_path / "calls.db"))
        yield store
        store.close()


class TestSQLiteStoreSynchronousNormal(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'calls.db'}?synchronous=normal")
        yield store
        store.close()
