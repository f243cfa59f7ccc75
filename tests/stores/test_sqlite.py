"""What the SQLite store does beyond the conformance suite: files, URLs, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from callschedule import Call, Conflict, InvalidInput, StoreClosed
from callschedule.plugins.sqlite import MAX_IDLE_READERS, SCHEMA_VERSION, SQLiteStore, migrations
from callschedule.testing import created_event, make_call, moved


def _on_the_file(path: Path, sql: str) -> None:
    """Run ``sql`` on the database file through a connection of its own (another process's)."""
    with sqlite3.connect(str(path)) as conn:
        conn.execute(sql)
    conn.close()


def _refuse_events(path: Path, when: str) -> None:
    """From now on SQLite refuses to insert an event ``when`` it matches (trigger ``refuse``)."""
    _on_the_file(
        path,
        f"CREATE TRIGGER refuse BEFORE INSERT ON events WHEN {when} "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )


class _FailingOnce:
    """A writer connection whose next statement of each text in ``failing`` (``COMMIT``,
    ``ROLLBACK``) fails as a disk would; ``failed`` holds those that did."""

    def __init__(self, real: sqlite3.Connection, failing: set[str]) -> None:
        self.real, self.failing = real, failing
        self.failed: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def execute(self, sql: str, *args: Any) -> Any:
        if sql in self.failing and sql not in self.failed:
            self.failed.add(sql)
            raise sqlite3.OperationalError("disk I/O error")
        return self.real.execute(sql, *args)


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


# -- changes from an event loop ------------------------------------------------------------------


def test_an_event_loop_keeps_running_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """The loop's changes wait for another process's lock in a thread: the loop itself goes on
    (here it is the loop that releases the lock, so a loop that waited would never finish)."""
    path = tmp_path / "calls.db"
    store = SQLiteStore.from_url(f"sqlite:///{path}?busy_timeout=10000")
    call = make_call()
    store.insert_call(call, created_event(call))
    new, event = moved(call, call.scheduled_timestamp + 600)
    other_process = sqlite3.connect(str(path), isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")  # holds the write lock, as a writer elsewhere would

    async def scenario() -> None:
        change = asyncio.ensure_future(store.update_call_async(new, call.version, [event]))
        for _ in range(20):  # the loop turns: the change waits for the lock elsewhere
            await asyncio.sleep(0)
        assert not change.done()
        other_process.execute("COMMIT")
        assert await asyncio.wait_for(change, timeout=10) == new

    try:
        asyncio.run(scenario())
    finally:
        other_process.close()
    assert store.get_call("org-a", "call-1") == new
    store.close()


def test_a_thread_waits_for_another_process_s_write_lock_up_to_the_busy_timeout(tmp_path: Path) -> None:
    """The writer has no busy timeout of its own (a loop must not wait); a thread's change turns
    it on while it waits, so it is written once the other process commits, and it is refused
    with SQLite's own error only after the timeout."""
    path = tmp_path / "calls.db"
    store = SQLiteStore.from_url(f"sqlite:///{path}?busy_timeout=200")
    call = make_call()
    store.insert_call(call, created_event(call))
    other_process = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        other_process.execute("BEGIN IMMEDIATE")
        released = threading.Timer(0.05, lambda: other_process.execute("COMMIT"))
        released.start()
        new, event = moved(call, call.scheduled_timestamp + 600)
        assert store.update_call(new, call.version, [event]) == new
        released.join()

        other_process.execute("BEGIN IMMEDIATE")  # held past the timeout this time
        newer, event = moved(new, new.scheduled_timestamp + 600)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.update_call(newer, new.version, [event])
        other_process.execute("COMMIT")
        assert store.update_call(newer, new.version, [event]) == newer
    finally:
        other_process.close()
    assert store.get_call("org-a", "call-1") == newer
    store.close()


def test_a_change_made_from_an_event_loop_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = SQLiteStore(str(path))
    call = make_call()

    async def create() -> None:
        assert await store.insert_call_async(call, created_event(call)) == call
        # Read through a connection of its own, as another process would: already committed.
        elsewhere = sqlite3.connect(str(path))
        try:
            assert elsewhere.execute("SELECT version FROM calls").fetchall() == [(1,)]
            assert elsewhere.execute("SELECT type FROM events").fetchall() == [("created",)]
        finally:
            elsewhere.close()

    asyncio.run(create())
    store.close()


def test_changes_after_close_are_refused_from_threads_and_event_loops_alike(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "calls.db"))
    store.close()
    call = make_call()
    with pytest.raises(StoreClosed):
        store.insert_call(call, created_event(call))
    with pytest.raises(StoreClosed):
        asyncio.run(store.insert_call_async(call, created_event(call)))


def test_closing_under_changes_from_an_event_loop_loses_none_it_acknowledged(tmp_path: Path) -> None:
    """Close waits for the commit in progress instead of cutting it off; the changes that had
    not reached a commit yet are refused, and none of them is in the file."""
    path = tmp_path / "calls.db"
    store = SQLiteStore(str(path))
    early = [make_call(f"early-{n}") for n in range(20)]
    late = [make_call(f"late-{n}") for n in range(20)]

    async def create_then_close() -> tuple[list[object], list[object]]:
        first = [asyncio.ensure_future(store.insert_call_async(c, created_event(c))) for c in early]
        for _ in range(3):  # they run, their batch is applied and handed to the committer
            await asyncio.sleep(0)
        second = [asyncio.ensure_future(store.insert_call_async(c, created_event(c))) for c in late]
        store.close()  # on the loop, before the second lot ever runs: they meet a closed store
        return (
            await asyncio.gather(*first, return_exceptions=True),
            await asyncio.gather(*second, return_exceptions=True),
        )

    acknowledged, refused = asyncio.run(create_then_close())
    assert acknowledged == early  # the commit in progress when close was called was finished
    assert all(isinstance(r, StoreClosed) for r in refused)
    reopened = SQLiteStore(str(path))
    assert {c.call_id for c in reopened.list_calls("org-a", limit=100)} == {c.call_id for c in early}
    reopened.close()


def test_a_loop_change_waits_for_a_thread_commit_in_progress_then_commits(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "calls.db"))
    call = make_call()
    store.insert_call(call, created_event(call))
    new, event = moved(call, call.scheduled_timestamp + 600)
    in_commit, release = threading.Event(), threading.Event()

    def slow_change(conn: sqlite3.Connection) -> None:  # a thread's change that takes its time
        in_commit.set()
        release.wait(10)

    writer = threading.Thread(target=store._write, args=(slow_change,))
    writer.start()
    assert in_commit.wait(10)

    async def scenario() -> None:
        change = asyncio.ensure_future(store.update_call_async(new, call.version, [event]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not change.done()  # the writer is taken: the batch waits, the loop goes on
        release.set()
        assert await asyncio.wait_for(change, timeout=10) == new

    asyncio.run(scenario())
    writer.join()
    assert store.get_call("org-a", "call-1") == new
    store.close()


def _changes_sharing_one_transaction(store: SQLiteStore, how: str, changes: list[Any]) -> list[object]:
    """Run ``changes`` (call, expected version, events) so that they share one transaction:
    from one turn of an event loop, or from threads queued behind a commit in progress."""
    if how == "loop":

        async def together() -> list[object]:
            return await asyncio.gather(
                *(store.update_call_async(*change) for change in changes), return_exceptions=True
            )

        return asyncio.run(together())
    results: list[object] = [None] * len(changes)
    in_commit, release = threading.Event(), threading.Event()

    def slow_change(conn: sqlite3.Connection) -> None:  # holds the writer while the others queue
        in_commit.set()
        release.wait(10)

    def change(n: int) -> None:
        try:
            results[n] = store.update_call(*changes[n])
        except Exception as exc:
            results[n] = exc

    holder = threading.Thread(target=store._write, args=(slow_change,))
    holder.start()
    assert in_commit.wait(10)
    threads = [threading.Thread(target=change, args=(n,)) for n in range(len(changes))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(store._queue) < len(changes) and time.monotonic() < deadline:
        time.sleep(0.001)  # until every change is queued for the next commit
    release.set()
    for thread in [holder, *threads]:
        thread.join(10)
    return results


@pytest.mark.parametrize("how", ["loop", "threads"])
def test_changes_sharing_a_transaction_stand_when_one_is_refused_or_fails_halfway(
    tmp_path: Path, how: str
) -> None:
    """A refused change (a stale version) writes nothing; a change whose event SQLite refuses
    after its update was written is undone whole; the others in the transaction are committed."""
    path = tmp_path / "calls.db"
    store = SQLiteStore(str(path))
    calls = [make_call(f"call-{n}") for n in range(4)]
    for call in calls:
        store.insert_call(call, created_event(call))
    _refuse_events(path, "NEW.call_id = 'call-2'")  # the event of call-2 fails, after its update ran
    changes = [
        (new, call.version, [event])
        for call in calls
        for new, event in [moved(call, call.scheduled_timestamp + 600)]
    ]
    elsewhere, event = moved(calls[1], calls[1].scheduled_timestamp + 1200)
    store.update_call(elsewhere, calls[1].version, [event])  # call-1 moves first: its change is stale

    results = _changes_sharing_one_transaction(store, how, changes)

    assert results[0] == changes[0][0] and results[3] == changes[3][0]
    assert isinstance(results[1], Conflict)
    assert isinstance(results[2], sqlite3.IntegrityError)
    stored = {c.call_id: c for c in store.list_calls("org-a")}
    assert stored["call-0"] == changes[0][0] and stored["call-3"] == changes[3][0]
    assert stored["call-1"] == elsewhere and stored["call-2"] == calls[2]  # neither half-moved
    with sqlite3.connect(str(path)) as conn:
        moved_events = conn.execute("SELECT call_id FROM events WHERE type = 'rescheduled' ORDER BY call_id")
        assert moved_events.fetchall() == [("call-0",), ("call-1",), ("call-3",)]
    conn.close()
    store.close()


@pytest.mark.parametrize("failing", [{"COMMIT"}, {"COMMIT", "ROLLBACK"}], ids=["commit", "commit+rollback"])
def test_a_failed_commit_refuses_its_changes_and_the_next_ones_commit(
    tmp_path: Path, failing: set[str]
) -> None:
    """Even when the rollback after it fails too, no caller waits forever and the store goes on."""
    store = SQLiteStore(str(tmp_path / "calls.db"))
    store._writer = _FailingOnce(store._writer, failing)  # type: ignore[assignment]
    calls = [make_call(f"call-{n}") for n in range(3)]

    async def scenario() -> tuple[list[object], object]:
        first = await asyncio.gather(
            *(store.insert_call_async(c, created_event(c)) for c in calls), return_exceptions=True
        )
        return first, await store.insert_call_async(calls[0], created_event(calls[0]))

    refused, retried = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert all(isinstance(r, sqlite3.OperationalError) for r in refused)
    assert retried == calls[0]
    assert [c.call_id for c in store.list_calls("org-a")] == ["call-0"]
    other = calls[1]
    assert store.insert_call(other, created_event(other)) == other  # threads write on, too
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


def test_changes_left_after_one_failed_halfway_wait_for_the_lock_another_process_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From an event loop: the transaction is undone to drop the failed change, and another
    process takes the write lock before it begins again; the others are written once it is free."""
    path = tmp_path / "calls.db"
    store = SQLiteStore(str(path))
    calls = [make_call(f"call-{n}") for n in range(3)]
    for call in calls:
        store.insert_call(call, created_event(call))
    _refuse_events(path, "NEW.call_id = 'call-2'")
    other = sqlite3.connect(str(path), isolation_level=None)  # another process's connection
    begin_at_once = SQLiteStore._begin_at_once
    begins = []

    def begin_after_another_process(self: SQLiteStore, conn: sqlite3.Connection) -> bool:
        begins.append(1)
        if len(begins) == 2:  # the second begin, after the rollback: the other process is first
            other.execute("BEGIN IMMEDIATE")
            asyncio.get_running_loop().call_later(0.2, lambda: other.execute("COMMIT"))
        return begin_at_once(self, conn)

    monkeypatch.setattr(SQLiteStore, "_begin_at_once", begin_after_another_process)
    changes = [(new, c.version, [e]) for c in calls for new, e in [moved(c, c.scheduled_timestamp + 600)]]

    async def together() -> list[object]:
        return await asyncio.gather(*(store.update_call_async(*c) for c in changes), return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(together(), timeout=20))
    assert results[:2] == [changes[0][0], changes[1][0]]
    assert isinstance(results[2], sqlite3.IntegrityError)
    assert [store.get_call("org-a", c.call_id) for c in calls] == [changes[0][0], changes[1][0], calls[2]]
    other.close()
    store.close()


def test_close_waits_for_a_thread_handed_the_writer_with_others_queued_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread B is handed the writer and D queues behind it before B takes the queue; close()
    then must let B commit both (not refuse them and wait for a writer nobody releases)."""
    from callschedule.plugins import sqlite as sqlite_module

    store = SQLiteStore(str(tmp_path / "calls.db"))
    calls = [make_call(f"call-{n}") for n in range(2)]
    for call in calls:
        store.insert_call(call, created_event(call))
    b_has_its_turn, let_b_go = threading.Event(), threading.Event()

    class PausingTurn:  # B's turn lock: B stops just after being handed the writer
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._lock.acquire()
            self._pause = threading.current_thread().name == "B"

        def acquire(self) -> bool:
            self._lock.acquire()
            if self._pause:
                b_has_its_turn.set()
                let_b_go.wait(10)
            return True

        def release(self) -> None:
            self._lock.release()

    monkeypatch.setattr(sqlite_module, "_taken", lambda lock: PausingTurn())
    in_commit, release_a = threading.Event(), threading.Event()

    def slow_change(conn: sqlite3.Connection) -> None:
        in_commit.set()
        release_a.wait(10)

    results: dict[str, object] = {}

    def change(name: str, call: Call) -> None:
        new, event = moved(call, call.scheduled_timestamp + 60)
        try:
            results[name] = store.update_call(new, call.version, [event])
        except Exception as exc:
            results[name] = exc

    a = threading.Thread(target=store._write, args=(slow_change,))
    a.start()
    assert in_commit.wait(10)
    b = threading.Thread(target=change, args=("B", calls[0]), name="B")
    b.start()
    deadline = time.monotonic() + 10
    while not store._queue and time.monotonic() < deadline:
        time.sleep(0.001)
    release_a.set()  # A commits and hands the writer to B
    assert b_has_its_turn.wait(10)
    d = threading.Thread(target=change, args=("D", calls[1]), name="D")
    d.start()
    while len(store._queue) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    closer = threading.Thread(target=store.close)
    closer.start()
    while not store._closed and time.monotonic() < deadline:
        time.sleep(0.001)
    with store._cond:  # close() has decided what to refuse
        pass
    let_b_go.set()
    for thread in (a, b, d, closer):
        thread.join(10)
    assert not closer.is_alive()  # close() returned
    assert all(isinstance(r, Call) for r in results.values()) and len(results) == 2


def test_an_interrupt_in_the_committing_thread_refuses_the_changes_it_carried(tmp_path: Path) -> None:
    """A KeyboardInterrupt while a thread writes a shared transaction: it reaches that thread,
    and the other threads' changes in the transaction are refused, not reported written."""
    store = SQLiteStore(str(tmp_path / "calls.db"))
    call = make_call()
    store.insert_call(call, created_event(call))
    new, event = moved(call, call.scheduled_timestamp + 60)
    in_commit, release = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def slow_change(conn: sqlite3.Connection) -> None:  # holds the writer while the others queue
        in_commit.set()
        release.wait(10)

    def interrupted(conn: sqlite3.Connection) -> None:
        raise KeyboardInterrupt

    def run(name: str, action: Any) -> None:
        try:
            outcomes[name] = action()
        except BaseException as exc:
            outcomes[name] = exc

    holder = threading.Thread(target=store._write, args=(slow_change,))
    holder.start()
    assert in_commit.wait(10)
    mover = threading.Thread(
        target=run, args=("mover", lambda: store.update_call(new, call.version, [event]))
    )
    mover.start()
    deadline = time.monotonic() + 10
    while not store._queue and time.monotonic() < deadline:
        time.sleep(0.001)
    interrupter = threading.Thread(target=run, args=("interrupter", lambda: store._write(interrupted)))
    interrupter.start()  # queued last: it commits the queue, its own change last in it
    while len(store._queue) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    release.set()
    for thread in (holder, mover, interrupter):
        thread.join(10)
    assert isinstance(outcomes["interrupter"], KeyboardInterrupt)
    assert isinstance(outcomes["mover"], sqlite3.OperationalError)
    assert store.get_call("org-a", "call-1") == call  # not moved
    assert store.update_call(new, call.version, [event]) == new  # and the store writes on
    store.close()


@pytest.mark.parametrize("failing", [{"COMMIT"}, {"COMMIT", "ROLLBACK"}], ids=["commit", "commit+rollback"])
def test_a_lone_thread_change_whose_commit_fails_is_refused_and_the_store_writes_on(
    tmp_path: Path, failing: set[str]
) -> None:
    """One thread writing alone (no batch to share): its failed commit raises, leaves nothing
    written, and the writer is usable again, even when the rollback after it fails too."""
    store = SQLiteStore(str(tmp_path / "calls.db"))
    writer = store._writer = _FailingOnce(store._writer, failing)  # type: ignore[assignment]
    first, second = make_call("call-1"), make_call("call-2")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        store.insert_call(first, created_event(first))
    assert writer.failed == failing
    assert store.get_call("org-a", "call-1") is None
    assert store.insert_call(second, created_event(second)) == second
    assert [c.call_id for c in store.list_calls("org-a")] == ["call-2"]
    store.close()


def test_a_lone_thread_change_that_fails_halfway_leaves_nothing_of_itself(tmp_path: Path) -> None:
    """The call's row is updated, then its event is refused: the update is undone with it."""
    path = tmp_path / "calls.db"
    store = SQLiteStore(str(path))
    call = make_call()
    store.insert_call(call, created_event(call))
    _refuse_events(path, "NEW.type = 'rescheduled'")
    new, event = moved(call, call.scheduled_timestamp + 600)
    with pytest.raises(sqlite3.IntegrityError, match="refused by the test"):
        store.update_call(new, call.version, [event])
    assert store.get_call("org-a", call.call_id) == call
    assert [e.type.value for e in store.events("org-a", call.call_id)] == ["created"]
    _on_the_file(path, "DROP TRIGGER refuse")
    assert store.update_call(new, call.version, [event]) == new  # the writer is free again
    store.close()


def _lines_of(function: Any, *, up_to: str | None = None) -> list[int]:
    """The line numbers of ``function``'s body, up to the line that contains ``up_to``."""
    lines, first = inspect.getsourcelines(function)
    body = []
    for n, text in enumerate(lines[1:], first + 1):
        if text.strip() and not text.strip().startswith(('"""', "#")):
            body.append(n)
        if up_to is not None and up_to in text:
            break
    return body


@pytest.mark.parametrize(
    ("function", "line"),
    [(SQLiteStore._write, n) for n in _lines_of(SQLiteStore._write, up_to="_write_alone(work)")]
    + [(SQLiteStore._write_alone, n) for n in _lines_of(SQLiteStore._write_alone)],
)
def test_an_interrupt_while_a_lone_change_is_written_leaves_the_store_usable(
    tmp_path: Path, function: Any, line: int
) -> None:
    """A KeyboardInterrupt (Ctrl-C in the main thread) raised before any line of a lone write:
    the writer is not left taken, nothing half-written stays, and the store goes on."""
    store = SQLiteStore(str(tmp_path / "calls.db"))
    code = function.__code__

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return interrupt if event == "call" and frame.f_code is code else None

    def interrupt(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == line:
            raise KeyboardInterrupt
        return interrupt

    call = make_call()
    sys.settrace(tracer)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            store.insert_call(call, created_event(call))
    finally:
        sys.settrace(None)
    assert not store._lock.locked() and not store._committing
    assert not store._writer.in_transaction
    other = make_call("call-2")
    assert store.insert_call(other, created_event(other)) == other
    assert {c.call_id for c in store.list_calls("org-a")} <= {"call-1", "call-2"}
    store.close()
