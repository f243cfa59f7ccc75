"""The PostgreSQL store (psycopg 3). Imported only when a ``postgresql://`` URL is opened.

Many processes on many machines share one database:

- every change of a call and its events are one transaction; reschedule, cancel, outcome and
  claim are conditional updates on the stored version, so of two racing writers exactly one wins;
- claims lock due rows with ``FOR UPDATE SKIP LOCKED``, so concurrent workers take disjoint calls
  without waiting on each other;
- a call that becomes pending at a time (created, moved, retried, released) sends a
  ``NOTIFY`` in the same transaction; :meth:`PostgresStore.subscribe_due` listens on its own
  connection and reconnects with backoff when the server restarts;
- when a pooled connection turns out dead (server restart, ``pg_terminate_backend``), the pool's
  idle connections are checked and the dead ones replaced; the operation, whose transaction
  cannot have committed, runs again on a live connection. When the connection dies during the
  commit itself, the store reads back what is stored to learn whether it committed (a
  conditional update's new version exists only if it did) and answers accordingly; a claim whose
  commit is in doubt answers no calls, and whatever it took is recovered when its lease expires;
- time: see :class:`DatabaseClock`. Every process reads the database server's clock.

URL options (removed before the URL reaches libpq, which gets everything else, ``sslmode``,
``options`` and so on):

``schema``
    the schema holding the tables (created if missing; default: the connection's
    ``current_schema()``, usually ``public``).
``pool_min_size``, ``pool_max_size``
    connections kept open / at most (default 1 and 10).
``pool_timeout``
    seconds to wait for a connection before failing (default 30).
``clock``
    ``database`` (default: read the server's clock) or ``local`` (this machine's clock).
``migrate``
    ``true`` (default: bring the schema up to date on open) or ``false`` (refuse to open an
    out-of-date schema; for deployments that migrate from one job).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import attrs
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from callschedule import _events, _json
from callschedule._clock import Clock
from callschedule._model import ApiKey, Call, Event, EventType, ExecutionStatus, Source
from callschedule.abc import Store, _one_transaction_round
from callschedule.exceptions import CallNotFound, CallScheduleError, Conflict, InvalidInput

T = TypeVar("T")

#: A batch's results, each the stored call or why it was refused.
_Results: TypeAlias = "list[Call | CallScheduleError]"
#: A batch ready to run in a transaction, and the list it leaves its results in.
_BatchWork: TypeAlias = "tuple[Callable[[psycopg.Connection[Any]], _Results], _Results]"

logger = logging.getLogger("callschedule.postgres")

#: (version, name, SQL) in order; ``{s}`` is the schema. Never edit a released migration: add one.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "initial",
        """
        CREATE TABLE {s}.calls (
            organization_id text COLLATE "C" NOT NULL,
            call_id text COLLATE "C" NOT NULL,
            scheduled_timestamp bigint NOT NULL,
            execution_status text NOT NULL,
            timezone text,
            payload json NOT NULL,
            attempts integer NOT NULL,
            reschedule_count integer NOT NULL,
            version bigint NOT NULL,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            lease_owner text,
            lease_expires_at bigint,
            outcome json,
            PRIMARY KEY (organization_id, call_id)
        );
        CREATE INDEX calls_pending_due ON {s}.calls (scheduled_timestamp, call_id)
            WHERE execution_status = 'pending';
        CREATE INDEX calls_by_org ON {s}.calls (organization_id, scheduled_timestamp, call_id);
        CREATE INDEX calls_leases ON {s}.calls (lease_expires_at)
            WHERE execution_status = 'in_progress';
        CREATE TABLE {s}.events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            organization_id text COLLATE "C" NOT NULL,
            call_id text COLLATE "C" NOT NULL,
            type text NOT NULL,
            timestamp bigint NOT NULL,
            event text NOT NULL,
            data json NOT NULL,
            source text NOT NULL
        );
        CREATE INDEX events_by_call ON {s}.events (organization_id, call_id, id);
        CREATE TABLE {s}.api_keys (
            api_key text PRIMARY KEY,
            organization_id text NOT NULL,
            secret_hash text NOT NULL,
            created_at bigint NOT NULL,
            revoked_at bigint
        );
        """,
    ),
)

#: The schema version a database is at after opening: the highest applied migration.
SCHEMA_VERSION = MIGRATIONS[-1][0]

_CALL_COLUMNS = (
    "organization_id, call_id, scheduled_timestamp, execution_status, timezone, payload, "
    "attempts, reschedule_count, version, created_at, updated_at, lease_owner, "
    "lease_expires_at, outcome"
)

#: Failures after which the transaction is known not to have committed, so it can run again.
_RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
_ATTEMPTS = 4

#: URL query options the store reads itself; the rest go to libpq.
_OPTIONS = frozenset({"schema", "pool_min_size", "pool_max_size", "pool_timeout", "clock", "migrate"})
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _real_time() -> float:
    # The machine's real clock, which freezegun does not patch: the offset to the server is
    # a property of the two machines, not of a test's frozen moment.
    return time.clock_gettime(time.CLOCK_REALTIME)


def _real_monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@attrs.define
class _Offset:
    seconds: float = 0.0
    next_measure: float = 0.0
    lock: threading.Lock = attrs.field(factory=threading.Lock)


@attrs.frozen
class DatabaseClock(Clock):
    """This machine's clock corrected by its offset to the database server's clock.

    When machines disagree, the database server's clock decides: when a call is due, when a
    lease expires and what "now" the rules see. Reading ``now()`` from the server on every
    clock read would cost a round trip, so the offset between the two clocks is measured
    (``clock_timestamp()`` against the midpoint of the round trip) when the store opens and
    every ``refresh_every`` seconds, and added to the local clock. An offset within the
    measurement's own uncertainty (half the round trip, plus a millisecond) is noise and
    counts as zero, so on one machine, or with clocks kept by NTP, this is the local clock
    exactly (and freezegun still freezes it).
    """

    measure: Callable[[], tuple[float, float]]
    refresh_every: float = 60.0
    _offset: _Offset = attrs.field(factory=_Offset, init=False)

    @property
    def offset(self) -> float:
        """Seconds to add to this machine's clock to read the server's, as last measured."""
        state = self._offset
        if _real_monotonic() >= state.next_measure and state.lock.acquire(blocking=False):
            try:
                self.refresh()
            finally:
                state.lock.release()
        return state.seconds

    def refresh(self) -> None:
        """Measure the offset now (on failure keep the last one and try again in 5 seconds)."""
        state = self._offset
        try:
            offset, round_trip = self.measure()
        except (psycopg.Error, CallScheduleError) as exc:
            logger.warning("could not read the database clock, keeping the last offset: %s", exc)
            state.next_measure = _real_monotonic() + 5.0
            return
        state.seconds = 0.0 if abs(offset) <= round_trip / 2 + 0.001 else offset
        state.next_measure = _real_monotonic() + self.refresh_every

    def now(self) -> float:
        return time.time() + self.offset

    def now_s(self) -> int:
        return int(self.now())

    def now_ms(self) -> int:
        return int(self.now() * 1000)


def _call_params(call: Call) -> dict[str, Any]:
    return {
        "organization_id": call.organization_id,
        "call_id": call.call_id,
        "scheduled_timestamp": call.scheduled_timestamp,
        "execution_status": call.execution_status.value,
        "timezone": call.timezone,
        "payload": _json.dumps(call.payload),
        "attempts": call.attempts,
        "reschedule_count": call.reschedule_count,
        "version": call.version,
        "created_at": call.created_at,
        "updated_at": call.updated_at,
        "lease_owner": call.lease_owner,
        "lease_expires_at": call.lease_expires_at,
        "outcome": None if call.outcome is None else _json.dumps(call.outcome),
    }


def _call_from_row(row: Sequence[Any]) -> Call:
    # json columns come back already parsed by psycopg.
    return Call(
        organization_id=row[0],
        call_id=row[1],
        scheduled_timestamp=row[2],
        execution_status=ExecutionStatus(row[3]),
        timezone=row[4],
        payload=row[5],
        attempts=row[6],
        reschedule_count=row[7],
        version=row[8],
        created_at=row[9],
        updated_at=row[10],
        lease_owner=row[11],
        lease_expires_at=row[12],
        outcome=row[13],
    )


def _event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.organization_id,
        event.call_id,
        event.type.value,
        event.timestamp,
        event.event,
        _json.dumps(event.data),
        event.source.value,
    )


def _flag(options: dict[str, str], name: str, default: bool) -> bool:
    value = options.pop(name, None)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidInput("url", f"option {name}={value!r}: expected true or false")


def _number(options: dict[str, str], name: str, default: float) -> float:
    value = options.pop(name, None)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput("url", f"option {name}={value!r}: expected a number") from None
    if number <= 0:
        raise InvalidInput("url", f"option {name}={value!r}: expected a positive number")
    return number


def _recording_xid(
    work: Callable[[psycopg.Connection[Any]], T],
) -> tuple[Callable[[psycopg.Connection[Any]], T], list[int]]:
    """``work`` that first notes its transaction's id in the list returned with it, for asking
    the server whether it committed when the answer to its ``COMMIT`` is lost."""
    xid: list[int] = []

    def recorded(conn: psycopg.Connection[Any]) -> T:
        row = conn.execute("SELECT txid_current()").fetchone()
        assert row is not None
        xid[:] = [row[0]]
        return work(conn)

    return recorded, xid


def _claim_lost(lease_owner: str) -> None:
    """A claim's commit answer was lost. Whatever it took (if it committed) was never handed to
    anyone: its lease expires and the worker's recovery gives it a new attempt. Taking it now
    could run a call twice, should this worker claim twice within one millisecond."""
    logger.warning(
        "connection lost while committing a claim; calls it may have claimed by %s "
        "will be recovered when their lease expires",
        lease_owner,
    )


def _channel(schema: str) -> str:
    name = f"callschedule_due_{schema}"
    if len(name.encode()) > 63:  # the server's identifier limit
        name = "callschedule_due_" + hashlib.sha1(schema.encode()).hexdigest()[:20]
    return name


class _DueListener:
    """A thread on its own connection that LISTENs and hands each notice to the subscribers.

    When the connection drops it reconnects with backoff (0.1 s doubling to 5 s); after every
    (re)connection it tells the subscribers the earliest pending time, which covers whatever
    was announced while it was away.
    """

    def __init__(self, conninfo: str, channel: str, next_due: Callable[[], int | None]) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._next_due = next_due
        self._listeners: list[Callable[[int], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: Set while the LISTEN connection is up.
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="callschedule-listen", daemon=True)
        self._thread.start()

    def add(self, listener: Callable[[int], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: Callable[[int], None]) -> bool:
        """Remove ``listener``; ``True`` if none is left."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
            return not self._listeners

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _dispatch(self, timestamp: int) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(timestamp)
            except Exception:
                logger.exception("due listener failed")

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.connected.set()
                    backoff = 0.1
                    missed = self._next_due()
                    if missed is not None:
                        self._dispatch(missed)
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            try:
                                timestamp = int(notice.payload)
                            except ValueError:
                                continue
                            self._dispatch(timestamp)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    logger.warning("LISTEN connection lost, reconnecting in %.1fs: %s", backoff, exc)
            except Exception:
                logger.exception("due listener stopped by an unexpected error; restarting")
            finally:
                self.connected.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)


