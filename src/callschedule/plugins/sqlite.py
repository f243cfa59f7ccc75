"""The ``sqlite:///path`` store: one SQLite file in WAL mode, safe for many threads and processes.

Writes from all threads of a process go through one connection and share commits (group
commit): a transaction may hold several changes, and no caller returns before it is committed.
A change that is refused (a conflict) writes nothing, so the others stand; one that fails after
writing part of itself is undone with the transaction, which runs again without it. Other
processes wait on the file lock up to the busy timeout. Reads borrow connections from a small
pool and never wait for writers.

Changes made from an event loop (the ``*_async`` methods) are gathered over one turn of the
loop into one transaction, whose statements the loop runs itself (microseconds each); a
committer thread runs its ``COMMIT`` and fsync, so the loop never waits on an fsync, nor on
another process's write lock (a batch that finds the file locked goes through a thread instead).

URL options: ``?synchronous=full`` (default: an acknowledged change survives power loss) or
``normal`` (survives a crash of the process, not of the machine; faster), and
``busy_timeout`` in milliseconds (default 30000).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from callschedule import _events, _json
from callschedule._model import ApiKey, Call, Event, EventType, ExecutionStatus, Source
from callschedule.abc import Store, _one_transaction_round
from callschedule.exceptions import CallNotFound, CallScheduleError, Conflict, InvalidInput, StoreClosed
from callschedule.hookspecs import hookimpl

T = TypeVar("T")

logger = logging.getLogger("callschedule.sqlite")

migrations = Migrations("callschedule")

#: Read connections kept open between reads; more are opened while more threads read at once.
MAX_IDLE_READERS = 64

#: The most changes of an event loop one transaction takes (a few milliseconds of the loop's time);
#: more wait for the next commit.
MAX_LOOP_BATCH = 256

#: The schema version a database is at after opening: the number of applied migrations.
SCHEMA_VERSION = 2


@migrations(name="0001_initial")
def _m0001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS calls (
            organization_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            scheduled_timestamp INTEGER NOT NULL,
            execution_status TEXT NOT NULL,
            timezone TEXT,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            reschedule_count INTEGER NOT NULL,
            version INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            lease_owner TEXT,
            lease_expires_at INTEGER,
            outcome TEXT,
            PRIMARY KEY (organization_id, call_id)
        );
        CREATE INDEX IF NOT EXISTS calls_due ON calls (execution_status, scheduled_timestamp);
        CREATE INDEX IF NOT EXISTS calls_by_org
            ON calls (organization_id, scheduled_timestamp, call_id);
        CREATE INDEX IF NOT EXISTS calls_leases ON calls (lease_expires_at)
            WHERE execution_status = 'in_progress';
        CREATE TABLE IF NOT EXISTS events (
            id INTEGER PRIMARY KEY,
            organization_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            type TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            event TEXT NOT NULL,
            data TEXT NOT NULL,
            source TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS events_by_call ON events (organization_id, call_id, id);
        CREATE TABLE IF NOT EXISTS api_keys (
            api_key TEXT PRIMARY KEY,
            organization_id TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        """
    )


@migrations(name="0002_calls_by_org_status")
def _m0002_calls_by_org_status(db: Database) -> None:
    # list_calls(status=...) for one organization without scanning its other calls
    db.execute(
        "CREATE INDEX IF NOT EXISTS calls_by_org_status "
        "ON calls (organization_id, execution_status, scheduled_timestamp, call_id)"
    )


_CALL_COLUMNS = (
    "organization_id, call_id, scheduled_timestamp, execution_status, timezone, payload, "
    "attempts, reschedule_count, version, created_at, updated_at, lease_owner, "
    "lease_expires_at, outcome"
)
_INSERT_CALL = f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 14)})"
_INSERT_EVENT = (
    "INSERT INTO events (organization_id, call_id, type, timestamp, event, data, source) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_CALL = (
    "UPDATE calls SET scheduled_timestamp = ?, execution_status = ?, timezone = ?, payload = ?, "
    "attempts = ?, reschedule_count = ?, version = ?, updated_at = ?, lease_owner = ?, "
    "lease_expires_at = ?, outcome = ? "
    "WHERE organization_id = ? AND call_id = ? AND version = ?"
)
_CLAIM = (
    "UPDATE calls SET execution_status = 'in_progress', attempts = attempts + 1, "
    "version = version + 1, lease_owner = ?, lease_expires_at = ?, updated_at = ? "
    "WHERE rowid IN (SELECT rowid FROM calls WHERE execution_status = 'pending' "
    "AND scheduled_timestamp <= ? ORDER BY scheduled_timestamp LIMIT ?) "
    f"RETURNING {_CALL_COLUMNS}"
)

