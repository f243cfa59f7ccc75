"""What the SQLite store does beyond the conformance suite: files, URLs, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from callschedule import Call, InvalidInput
from callschedule.plugins.sqlite import MAX_IDLE_READERS, SCHEMA_VERSION, SQLiteStore, migrations
from callschedule.testing import created_event, make_call


def test_opening_an_older_database_migrates_it_and_keeps_its_calls(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = Database(str(path))
    names = [m.name for m in migrations.pending(db)]
    migrations.apply(db, stop_before=names[-1])
    assert len(migrations.applied(db)) == len(names) - 1
    call = make_call()
    db.execute(
        "INSERT INTO calls VALUES (?, ?, ?, 'pending', ?, '{}', 0, 0, 1, ?, ?, NULL, NULL, NULL)",
        [
            call.organization_id,
            call.call_id,
            call.scheduled_timestamp,
            call.timezone,
            call.created_at,
            call.updated_at,
        ],
    )
    db.conn.commit()
    db.conn.close()

    store = SQLiteStore(str(path))
    assert store.schema_version() == SCHEMA_VERSION
    stored = store.get_call(call.organization_id, call.call_id)
    assert stored is not None and stored.scheduled_timestamp == call.scheduled_timestamp
    store.close()


def test_wal_and_full_synchronous_by_default(tmp_path: Path) -> None:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'calls.db'}")
    store.insert_call(make_call(), created_event(make_call()))
    conn = sqlite3.connect(tmp_path / "calls.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert store.synchronous == "full"
    store.close()


def test_url_options_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore.from_url("sqlite:///data/calls.db?synchronous=normal&busy_timeout=500")
    assert (tmp_path / "data" / "calls.db").exists()
    assert (store.synchronous, store.busy_timeout_ms) == ("normal", 500)
    store.close()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "sqlite:///x.db?synchronous=off", "sqlite:///x.db?busy_timeout=soon"],
)
def test_bad_urls_are_refused(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput):
        SQLiteStore.from_url(url)


def test_threads_that_come_and_go_do_not_pile_up_open_connections(tmp_path: Path) -> None:
    import threading

    import psutil

    store = SQLiteStore(str(tmp_path / "calls.db"))
    store.insert_call(make_call(), created_event(make_call()))
    process = psutil.Process()
    before = len(process.open_files())
    for _ in range(5):
        threads = [threading.Thread(target=store.get_call, args=("org-a", "call-1")) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    opened = len(process.open_files()) - before
    assert opened <= 2 * MAX_IDLE_READERS, f"{opened} files left open by 200 short-lived threads"
    store.close()
    assert len(process.open_files()) < before


def test_store_authors_build_the_claimed_event_with_the_public_helper(tmp_path: Path) -> None:
    from callschedule.abc import claimed_event

    store = SQLiteStore(str(tmp_path / "calls.db"))
    store.insert_call(make_call(scheduled_timestamp=1), created_event(make_call()))
    [claimed] = store.claim_due(now=10, now_ms=10_000, limit=5, lease_owner="w", lease_expires_at=20_000)
    assert store.events("org-a", "call-1")[-1] == claimed_event(claimed, 10_000)
    store.close()


def test_a_subclass_that_changes_the_claim_keeps_it_when_outcomes_and_claim_go_together(
    tmp_path: Path,
) -> None:
    class ClaimAtMostOne(SQLiteStore):
        def claim_due(self, **kwargs: Any) -> list[Call]:
            return super().claim_due(**{**kwargs, "limit": 1})

    store = ClaimAtMostOne(str(tmp_path / "calls.db"))
    for n in range(3):
        call = make_call(f"c{n}", scheduled_timestamp=1)
        store.insert_call(call, created_event(call))
    _, claimed = store.update_calls_and_claim_due(
        [], now=10, now_ms=10_000, limit=5, lease_owner="w", lease_expires_at=20_000
    )
    assert [c.call_id for c in claimed] == ["c0"]
    store.close()