@attrs.define
class PostgresStore(Store):
    """A store in a PostgreSQL database; see the module docstring for its guarantees and options."""

    conninfo: str
    schema: str | None = None
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 30.0
    use_database_clock: bool = True
    migrate: bool = True

    _pool: ConnectionPool = attrs.field(init=False)
    _tables: dict[str, sql.Composable] = attrs.field(init=False, factory=dict)
    _channel: str = attrs.field(init=False, default="")
    _clock: DatabaseClock | None = attrs.field(init=False, default=None)
    _listener: _DueListener | None = attrs.field(init=False, default=None)
    _listener_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise InvalidInput("url", "expected 1 <= pool_min_size <= pool_max_size")
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=self.pool_min_size,
            max_size=self.pool_max_size,
            timeout=self.pool_timeout,
            kwargs={"autocommit": True},
            name="callschedule",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=self.pool_timeout)
            self._open_schema()
            if self.use_database_clock:
                self._clock = DatabaseClock(self._measure_offset)
                self._clock.refresh()
        except BaseException:
            self._pool.close()
            raise

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Open ``postgresql://user:password@host:port/dbname?schema=...`` (options: module docs)."""
        parts = urllib.parse.urlsplit(url)
        options = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        ours = {k: options.pop(k) for k in list(options) if k in _OPTIONS}
        clock = ours.pop("clock", "database").lower()
        if clock not in ("database", "local"):
            raise InvalidInput("url", f"option clock={clock!r}: expected database or local")
        schema = ours.pop("schema", None) or None
        pool_min_size = int(_number(ours, "pool_min_size", 1))
        pool_max_size = int(_number(ours, "pool_max_size", 10))
        pool_timeout = _number(ours, "pool_timeout", 30.0)
        migrate = _flag(ours, "migrate", True)
        # Spaces as %20, not "+": libpq does not read "+" as a space (``options=-c%20x=y``).
        query = urllib.parse.urlencode(options, quote_via=urllib.parse.quote)
        conninfo = urllib.parse.urlunsplit(parts._replace(query=query))
        return cls(
            conninfo,
            schema=schema,
            pool_min_size=pool_min_size,
            pool_max_size=pool_max_size,
            pool_timeout=pool_timeout,
            use_database_clock=clock == "database",
            migrate=migrate,
        )

    # -- schema -----------------------------------------------------------------------------------

    def _open_schema(self) -> None:
        with self._pool.connection() as conn:
            if self.schema is None:
                row = conn.execute("SELECT current_schema()").fetchone()
                if row is None or row[0] is None:
                    raise InvalidInput("url", "the connection's search_path names no schema; add ?schema=")
                self.schema = str(row[0])
            s = sql.Identifier(self.schema)
            self._tables = {
                name: sql.SQL("{}.{}").format(s, sql.Identifier(name))
                for name in ("calls", "events", "api_keys", "callschedule_migrations")
            }
            self._channel = _channel(self.schema)
            with conn.transaction():
                # One process migrates at a time; the others wait here, then find it done.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"callschedule:{self.schema}"])
                if self.migrate:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
                    conn.execute(
                        sql.SQL(
                            "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
                            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                        ).format(self._tables["callschedule_migrations"])
                    )
                applied = self._applied(conn)
                newest = max(applied, default=0)
                if newest > SCHEMA_VERSION:
                    raise CallScheduleError(
                        f"the database schema {self.schema!r} is at version {newest}, newer than "
                        f"this callschedule knows ({SCHEMA_VERSION}): upgrade callschedule"
                    )
                missing = [m for m in MIGRATIONS if m[0] not in applied]
                if missing and not self.migrate:
                    raise CallScheduleError(
                        f"the database schema {self.schema!r} is at version {newest}, this "
                        f"callschedule needs {SCHEMA_VERSION}: open it once with migrate=true"
                    )
                for version, name, text in missing:
                    conn.execute(sql.SQL(text).format(s=s))
                    conn.execute(
                        sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(
                            self._tables["callschedule_migrations"]
                        ),
                        [version, name],
                    )

    def _applied(self, conn: psycopg.Connection[Any]) -> set[int]:
        exists = conn.execute(
            "SELECT to_regclass(%s)", [f'"{self.schema}".callschedule_migrations']
        ).fetchone()
        if exists is None or exists[0] is None:
            return set()
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}").format(self._tables["callschedule_migrations"])
        ).fetchall()
        return {int(r[0]) for r in rows}

    def schema_version(self) -> int:
        """The highest migration this database has applied."""
        return self._run(lambda conn: max(self._applied(conn), default=0), write=False)

    # -- running work: retries on a dead connection ------------------------------------------------

    def _run(
        self,
        work: Callable[[psycopg.Connection[Any]], T],
        *,
        write: bool = True,
        single_statement: bool = False,
        verify: Callable[[], tuple[bool, T]] | None = None,
    ) -> T:
        """Run ``work`` in one transaction (a write) or on its own (a read).

        A connection that died, a deadlock or a serialization failure *before* the commit means
        nothing was written, so the work runs again on a fresh connection (up to 4 times).

        A connection that dies *during* the commit leaves its outcome unknown. ``verify`` then
        reads the database again and answers ``(True, result)`` if the change is there, or
        ``(False, _)`` if it is not (the work runs again); without ``verify`` the error is raised.
        Conditional updates make the answer certain: the new version exists only if this write
        made it.

        ``single_statement`` work is one statement, which the server commits on its own (no
        ``BEGIN``/``COMMIT`` round trips); a connection that dies under it leaves its outcome
        unknown, so ``verify`` decides as for a commit.
        """
        attempt = 0
        while True:
            committing = False
            used: psycopg.Connection[Any] | None = None
            try:
                with self._pool.connection() as conn:
                    used = conn
                    if not write:
                        return work(conn)
                    if single_statement:
                        committing = True
                        return work(conn)
                    with conn.transaction():
                        result = work(conn)
                        committing = True
                    return result
            except PoolTimeout:
                raise
            except psycopg.OperationalError as exc:
                died = used is not None and (used.broken or used.closed)
                attempt += 1
                if died:
                    # The server restarted or cut us: its other idle connections are likely
                    # dead too. Drop them all now rather than finding them one failure at a time.
                    self._pool.check()
                if committing and died and verify is not None and attempt < _ATTEMPTS:
                    logger.warning("connection lost during a commit; checking what was written: %s", exc)
                    committed, outcome = verify()
                    if committed:
                        return outcome
                    continue
                if committing or attempt >= _ATTEMPTS or not (died or isinstance(exc, _RETRYABLE)):
                    raise
                logger.warning("database operation failed before its commit, retrying: %s", exc)
                time.sleep(0.01 * (attempt - 1))

    def _read(self, query: sql.Composed, params: Sequence[Any] = ()) -> list[Any]:
        return self._run(lambda conn: conn.execute(query, params).fetchall(), write=False)

    def _t(self, name: str) -> sql.Composable:
        return self._tables[name]

    def _q(self, text: str) -> sql.Composed:
        """``text`` with ``{calls}``, ``{events}`` and ``{api_keys}`` as schema-qualified tables."""
        return sql.SQL(text).format(**self._tables)

    def _notify_due(self, conn: psycopg.Connection[Any], timestamp: int) -> None:
        # Delivered when (and only if) the transaction commits.
        conn.execute("SELECT pg_notify(%s, %s)", [self._channel, str(timestamp)])

    def _insert_events(self, conn: psycopg.Connection[Any], events: Sequence[Event]) -> None:
        if not events:
            return
        if len(events) == 1:
            conn.execute(
                self._q(
                    "INSERT INTO {events} (organization_id, call_id, type, timestamp, event, data, "
                    "source) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ),
                _event_row(events[0]),
            )
            return
        # Several events in one statement (one round trip), ids in the order given.
        columns = [list(column) for column in zip(*(_event_row(e) for e in events), strict=True)]
        conn.execute(
            self._q(
                "INSERT INTO {events} (organization_id, call_id, type, timestamp, event, data, source) "
                "SELECT o, c, t, ts, e, d::json, s FROM unnest(%s::text[], %s::text[], %s::text[], "
                "%s::bigint[], %s::text[], %s::text[], %s::text[]) "
                "WITH ORDINALITY AS u(o, c, t, ts, e, d, s, n) "
                "ORDER BY n"
            ),
            columns,
        )

    def _measure_offset(self) -> tuple[float, float]:
        def work(conn: psycopg.Connection[Any]) -> tuple[float, float]:
            before = _real_time()
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
            after = _real_time()
            assert row is not None
            return float(row[0]) - (before + after) / 2, after - before

        return self._run(work, write=False)

    # -- the Store contract -------------------------------------------------------------------------

    def clock(self) -> Clock | None:
        """The database server's clock (:class:`DatabaseClock`), unless opened with ``clock=local``."""
        return self._clock

    def insert_call(self, call: Call, event: Event) -> Call | None:
        # One statement, so one round trip and the server's implicit transaction: the call, its
        # event and its NOTIFY are written together or not at all.
        query = self._q(
            f"WITH inserted AS (INSERT INTO {{calls}} ({_CALL_COLUMNS}) VALUES ("
            + ", ".join(f"%({c.strip()})s" for c in _CALL_COLUMNS.split(","))
            + ") ON CONFLICT (organization_id, call_id) DO NOTHING"
            " RETURNING scheduled_timestamp, execution_status), "
            "logged AS (INSERT INTO {events} (organization_id, call_id, type, timestamp, event, data, "
            "source) SELECT %(e0)s, %(e1)s, %(e2)s, %(e3)s, %(e4)s, %(e5)s, %(e6)s FROM inserted) "
            "SELECT CASE WHEN execution_status = 'pending' "
            "THEN pg_notify(%(channel)s, scheduled_timestamp::text) END FROM inserted"
        )
        params = {
            **_call_params(call),
            **{f"e{i}": value for i, value in enumerate(_event_row(event))},
            "channel": self._channel,
        }

        def work(conn: psycopg.Connection[Any]) -> Call | None:
            return call if conn.execute(query, params).fetchall() else None

        def verify() -> tuple[bool, Call | None]:
            stored = self.get_call(call.organization_id, call.call_id)
            if stored is None:
                return False, None
            return True, call if stored == call else None

        return self._run(work, single_statement=True, verify=verify)

    def get_call(self, organization_id: str, call_id: str) -> Call | None:
        rows = self._read(
            self._q(f"SELECT {_CALL_COLUMNS} FROM {{calls}} WHERE organization_id = %s AND call_id = %s"),
            (organization_id, call_id),
        )
        return _call_from_row(rows[0]) if rows else None

    def update_call(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        if call.version != expected_version + 1:
            raise Conflict(call.call_id, "the new version must be the expected version + 1")
        # One statement (one round trip, the server's implicit transaction): the conditional
        # UPDATE, the events only if it changed the call, and the NOTIFY if the call is pending.
        query = self._q(
            "WITH updated AS (UPDATE {calls} SET scheduled_timestamp = %(scheduled_timestamp)s, "
            "execution_status = %(execution_status)s, timezone = %(timezone)s, "
            "payload = %(payload)s, attempts = %(attempts)s, reschedule_count = %(reschedule_count)s, "
            "version = %(version)s, updated_at = %(updated_at)s, lease_owner = %(lease_owner)s, "
            "lease_expires_at = %(lease_expires_at)s, outcome = %(outcome)s "
            "WHERE organization_id = %(organization_id)s AND call_id = %(call_id)s "
            "AND version = %(expected_version)s RETURNING scheduled_timestamp, execution_status), "
            "logged AS (INSERT INTO {events} (organization_id, call_id, type, timestamp, event, data, "
            "source) SELECT o, c, t, ts, e, d::json, s FROM unnest(%(e0)s::text[], %(e1)s::text[], "
            "%(e2)s::text[], %(e3)s::bigint[], %(e4)s::text[], %(e5)s::text[], %(e6)s::text[]) "
            "WITH ORDINALITY AS u(o, c, t, ts, e, d, s, n) "
            "WHERE EXISTS (SELECT 1 FROM updated) ORDER BY n) "
            "SELECT CASE WHEN execution_status = 'pending' "
            "THEN pg_notify(%(channel)s, scheduled_timestamp::text) END FROM updated"
        )
        rows = [_event_row(e) for e in events]
        params = {
            **_call_params(call),
            "expected_version": expected_version,
            **{f"e{i}": [row[i] for row in rows] for i in range(7)},
            "channel": self._channel,
        }
        exists = self._q("SELECT 1 FROM {calls} WHERE organization_id = %s AND call_id = %s")

        def work(conn: psycopg.Connection[Any]) -> Call:
            if not conn.execute(query, params).fetchall():
                found = conn.execute(exists, (call.organization_id, call.call_id)).fetchone()
                raise Conflict(call.call_id) if found else CallNotFound(call.call_id)
            return call

        def verify() -> tuple[bool, Call]:
            stored = self.get_call(call.organization_id, call.call_id)
            if stored is None:
                raise CallNotFound(call.call_id)
            if stored == call:
                return True, call
            if stored.version == expected_version:
                return False, call
            raise Conflict(call.call_id)

        return self._run(work, single_statement=True, verify=verify)

    def update_calls(
        self, changes: Sequence[tuple[Call, int, Sequence[Event]]]
    ) -> list[Call | CallScheduleError]:
        """One transaction, a few statements for the whole batch: one conditional ``UPDATE`` of
        every call, one ``INSERT`` of the events of those it changed."""
        work, last = self._batch_work(changes)
        work, xid = _recording_xid(work)
        return self._run(work, verify=lambda: self._verify_batch(last, xid))

    def _batch_work(self, changes: Sequence[tuple[Call, int, Sequence[Event]]]) -> _BatchWork:
        """The work of :meth:`update_calls`, ready to run in a transaction, and the list it
        leaves its results in (what :meth:`_verify_batch` reads back after a lost commit)."""
        keys = [(call.organization_id, call.call_id) for call, _, _ in changes]
        if len(set(keys)) != len(keys):  # the same call twice: apply them in order, one by one
            return self._one_by_one_work(changes)
        results: list[Call | CallScheduleError | None] = []
        batch: list[tuple[Call, int, Sequence[Event]]] = []
        for call, expected_version, events in changes:
            if call.version != expected_version + 1:
                results.append(Conflict(call.call_id, "the new version must be the expected version + 1"))
            else:
                results.append(None)
                batch.append((call, expected_version, events))
        last: list[Call | CallScheduleError] = []
        if not batch:  # every change refused before any statement
            last[:] = [r for r in results if r is not None]
            return lambda conn: list(last), last
        names = [c.strip() for c in _CALL_COLUMNS.split(",") if c.strip() != "created_at"]
        columns: list[list[Any]] = [[] for _ in range(len(names) + 1)]
        for call, expected_version, _ in batch:
            params = _call_params(call)
            for i, name in enumerate(names):
                columns[i].append(params[name])
            columns[-1].append(expected_version)
        types = {
            "scheduled_timestamp": "bigint", "attempts": "int", "reschedule_count": "int",
            "version": "bigint", "updated_at": "bigint", "lease_expires_at": "bigint",
        }  # fmt: skip
        update = self._q(
            "UPDATE {calls} AS c SET "
            + ", ".join(
                f"{n} = u.{n}::json" if n in ("payload", "outcome") else f"{n} = u.{n}" for n in names[2:]
            )
            + " FROM unnest("
            + ", ".join(f"%s::{types.get(n, 'text')}[]" for n in names)
            + ", %s::bigint[]) AS u("
            + ", ".join(names)
            + ", expected_version) WHERE c.organization_id = u.organization_id "
            "AND c.call_id = u.call_id AND c.version = u.expected_version "
            "RETURNING c.organization_id, c.call_id"
        )
        exists = self._q(
            "SELECT organization_id, call_id FROM {calls} WHERE (organization_id, call_id) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))"
        )

        def work(conn: psycopg.Connection[Any]) -> list[Call | CallScheduleError]:
            changed = {(r[0], r[1]) for r in conn.execute(update, columns).fetchall()}
            missed = [
                (c.organization_id, c.call_id)
                for c, _, _ in batch
                if (c.organization_id, c.call_id) not in changed
            ]
            found: set[tuple[str, str]] = set()
            if missed:
                rows = conn.execute(exists, [[k[0] for k in missed], [k[1] for k in missed]]).fetchall()
                found = {(r[0], r[1]) for r in rows}
            written: list[Call | CallScheduleError] = []
            events: list[Event] = []
            due: list[int] = []
            for call, _, call_events in batch:
                key = (call.organization_id, call.call_id)
                if key in changed:
                    written.append(call)
                    events.extend(call_events)
                    if call.execution_status is ExecutionStatus.PENDING:
                        due.append(call.scheduled_timestamp)
                else:
                    written.append(Conflict(call.call_id) if key in found else CallNotFound(call.call_id))
            self._insert_events(conn, events)
            if due:
                self._notify_due(conn, min(due))
            merged = iter(written)
            out = [r if r is not None else next(merged) for r in results]
            last[:] = out
            return out

        return work, last

    def _one_by_one_work(self, changes: Sequence[tuple[Call, int, Sequence[Event]]]) -> _BatchWork:
        """Every change in one transaction, each in its own savepoint, in order."""
        updates: list[Callable[[psycopg.Connection[Any]], Call] | CallScheduleError] = []
        for call, expected_version, events in changes:
            try:
                updates.append(self._update_work(call, expected_version, events))
            except Conflict as exc:
                updates.append(exc)
        last: list[Call | CallScheduleError] = []

        def work(conn: psycopg.Connection[Any]) -> list[Call | CallScheduleError]:
            results: list[Call | CallScheduleError] = []
            for update in updates:
                if isinstance(update, CallScheduleError):
                    results.append(update)
                    continue
                try:
                    with conn.transaction():  # a savepoint: a refused change leaves the others
                        results.append(update(conn))
                except (Conflict, CallNotFound) as exc:
                    results.append(exc)
            last[:] = results
            return results

        return work, last

    def _verify_batch(
        self, last: list[Call | CallScheduleError], xid: list[int]
    ) -> tuple[bool, list[Call | CallScheduleError]]:
        """After a batch's commit answer was lost: whether it was written.

        The server says whether its transaction (``xid``) committed. Only where it no longer
        knows are the accepted changes read back: one transaction wrote them, so all are stored
        or none is (unless something changed them since, the same round's claim included).
        """
        status = self._transaction_status(xid[0]) if xid else None
        if status is not None:
            return status == "committed", list(last)
        ok = [r for r in last if isinstance(r, Call)]
        stored = [self.get_call(c.organization_id, c.call_id) for c in ok]
        if all(s == c for s, c in zip(stored, ok, strict=True)):
            return True, list(last)
        if not any(s == c for s, c in zip(stored, ok, strict=True)):
            return False, list(last)
        raise Conflict(ok[0].call_id, "a batch was half applied: cannot happen in one transaction")

    def _transaction_status(self, xid: int) -> str | None:
        """``committed`` or ``aborted`` for a transaction that ended (waiting briefly for one a
        lost connection left running), ``None`` if the server no longer knows it."""
        deadline = time.monotonic() + 5
        while True:
            (status,) = self._read(self._q("SELECT txid_status(%s)"), [xid])[0]
            if status != "in progress" or time.monotonic() > deadline:
                return None if status in (None, "in progress") else str(status)
            time.sleep(0.01)

    def _update_work(
        self, call: Call, expected_version: int, events: Sequence[Event]
    ) -> Callable[[psycopg.Connection[Any]], Call]:
        if call.version != expected_version + 1:
            raise Conflict(call.call_id, "the new version must be the expected version + 1")
        query = self._q(
            "UPDATE {calls} SET scheduled_timestamp = %(scheduled_timestamp)s, "
            "execution_status = %(execution_status)s, timezone = %(timezone)s, "
            "payload = %(payload)s, attempts = %(attempts)s, reschedule_count = %(reschedule_count)s, "
            "version = %(version)s, updated_at = %(updated_at)s, lease_owner = %(lease_owner)s, "
            "lease_expires_at = %(lease_expires_at)s, outcome = %(outcome)s "
            "WHERE organization_id = %(organization_id)s AND call_id = %(call_id)s "
            "AND version = %(expected_version)s"
        )
        params = {**_call_params(call), "expected_version": expected_version}
        exists = self._q("SELECT 1 FROM {calls} WHERE organization_id = %s AND call_id = %s")

        def work(conn: psycopg.Connection[Any]) -> Call:
            if conn.execute(query, params).rowcount != 1:
                found = conn.execute(exists, (call.organization_id, call.call_id)).fetchone()
                raise Conflict(call.call_id) if found else CallNotFound(call.call_id)
            self._insert_events(conn, events)
            if call.execution_status is ExecutionStatus.PENDING:
                self._notify_due(conn, call.scheduled_timestamp)
            return call

        return work

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
        where = ["organization_id = %s"]
        params: list[Any] = [organization_id]
        if statuses:
            where.append("execution_status = ANY(%s)")
            params.append([s.value for s in statuses])
        if scheduled_from is not None:
            where.append("scheduled_timestamp >= %s")
            params.append(scheduled_from)
        if scheduled_to is not None:
            where.append("scheduled_timestamp <= %s")
            params.append(scheduled_to)
        if after is not None:
            where.append("(scheduled_timestamp, call_id) > (%s, %s)")
            params.extend(after)
        params.append(limit)
        rows = self._read(
            self._q(
                f"SELECT {_CALL_COLUMNS} FROM {{calls}} WHERE {' AND '.join(where)} "
                "ORDER BY scheduled_timestamp, call_id LIMIT %s"
            ),
            params,
        )
        return [_call_from_row(r) for r in rows]

    def events(self, organization_id: str, call_id: str) -> list[Event]:
        rows = self._read(
            self._q(
                "SELECT call_id, organization_id, type, timestamp, event, data, source FROM {events} "
                "WHERE organization_id = %s AND call_id = %s ORDER BY id"
            ),
            (organization_id, call_id),
        )
        return [
            Event(
                call_id=r[0],
                organization_id=r[1],
                type=EventType(r[2]),
                timestamp=r[3],
                event=r[4],
                data=r[5],
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
        work = self._claim_work(now, now_ms, limit, lease_owner, lease_expires_at, organization_limit)

        def verify() -> tuple[bool, list[Call]]:
            _claim_lost(lease_owner)
            return True, []

        return self._run(work, verify=verify)

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
        updates, last = self._batch_work(changes) if changes else (None, [])
        claim = (
            self._claim_work(now, now_ms, limit, lease_owner, lease_expires_at, organization_limit)
            if limit > 0
            else None
        )

        def both(conn: psycopg.Connection[Any]) -> tuple[list[Call | CallScheduleError], list[Call]]:
            if claim is not None and organization_limit is not None:
                # The turn before any row lock: a limited claim holding the turn waits on rows
                # (no SKIP LOCKED), so taking it after the updates' row locks could deadlock.
                self._take_limited_claim_turn(conn)
            results = updates(conn) if updates is not None else []
            return results, claim(conn) if claim is not None else []

        # The claim may take again a call this round's change made due (a retry at once), so
        # reading the changes back cannot tell whether the round committed; the server can.
        work, xid = _recording_xid(both)

        def verify() -> tuple[bool, tuple[list[Call | CallScheduleError], list[Call]]]:
            committed, results = self._verify_batch(last, xid)
            if committed and claim is not None:
                _claim_lost(lease_owner)
            return committed, (results, [])

        return self._run(work, verify=verify)

    def _take_limited_claim_turn(self, conn: psycopg.Connection[Any]) -> None:
        """Wait for the other limited claims of this schema to commit (a transaction-held lock;
        taking it twice in one transaction is harmless)."""
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"callschedule-limited-claim:{self.schema}"]
        )

    def _claim_work(
        self,
        now: int,
        now_ms: int,
        limit: int,
        lease_owner: str,
        lease_expires_at: int,
        organization_limit: int | None,
    ) -> Callable[[psycopg.Connection[Any]], list[Call]]:
        """The work of :meth:`claim_due`, ready to run in a transaction."""
        if organization_limit is None:
            # Concurrent claimers skip each other's locked rows and take disjoint calls.
            due = (
                " SELECT organization_id, call_id FROM {calls}"
                " WHERE execution_status = 'pending' AND scheduled_timestamp <= %(now)s"
                " ORDER BY scheduled_timestamp, call_id LIMIT %(limit)s"
                " FOR UPDATE SKIP LOCKED"
            )
        else:
            # Each organization's earliest due calls, as many as its limit leaves room for.
            # Limited claims take turns (an advisory lock below), so each counts the calls in
            # progress after the previous one committed; the UPDATE re-checks each row.
            due = (
                " SELECT ranked.organization_id, ranked.call_id FROM ("
                "  SELECT organization_id, call_id, scheduled_timestamp, ROW_NUMBER() OVER ("
                "   PARTITION BY organization_id ORDER BY scheduled_timestamp, call_id) AS n"
                "  FROM {calls} WHERE execution_status = 'pending'"
                "  AND scheduled_timestamp <= %(now)s) AS ranked"
                " LEFT JOIN (SELECT organization_id, COUNT(*) AS busy FROM {calls}"
                "  WHERE execution_status = 'in_progress' GROUP BY organization_id) AS running"
                " ON running.organization_id = ranked.organization_id"
                " WHERE ranked.n + COALESCE(running.busy, 0) <= %(organization_limit)s"
                " ORDER BY ranked.scheduled_timestamp, ranked.call_id LIMIT %(limit)s"
            )
        query = self._q(
            "WITH due AS (" + due + ") "
            "UPDATE {calls} AS c SET execution_status = 'in_progress', attempts = c.attempts + 1, "
            "version = c.version + 1, lease_owner = %(owner)s, lease_expires_at = %(expires)s, "
            "updated_at = %(now_ms)s "
            "FROM due WHERE c.organization_id = due.organization_id AND c.call_id = due.call_id "
            "AND c.execution_status = 'pending' AND c.scheduled_timestamp <= %(now)s "
            "RETURNING " + ", ".join(f"c.{c.strip()}" for c in _CALL_COLUMNS.split(","))
        )
        params = {
            "now": now,
            "limit": limit,
            "owner": lease_owner,
            "expires": lease_expires_at,
            "now_ms": now_ms,
            "organization_limit": organization_limit,
        }

        def work(conn: psycopg.Connection[Any]) -> list[Call]:
            if organization_limit is not None:
                self._take_limited_claim_turn(conn)
            rows = conn.execute(query, params).fetchall()
            # RETURNING keeps no order; callers get the earliest first.
            claimed = sorted(
                (_call_from_row(r) for r in rows), key=lambda c: (c.scheduled_timestamp, c.call_id)
            )
            self._insert_events(conn, [_events.claimed(c, now_ms) for c in claimed])
            return claimed

        return work

    def expired_leases(self, *, now_ms: int, limit: int) -> list[Call]:
        rows = self._read(
            self._q(
                f"SELECT {_CALL_COLUMNS} FROM {{calls}} WHERE execution_status = 'in_progress' "
                "AND lease_expires_at < %s ORDER BY lease_expires_at, call_id LIMIT %s"
            ),
            (now_ms, limit),
        )
        return [_call_from_row(r) for r in rows]

    def next_due_timestamp(self) -> int | None:
        rows = self._read(
            self._q("SELECT MIN(scheduled_timestamp) FROM {calls} WHERE execution_status = 'pending'")
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def save_api_key(self, key: ApiKey) -> None:
        query = self._q(
            "INSERT INTO {api_keys} (api_key, organization_id, secret_hash, created_at, revoked_at) "
            "VALUES (%s, %s, %s, %s, %s)"
        )
        params = (key.api_key, key.organization_id, key.secret_hash, key.created_at, key.revoked_at)

        def verify() -> tuple[bool, None]:
            return self.get_api_key(key.api_key) is not None, None

        self._run(lambda conn: conn.execute(query, params), verify=verify)

    def get_api_key(self, api_key: str) -> ApiKey | None:
        rows = self._read(
            self._q(
                "SELECT api_key, organization_id, secret_hash, created_at, revoked_at FROM {api_keys} "
                "WHERE api_key = %s"
            ),
            (api_key,),
        )
        return ApiKey(*rows[0]) if rows else None

    def revoke_api_key(self, api_key: str, at_ms: int) -> bool:
        query = self._q("UPDATE {api_keys} SET revoked_at = %s WHERE api_key = %s AND revoked_at IS NULL")

        def verify() -> tuple[bool, bool]:
            stored = self.get_api_key(api_key)
            if stored is not None and stored.revoked_at is None:
                return False, False
            return True, stored is not None and stored.revoked_at == at_ms

        return self._run(lambda conn: conn.execute(query, (at_ms, api_key)).rowcount == 1, verify=verify)

    # -- notifications ----------------------------------------------------------------------------

    def subscribe_due(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call ``listener(scheduled_timestamp)`` when any process makes a call pending at a time.

        Through LISTEN/NOTIFY on a connection of its own, in a background thread. While that
        connection is down (:attr:`listening` is false) nothing arrives: subscribers must keep
        a bounded poll. After each reconnection the subscribers get the earliest pending time.
        """
        with self._listener_lock:
            if self._listener is None:
                self._listener = _DueListener(self.conninfo, self._channel, self.next_due_timestamp)
            self._listener.add(listener)
            subscribed = self._listener

        def unsubscribe() -> None:
            with self._listener_lock:
                if subscribed.remove(listener) and self._listener is subscribed:
                    self._listener = None
                    subscribed.stop()

        return unsubscribe

    @property
    def listening(self) -> bool:
        """True while a subscription's LISTEN connection is up."""
        listener = self._listener
        return listener is not None and listener.connected.is_set()

    def close(self) -> None:
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._pool.close()