# Like _CLAIM, but an organization's due calls are numbered in time order and only those that
# keep its in-progress count within the limit are taken.
_CLAIM_LIMITED = (
    "UPDATE calls SET execution_status = 'in_progress', attempts = attempts + 1, "
    "version = version + 1, lease_owner = ?, lease_expires_at = ?, updated_at = ? "
    "WHERE rowid IN ("
    " SELECT due.rowid FROM ("
    "  SELECT rowid, organization_id, scheduled_timestamp, ROW_NUMBER() OVER ("
    "   PARTITION BY organization_id ORDER BY scheduled_timestamp, call_id) AS n"
    "  FROM calls WHERE execution_status = 'pending' AND scheduled_timestamp <= ?) AS due"
    " LEFT JOIN (SELECT organization_id, COUNT(*) AS busy FROM calls"
    "  WHERE execution_status = 'in_progress' GROUP BY organization_id) AS running"
    " ON running.organization_id = due.organization_id"
    " WHERE due.n + COALESCE(running.busy, 0) <= ?"
    " ORDER BY due.scheduled_timestamp LIMIT ?) "
    f"RETURNING {_CALL_COLUMNS}"
)


def _locked(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds a lock (worth waiting for), not a real error."""
    return "locked" in str(exc) or "busy" in str(exc)


# A row holds an enum member's ``_value_``: the attribute ``.value`` reads, without the
# property's Python call (a fifth of a microsecond, several times per change).


def _call_row(call: Call) -> tuple[Any, ...]:
    return (
        call.organization_id,
        call.call_id,
        call.scheduled_timestamp,
        call.execution_status._value_,
        call.timezone,
        _json.dumps(call.payload),
        call.attempts,
        call.reschedule_count,
        call.version,
        call.created_at,
        call.updated_at,
        call.lease_owner,
        call.lease_expires_at,
        None if call.outcome is None else _json.dumps(call.outcome),
    )


_STATUSES = {status.value: status for status in ExecutionStatus}  # faster than ExecutionStatus(...)


def _call_from_row(row: Sequence[Any]) -> Call:
    return Call(
        organization_id=row[0],
        call_id=row[1],
        scheduled_timestamp=row[2],
        execution_status=_STATUSES[row[3]],
        timezone=row[4],
        payload=_json.loads(row[5]),
        attempts=row[6],
        reschedule_count=row[7],
        version=row[8],
        created_at=row[9],
        updated_at=row[10],
        lease_owner=row[11],
        lease_expires_at=row[12],
        outcome=None if row[13] is None else _json.loads(row[13]),
    )


def _event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.organization_id,
        event.call_id,
        event.type._value_,
        event.timestamp,
        event.event,
        _json.dumps(event.data),
        event.source._value_,
    )


def _prepare_insert(call: Call, event: Event) -> Callable[[sqlite3.Connection], Call | None]:
    """The insert of a new ``call`` and its creation event, ready to run in a write."""
    row, event_row = _call_row(call), _event_row(event)

    def work(conn: sqlite3.Connection) -> Call | None:
        try:
            conn.execute(_INSERT_CALL, row)
        except sqlite3.IntegrityError:  # the organization has a call with this id: nothing written
            return None
        conn.execute(_INSERT_EVENT, event_row)
        return call

    return work


@attrs.frozen(eq=False)
class _Update:
    """The conditional update of ``call`` and the insert of its events, ready to run in a write:
    alone (calling it), or with other calls' updates in a few statements (:func:`_run_updates`)."""

    call: Call
    params: tuple[Any, ...]  # those of _UPDATE_CALL: the new values, then the key and expected version
    event_rows: list[tuple[Any, ...]]

    def __call__(self, conn: sqlite3.Connection) -> Call:
        if conn.execute(_UPDATE_CALL, self.params).rowcount != 1:
            call = self.call
            exists = conn.execute(
                "SELECT 1 FROM calls WHERE organization_id = ? AND call_id = ?",
                (call.organization_id, call.call_id),
            ).fetchone()
            raise Conflict(call.call_id) if exists else CallNotFound(call.call_id)
        if len(self.event_rows) == 1:  # the common case: execute costs less than executemany
            conn.execute(_INSERT_EVENT, self.event_rows[0])
        else:
            conn.executemany(_INSERT_EVENT, self.event_rows)
        return self.call


def _prepare_update(call: Call, expected_version: int, events: Sequence[Event]) -> _Update:
    """The conditional update of ``call`` and the insert of its events, ready to run in a write."""
    if call.version != expected_version + 1:
        raise Conflict(call.call_id, "the new version must be the expected version + 1")
    row = _call_row(call)
    params = (*row[2:], call.organization_id, call.call_id, expected_version)
    params = params[:7] + params[8:]  # created_at is never updated
    return _Update(call, params, [_event_row(e) for e in events])


#: The largest number of rows one merged statement takes (:func:`_run_updates`).
_MERGED_ROWS = 64


@functools.cache
def _update_calls_sql(rows: int) -> str:
    """``_UPDATE_CALL`` for ``rows`` calls at once: the new values come from a ``VALUES`` table
    joined to the calls on their key and expected version (one primary-key lookup each)."""
    values = ", ".join(["(" + ", ".join("?" * 14) + ")"] * rows)
    names = [
        "scheduled_timestamp",
        "execution_status",
        "timezone",
        "payload",
        "attempts",
        "reschedule_count",
        "version",
        "updated_at",
        "lease_owner",
        "lease_expires_at",
        "outcome",
        "organization_id",
        "call_id",
        "expected_version",
    ]
    columns = ", ".join(f"column{n} AS {name}" for n, name in enumerate(names, 1))
    assignments = ", ".join(f"{name} = v.{name}" for name in names[:11])
    # It starts with UPDATE, so that the cursor's rowcount counts the rows it changed.
    return (
        f"UPDATE calls SET {assignments} FROM (SELECT {columns} FROM (VALUES {values})) AS v "
        "WHERE calls.organization_id = v.organization_id AND calls.call_id = v.call_id "
        "AND calls.version = v.expected_version"
    )


@functools.cache
def _insert_events_sql(rows: int) -> str:
    """``_INSERT_EVENT`` for ``rows`` events at once."""
    return _INSERT_EVENT.replace("(?, ?, ?, ?, ?, ?, ?)", ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows))


def _in_merged_statements(
    conn: sqlite3.Connection, sql: Callable[[int], str], rows: list[tuple[Any, ...]]
) -> int:
    """Run ``rows`` through the statements ``sql(n)`` takes them in, in chunks whose sizes are
    powers of two (so that a few statement texts serve every count); the rows they changed."""
    changed = 0
    start = 0
    while start < len(rows):
        size = min(_MERGED_ROWS, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        changed += conn.execute(sql(size), [value for row in chunk for value in row]).rowcount
        start += size
    return changed


def _run_updates(conn: sqlite3.Connection, updates: Sequence[_Update]) -> bool:
    """Several calls' updates (of distinct calls) and their events in a few statements instead of
    two each, which matters where every statement gives other threads the interpreter.
    ``False`` if one of them matched no row (a conflict): the caller undoes what this wrote."""
    if _in_merged_statements(conn, _update_calls_sql, [u.params for u in updates]) != len(updates):
        return False
    _in_merged_statements(conn, _insert_events_sql, [row for u in updates for row in u.event_rows])
    return True


def _prepare_updates(
    changes: Sequence[tuple[Call, int, Sequence[Event]]],
) -> Callable[[sqlite3.Connection], list[Call | CallScheduleError]]:
    """Several changes ready to run in one write; a refused one (a conflict) leaves the others
    in place. No savepoint is needed for that: a change is refused by its conditional update
    matching no row, before it writes anything; any other error fails the whole write."""
    updates: list[_Update | CallScheduleError] = []
    for call, expected_version, events in changes:
        try:
            updates.append(_prepare_update(call, expected_version, events))
        except Conflict as exc:
            updates.append(exc)

    def work(conn: sqlite3.Connection) -> list[Call | CallScheduleError]:
        results: list[Call | CallScheduleError] = []
        for update in updates:
            if isinstance(update, CallScheduleError):
                results.append(update)
                continue
            try:
                results.append(update(conn))
            except (Conflict, CallNotFound) as exc:
                results.append(exc)
        return results

    return work


def _prepare_claim(
    now: int,
    now_ms: int,
    limit: int,
    lease_owner: str,
    lease_expires_at: int,
    organization_limit: int | None,
) -> Callable[[sqlite3.Connection], list[Call]]:
    """The claim of :meth:`SQLiteStore.claim_due` and its events, ready to run in a write."""

    def work(conn: sqlite3.Connection) -> list[Call]:
        if organization_limit is None:
            rows = conn.execute(_CLAIM, (lease_owner, lease_expires_at, now_ms, now, limit))
        else:
            rows = conn.execute(
                _CLAIM_LIMITED,
                (lease_owner, lease_expires_at, now_ms, now, organization_limit, limit),
            )
        # RETURNING does not keep the subquery's order; callers get earliest first.
        claimed = sorted(
            (_call_from_row(r) for r in rows.fetchall()),
            key=lambda c: (c.scheduled_timestamp, c.call_id),
        )
        conn.executemany(_INSERT_EVENT, [_event_row(_events.claimed(c, now_ms)) for c in claimed])
        return claimed

    return work


@attrs.define
class _Pending:
    """One change waiting for the group commit that carries it.

    ``turn``, held from the start, is given to a thread that must wait for another's commit
    and released once, for it alone: when its change is done, or when it is to commit the queue
    next. Only that thread is woken, not every writer.
    """

    work: Callable[[sqlite3.Connection], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    turn: threading.Lock | None = None
    leads: bool = False  # its thread was handed the writer: it commits the queue next


def _taken(lock: threading.Lock) -> threading.Lock:
    lock.acquire()
    return lock


def _distinct_updates(batch: list[_Pending]) -> list[_Pending]:
    """The changes of ``batch`` that are plain updates, the first for each call (a later change
    of the same call must run after it, on its own)."""
    seen: set[tuple[str, str]] = set()
    updates = []
    for pending in batch:
        work = pending.work
        if isinstance(work, _Update):
            key = (work.call.organization_id, work.call.call_id)
            if key not in seen:
                seen.add(key)
                updates.append(pending)
    return updates


class _Relocked(Exception):
    """A transaction undone to drop a change that failed halfway could not begin again at once
    (another process took the lock): the changes left to write."""

    def __init__(self, remaining: list[_Pending]) -> None:
        super().__init__("the write lock was taken meanwhile")
        self.remaining = remaining


@attrs.define(eq=False)
class _LoopBatch:
    """Changes an event loop submitted (:meth:`SQLiteStore.update_call_async`) for one
    transaction, each with the future its caller awaits."""

    loop: asyncio.AbstractEventLoop
    changes: list[tuple[_Pending, asyncio.Future[Any]]] = attrs.field(factory=list)


@attrs.define
class SQLiteStore(Store):
    """A store in one SQLite file; see the module docstring for its concurrency and durability."""

    serves_event_loop = True

    path: str
    synchronous: str = "full"
    busy_timeout_ms: int = 30_000

    _writer: sqlite3.Connection = attrs.field(init=False)
    _idle_readers: list[sqlite3.Connection] = attrs.field(factory=list, init=False)
    _readers_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _queue: list[_Pending] = attrs.field(factory=list, init=False)
    _committing: bool = attrs.field(default=False, init=False)
    # The writer's state (_queue, _committing, _closed) is guarded by _lock. close() waits on
    # _cond for the commit in progress; elsewhere the lock is taken bare (no Python frames).
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _cond: threading.Condition = attrs.field(
        default=attrs.Factory(lambda self: threading.Condition(self._lock), takes_self=True), init=False
    )
    _loop_batches: dict[asyncio.AbstractEventLoop, _LoopBatch] = attrs.field(factory=dict, init=False)
    _waiting_batches: list[_LoopBatch] = attrs.field(factory=list, init=False)
    _committer: threading.Thread | None = attrs.field(default=None, init=False)
    _commits: queue.SimpleQueue[_LoopBatch | None] = attrs.field(factory=queue.SimpleQueue, init=False)

    def __attrs_post_init__(self) -> None:
        if self.synchronous not in ("full", "normal", "extra"):
            raise InvalidInput("synchronous", "expected full, normal or extra")
        self._writer = self._connect()
        self._migrate()
        self._writer = self._writer_connection(self._writer)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (``memory://`` for no file)."""
        parsed = urllib.parse.urlsplit(url)
        path = urllib.parse.unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        if not path or path == ":memory:":
            raise InvalidInput("url", f"{url!r} names no file (expected sqlite:///calls.db)")
        options = dict(urllib.parse.parse_qsl(parsed.query))
        busy_timeout = options.get("busy_timeout", "30000")
        if not busy_timeout.isdigit():
            raise InvalidInput("busy_timeout", f"expected milliseconds, got {busy_timeout!r}")
        return cls(
            path=path,
            synchronous=options.get("synchronous", "full").lower(),
            busy_timeout_ms=int(busy_timeout),
        )

    def _connect(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    @staticmethod
    def _writer_connection(conn: sqlite3.Connection) -> sqlite3.Connection:
        """``conn`` made the writer: no busy timeout, so an event loop's ``BEGIN`` is one
        statement that fails at once if another process holds the write lock (the batch then
        goes to a thread), not three that turn the timeout off and on around it. A thread that
        meets the lock turns the timeout on while it waits (:meth:`_begin`). Once a transaction
        has begun, nothing in it waits."""
        conn.execute("PRAGMA busy_timeout = 0")
        return conn

    def _retry_locked(self, action: Callable[[], T]) -> T:
        """Run ``action``, retrying while another process holds a lock past the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self) -> None:
        db = Database(self._writer)

        def apply() -> None:
            # Another process may record the same migration first; IF NOT EXISTS keeps it safe.
            with contextlib.suppress(sqlite3.IntegrityError):
                migrations.apply(db)

        self._retry_locked(apply)

    def schema_version(self) -> int:
        """How many migrations this database has applied."""
        with self._reader() as conn:
            return len(migrations.applied(Database(conn)))

    # -- reads: a small pool of connections, never blocked by writers (WAL) --------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """Borrow a read connection. The pool keeps at most ``MAX_IDLE_READERS`` idle, so a host
        whose threads come and go (a thread pool retiring idle threads) holds no more files
        than its peak of concurrent reads."""
        with self._readers_lock:
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._readers_lock:
                keep = len(self._idle_readers) < MAX_IDLE_READERS and not self._closed
                if keep:
                    self._idle_readers.append(conn)
            if not keep:
                conn.close()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query. It runs on the writer connection when no change is being
        written: that connection made the last commit, so its page cache is still valid, where
        a pooled reader's is emptied by every commit. Otherwise a pooled reader runs it."""
        with self._lock:  # held for the read: no change can start on the writer meanwhile
            if not self._committing and not self._closed:
                try:
                    return self._writer.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:  # retried below, without holding the lock
                    if not _locked(exc):
                        raise
        with self._reader() as conn:
            try:  # the common case first, without the retry machinery
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise
            return self._retry_locked(lambda: conn.execute(sql, params).fetchall())

    # -- writes: group commit -----------------------------------------------------------------

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` inside a committed transaction, possibly shared with other threads' work."""
        alone = False
        try:  # the writer is taken inside the try: an interrupt (Ctrl-C) then still frees it
            with self._lock:
                if not self._committing and not self._closed:  # then no change is queued either
                    self._committing = alone = True
            if alone:
                return self._write_alone(work)
        finally:
            if alone:
                self._release_writer()
        pending = _Pending(work)
        self._write_all([pending])
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[no-any-return]

    def _write_alone(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in a transaction of its own, the writer being this thread's (the common case
        of one thread writing): what :meth:`_commit_batch` does for a batch of one, without its
        bookkeeping. The caller releases the writer: changes other threads queued meanwhile
        are handed it next."""
        conn = self._writer
        try:
            self._begin(conn)
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:  # nothing of it is committed: a refused change wrote nothing, either
            self._roll_back()
            raise
        return result

    def _write_all(self, pendings: list[_Pending]) -> None:
        """Commit ``pendings`` (each its own change), sharing the commit with other threads'.

        The caller commits the queue itself unless another thread is committing; then it sleeps
        until that thread has committed its changes, or hands it the queue to commit next. Once
        the store is closed, every change is refused with :class:`StoreClosed`.
        """
        last = pendings[-1]
        with self._lock:
            if self._closed:
                for pending in pendings:
                    pending.error, pending.done = StoreClosed(), True
                return
            self._queue.extend(pendings)
            if self._committing:  # wait for that commit, or for the writer to be handed over
                turn = last.turn = _taken(threading.Lock())
                batch = None
            else:  # this thread commits the queue, its own changes in it
                self._committing = True
                batch, self._queue = self._queue, []
        if batch is None:
            turn.acquire()
            if last.done:
                return
            with self._lock:
                batch, self._queue = self._queue, []
        try:
            self._commit_batch(batch)
        finally:
            for pending in batch:
                if pending is not last and pending.turn is not None:
                    pending.turn.release()
            self._release_writer()

    def _release_writer(self, loop: asyncio.AbstractEventLoop | None = None) -> list[_LoopBatch]:
        """The committing thread is done: hand the writer to a thread whose changes are queued
        (it commits them with the others queued), else free it for event loops and close().

        The batches of changes that waited for the writer are flushed on their loops; those of
        ``loop`` are returned instead, for a callback the caller sends that loop anyway.
        """
        with self._lock:
            successor = self._queue[-1] if self._queue and not self._closed else None
            if successor is not None:
                successor.leads = True
            else:
                self._committing = False
                if self._closed:
                    self._cond.notify_all()  # close() waits for the writer to be free
                waiting, self._waiting_batches = self._waiting_batches, []
        if successor is not None:
            successor.turn.release()  # type: ignore[union-attr]  # a queued thread waits on it
            return []
        kept = []
        for batch in waiting:
            if batch.loop is loop:
                kept.append(batch)
            else:
                _call_soon_threadsafe(batch.loop, self._flush_loop_batch, batch)
        return kept

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting up to the busy timeout for another process's lock."""
        try:  # the common case first, without the retry machinery
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            # SQLite's own busy handler polls at 1, 2, 5, 10... ms, finer than _retry_locked.
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            try:
                self._retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
            finally:
                conn.execute("PRAGMA busy_timeout = 0")

    def _begin_again(self, conn: sqlite3.Connection) -> bool:
        self._begin(conn)
        return True

    def _begin_at_once(self, conn: sqlite3.Connection) -> bool:
        """``BEGIN IMMEDIATE`` unless another process holds the write lock: then ``False`` at
        once (the writer has no busy timeout: an event loop must not wait on the lock)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            return False
        return True

    def _commit_batch(self, batch: list[_Pending]) -> None:
        """Run every change of ``batch`` in one transaction and commit it (see :meth:`_apply`)."""
        conn = self._writer
        try:
            self._begin(conn)
            if self._apply(conn, batch, self._begin_again):
                conn.execute("COMMIT")
        except Exception as exc:
            self._abort(batch, exc)
        except BaseException:  # KeyboardInterrupt, say: this thread's, but nothing was committed
            self._abort(batch, sqlite3.OperationalError("interrupted before its commit"))
            raise
        finally:
            for pending in batch:
                pending.done = True

    def _apply(
        self, conn: sqlite3.Connection, batch: list[_Pending], begin: Callable[[sqlite3.Connection], bool]
    ) -> bool:
        """Run every change of ``batch`` in the open transaction; ``False`` if nothing is left to
        commit (every change was refused, and the transaction rolled back).

        A change that raises having written nothing (``total_changes`` unmoved: a conflict, a
        duplicate id, a statement SQLite refused whole) just gets its error: no savepoint is
        needed to keep the others. One that raises after writing part of itself is undone with
        the whole transaction, which ``begin`` opens again for the other changes; if it cannot
        (another process took the lock meanwhile), it raises :class:`_Relocked` with them.
        """
        todo = batch
        while True:
            broken = self._apply_once(conn, todo)
            if broken is None:
                break
            if conn.in_transaction:  # SQLite may have rolled it back itself (a full disk, say)
                conn.execute("ROLLBACK")
            todo = [pending for pending in todo if pending is not broken[0]]
            for pending in todo:
                pending.result = pending.error = None
            if not todo:
                return False
            if not begin(conn):
                raise _Relocked(todo)
        if all(pending.error is not None for pending in todo):
            conn.execute("ROLLBACK")
            return False
        return True

    @staticmethod
    def _apply_once(conn: sqlite3.Connection, batch: list[_Pending]) -> tuple[_Pending, BaseException] | None:
        """Run the changes of ``batch``; the first that failed after writing part of itself (the
        transaction must be undone) and its error, else ``None``.

        Updates of distinct calls run first, together in a few statements; if one of them is
        refused, or SQLite refuses the statements, they are undone and run one by one instead.
        """
        merged = _distinct_updates(batch) if len(batch) > 1 else []
        if len(merged) > 1:
            conn.execute("SAVEPOINT merged")
            try:
                applied = _run_updates(conn, [pending.work for pending in merged])  # type: ignore[misc]
            except sqlite3.Error:
                if not conn.in_transaction:  # SQLite rolled it all back (a full disk, say)
                    raise
                applied = False
            if applied:
                conn.execute("RELEASE merged")
                for pending in merged:
                    pending.result = pending.work.call  # type: ignore[attr-defined]
                done = {id(pending) for pending in merged}
                batch = [pending for pending in batch if id(pending) not in done]
            else:
                conn.execute("ROLLBACK TO merged")
                conn.execute("RELEASE merged")
        for pending in batch:
            written = conn.total_changes
            try:
                pending.result = pending.work(conn)
            except (CallScheduleError, sqlite3.Error) as exc:
                pending.error = exc
                if conn.total_changes != written or not conn.in_transaction:
                    return pending, exc
        return None

    def _abort(self, batch: list[_Pending], exc: Exception) -> None:
        """The transaction failed as a whole (its ``COMMIT``, say): none of its changes is
        durable, and every one gets ``exc`` before anything else can go wrong. Then roll back."""
        for pending in batch:
            pending.result, pending.error = None, exc
        self._roll_back()

    def _roll_back(self) -> None:
        """Undo the writer's open transaction, if any; a writer connection that cannot even do
        that is replaced, so the next write starts clean."""
        try:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
        except Exception:
            if self._closed:
                return
            logger.exception("SQLite store %s: rollback failed; reopening the writer connection", self.path)
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = self._writer_connection(self._connect())

    # -- writes from an event loop: its changes of one turn in one transaction ------------------

    async def _write_async(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a committed transaction shared with the other changes this event loop
        submits in the same turn; the loop never waits on an fsync or on another process's lock.

        The loop runs the changes' statements itself (microseconds each), and the committer
        thread runs the ``COMMIT`` and its fsync, then resolves the futures. While a commit is
        in progress the next turns' changes gather for the commit after it. If another process
        holds the write lock, the batch goes through :meth:`_write_all` in a thread instead.
        A caller cancelled while it waits does not undo its change: it is committed all the same.
        """
        loop = asyncio.get_running_loop()
        batch = self._loop_batches.get(loop)
        if batch is None:  # the first change of this turn: flush at the end of the turn
            batch = self._loop_batches[loop] = _LoopBatch(loop)
            loop.call_soon(self._flush_loop_batch, batch)
        future: asyncio.Future[T] = loop.create_future()
        batch.changes.append((_Pending(work), future))
        return await future

    def _flush_loop_batch(self, batch: _LoopBatch) -> None:
        """On the batch's loop: apply its changes (at most ``MAX_LOOP_BATCH``; the rest wait for
        the next commit) and hand the commit to the committer thread."""
        with self._lock:
            closed = self._closed
            if closed:
                changes, batch.changes = batch.changes, []
            elif self._committing:  # flushed again once that commit ends
                self._waiting_batches.append(batch)
                return
            else:
                self._committing = True
                changes, batch.changes = batch.changes[:MAX_LOOP_BATCH], batch.changes[MAX_LOOP_BATCH:]
            if batch.changes:
                self._waiting_batches.append(batch)  # the rest: flushed once this commit ends
            else:
                del self._loop_batches[batch.loop]  # changes submitted from now on make a new batch
        if closed:
            self._resolve(changes, StoreClosed())
            return
        pendings = [pending for pending, _ in changes]
        handed_over = began = False
        try:
            began = self._begin_at_once(self._writer)
            if began and self._apply(self._writer, pendings, self._begin_at_once):
                self._start_committer()
                self._commits.put(_LoopBatch(batch.loop, changes))
                handed_over = True
        except _Relocked as relocked:  # a change failed halfway; the others wait for the lock
            began, pendings = False, relocked.remaining
        except Exception as exc:
            began = True  # nothing is left of the transaction: every change gets the error
            self._abort(pendings, exc)
        finally:
            if not handed_over:
                self._release_writer()
        if handed_over:
            return
        if began:  # nothing to commit: a lone change refused, or the transaction failed
            self._resolve(changes)
            return
        # Another process is writing: wait for its lock in a thread, not on the loop.
        blocking = batch.loop.run_in_executor(None, self._write_all, pendings)
        blocking.add_done_callback(lambda done: self._resolve(changes, done.exception()))

    def _start_committer(self) -> None:
        if self._committer is None:
            self._committer = threading.Thread(
                target=self._commit_loop, name="callschedule-sqlite-commit", daemon=True
            )
            self._committer.start()

    def _commit_loop(self) -> None:
        """The committer thread: ``COMMIT`` the transactions event loops prepared, in order.
        Whatever happens, the writer is released and every future of the batch resolved."""
        while (batch := self._commits.get()) is not None:
            pendings = [pending for pending, _ in batch.changes]
            flushes: list[_LoopBatch] = []
            try:
                self._writer.execute("COMMIT")
            except Exception as exc:
                self._abort(pendings, exc)
            finally:
                try:
                    flushes = self._release_writer(batch.loop)
                finally:  # one wake-up of the loop for both: each costs the loop a thread switch
                    _call_soon_threadsafe(batch.loop, self._after_loop_commit, batch.changes, flushes)

    def _after_loop_commit(
        self, changes: list[tuple[_Pending, asyncio.Future[Any]]], flushes: list[_LoopBatch]
    ) -> None:
        """On the loop, once its transaction is committed: begin the next one with the changes
        that gathered meanwhile (its fsync then overlaps the answers), then answer these."""
        try:
            for waiting in flushes:
                self._flush_loop_batch(waiting)
        finally:
            self._resolve(changes)

    @staticmethod
    def _resolve(
        changes: list[tuple[_Pending, asyncio.Future[Any]]], error: BaseException | None = None
    ) -> None:
        """On the loop: answer each change's caller with its result or error."""
        for pending, future in changes:
            if future.done():  # its caller was cancelled meanwhile
                continue
            failure = error or pending.error
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(pending.result)

    # -- the Store contract -------------------------------------------------------------------

    def insert_call(self, call: Call, event: Event) -> Call | None:
        return self._write(_prepare_insert(call, event))

    def get_call(self, organization_id: str, call_id: str) -> Call | None:
        rows = self._read(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE organization_id = ? AND call_id = ?",
            (organization_id, call_id),
        )
        return _call_from_row(rows[0]) if rows else None

    def update_call(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        update = _prepare_update(call, expected_version, events)
        return self._write(update)

    async def update_call_async(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        """:meth:`update_call` from an event loop: the change joins the loop's next group commit."""
        return await self._write_async(_prepare_update(call, expected_version, events))

    async def insert_call_async(self, call: Call, event: Event) -> Call | None:
        """:meth:`insert_call` from an event loop: the change joins the loop's next group commit."""
        return await self._write_async(_prepare_insert(call, event))

    def update_calls(
        self, changes: Sequence[tuple[Call, int, Sequence[Event]]]
    ) -> list[Call | CallScheduleError]:
        """Every change in one transaction, each refused on its own: one commit for the batch."""
        return self._write(_prepare_updates(changes))

    def list_calls(
        self,
        organization_id: str,
        *,
        statuses: Sequence[ExecutionStatus] = (),
        scheduled_from: int | None = None,
        scheduled_to: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[Call]:
        where = ["organization_id = ?"]
        params: list[Any] = [organization_id]
        if statuses:
            where.append(f"execution_status IN ({', '.join('?' * len(statuses))})")
            params.extend(s.value for s in statuses)
        if scheduled_from is not None:
            where.append("scheduled_timestamp >= ?")
            params.append(scheduled_from)
        if scheduled_to is not None:
            where.append("scheduled_timestamp <= ?")
            params.append(scheduled_to)
        if after is not None:
            where.append("(scheduled_timestamp, call_id) > (?, ?)")
            params.extend(after)
        params.append(limit)
        rows = self._read(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE {' AND '.join(where)} "
            "ORDER BY scheduled_timestamp, call_id LIMIT ?",
            params,
        )
        return [_call_from_row(r) for r in rows]

    def events(self, organization_id: str, call_id: str) -> list[Event]:
        rows = self._read(
            "SELECT call_id, organization_id, type, timestamp, event, data, source FROM events "
            "WHERE organization_id = ? AND call_id = ? ORDER BY id",
            (organization_id, call_id),
        )
        return [
            Event(
                call_id=r[0],
                organization_id=r[1],
                type=EventType(r[2]),
                timestamp=r[3],
                event=r[4],
                data=_json.loads(r[5]),
                source=Source(r[6]),
            )
            for r in rows
        ]

    def claim_due(
        self,
        *,
        now: int,
        now_ms: int,
        limit: int,
        lease_owner: str,
        lease_expires_at: int,
        organization_limit: int | None = None,
    ) -> list[Call]:
        return self._write(
            _prepare_claim(now, now_ms, limit, lease_owner, lease_expires_at, organization_limit)
        )

    @_one_transaction_round
    def update_calls_and_claim_due(
        self,
        changes: Sequence[tuple[Call, int, Sequence[Event]]],
        *,
        now: int,
        now_ms: int,
        limit: int,
        lease_owner: str,
        lease_expires_at: int,
        organization_limit: int | None = None,
    ) -> tuple[list[Call | CallScheduleError], list[Call]]:
        """The changes (each refused on its own) and then the claim, in one transaction: one
        commit where the two operations would make two (a subclass that overrides either gets
        them called as it defined them)."""
        updates = _prepare_updates(changes)
        claim = _prepare_claim(now, now_ms, limit, lease_owner, lease_expires_at, organization_limit)

        def work(conn: sqlite3.Connection) -> tuple[list[Call | CallScheduleError], list[Call]]:
            results = updates(conn) if changes else []
            return results, claim(conn) if limit > 0 else []

        return self._write(work)

    def expired_leases(self, *, now_ms: int, limit: int) -> list[Call]:
        rows = self._read(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE execution_status = 'in_progress' "
            "AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?",
            (now_ms, limit),
        )
        return [_call_from_row(r) for r in rows]

    def next_due_timestamp(self) -> int | None:
        rows = self._read("SELECT MIN(scheduled_timestamp) FROM calls WHERE execution_status = 'pending'")
        return rows[0][0] if rows else None

    def save_api_key(self, key: ApiKey) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (api_key, organization_id, secret_hash, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key.api_key, key.organization_id, key.secret_hash, key.created_at, key.revoked_at),
            )

        self._write(work)

    def get_api_key(self, api_key: str) -> ApiKey | None:
        rows = self._read(
            "SELECT api_key, organization_id, secret_hash, created_at, revoked_at FROM api_keys "
            "WHERE api_key = ?",
            (api_key,),
        )
        return ApiKey(*rows[0]) if rows else None

    def revoke_api_key(self, api_key: str, at_ms: int) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE api_key = ? AND revoked_at IS NULL",
                (at_ms, api_key),
            )
            return cursor.rowcount == 1

        return self._write(work)

    def close(self) -> None:
        with self._cond:
            self._closed = True  # every change is refused from now on; idle readers are not kept
            # A thread handed the writer commits the whole queue (others may have queued behind it).
            handed_over = any(pending.leads for pending in self._queue)
            if not handed_over:  # queued, and no thread is about to commit them: refused
                for pending in self._queue:
                    pending.error, pending.done = StoreClosed(), True
                    if pending.turn is not None:
                        pending.turn.release()
                self._queue.clear()
            self._cond.notify_all()
            while self._committing:  # the commit in progress (a thread's or an event loop's) ends
                self._cond.wait()
            committer = self._committer
        if committer is not None:
            self._commits.put(None)
            committer.join()
        with self._readers_lock:
            for conn in self._idle_readers:
                conn.close()
            self._idle_readers.clear()
        self._writer.close()


def _call_soon_threadsafe(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Schedule ``callback`` on ``loop`` from any thread; nothing if the loop is closed (its
    callers are gone with it)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


@hookimpl(trylast=True)
def callschedule_store(url: str) -> Store | None:
    """``sqlite:///calls.db`` (relative), ``sqlite:////var/lib/calls.db`` (absolute)."""
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url)
    return None
