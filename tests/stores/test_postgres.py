"""The PostgreSQL store on the server named by CALLSCHEDULE_TEST_POSTGRES_URL.

Each test gets a schema of its own (dropped afterwards), so runs of several people on one server
never see each other's calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

import callschedule
from callschedule import CallScheduler, Conflict, ExecutionStatus, InvalidInput, Source, _events
from callschedule._model import Call
from callschedule.abc import Store
from callschedule.testing import StoreConformance

BASE_URL = os.environ.get("CALLSCHEDULE_TEST_POSTGRES_URL", "")

# Tests that need the server ask for `postgres_url` (tests/conftest.py), which skips, visibly,
# where CALLSCHEDULE_TEST_POSTGRES_URL is unset.
pytestmark = pytest.mark.postgres

NOW = 1_748_452_000
NOW_MS = NOW * 1000


def with_options(url: str, **options: str) -> str:
    """``url`` with ``options`` added to its query string."""
    separator = "&" if "?" in url else "?"
    return url + separator + "&".join(f"{k}={v}" for k, v in options.items())


def admin(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run one statement on a connection of the test's own, outside any store."""
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def url(postgres_url: str) -> str:
    """A store URL on the test's own schema; its connections are named after the schema."""
    return postgres_url


@pytest.fixture
def schema(postgres_url: str) -> str:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(postgres_url).query))["schema"]


@pytest.fixture
def store(url: str) -> Iterator[Any]:
    from callschedule.plugins.postgres import PostgresStore

    store = PostgresStore.from_url(url)
    yield store
    store.close()


class TestPostgresStore(StoreConformance):
    """The conformance suite every store passes, on the real server."""

    @pytest.fixture
    def store(self, url: str) -> Iterator[Store]:
        from callschedule.plugins.postgres import PostgresStore

        store = PostgresStore.from_url(url)
        yield store
        store.close()


def make_call(call_id: str = "call-1", organization_id: str = "org-a", **changes: Any) -> Call:
    fields: dict[str, Any] = {
        "call_id": call_id,
        "organization_id": organization_id,
        "scheduled_timestamp": NOW + 600,
        "timezone": "America/New_York",
        "payload": {"to": "+15551234567"},
        "created_at": NOW_MS,
        "updated_at": NOW_MS,
    }
    fields.update(changes)
    return Call(**fields)


def add(store: Any, call: Call) -> Call:
    assert store.insert_call(call, _events.created(call, NOW_MS, Source.LIBRARY)) == call
    return call


def claim(store: Any, *, now: int = NOW, limit: int = 100, owner: str = "w1") -> list[Call]:
    result: list[Call] = store.claim_due(
        now=now, now_ms=now * 1000, limit=limit, lease_owner=owner, lease_expires_at=now * 1000 + 30_000
    )
    return result


def terminate(application_name: str) -> int:
    """Cut every server connection opened under ``application_name`` (the test's own only)."""
    rows = admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = %s AND pid <> pg_backend_pid()",
        (application_name,),
    )
    return len(rows)


# -- opening ------------------------------------------------------------------------------------------


def test_open_by_url_through_the_plugin_hook(url: str) -> None:
    from callschedule.plugins.postgres import PostgresStore

    for scheme_url in (url, "postgres://" + url.split("://", 1)[1]):
        with CallScheduler.open(scheme_url) as scheduler:
            assert isinstance(scheduler.store, PostgresStore)


def test_first_open_creates_the_schema_and_records_its_version(store: Any, schema: str) -> None:
    from callschedule.plugins.postgres import SCHEMA_VERSION

    assert store.schema_version() == SCHEMA_VERSION
    rows = admin(f'SELECT version, name FROM "{schema}".callschedule_migrations ORDER BY version')
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))


def test_reopening_keeps_the_data_and_applies_nothing_twice(url: str, schema: str) -> None:
    from callschedule.plugins.postgres import PostgresStore

    first = PostgresStore.from_url(url)
    add(first, make_call())
    first.close()
    again = PostgresStore.from_url(url)
    try:
        assert again.get_call("org-a", "call-1") == make_call()
    finally:
        again.close()
    assert len(admin(f'SELECT 1 FROM "{schema}".callschedule_migrations')) == 1


def test_many_processes_opening_a_new_database_at_once_all_succeed(url: str, schema: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from callschedule.plugins.postgres import PostgresStore
        store = PostgresStore.from_url(sys.argv[1])
        print(store.schema_version())
        store.close()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url], env=_subprocess_env(), stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        outputs = [p.communicate(timeout=30)[0].strip() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert outputs == ["1"] * 4
    assert len(admin(f'SELECT 1 FROM "{schema}".callschedule_migrations')) == 1


def test_a_schema_newer_than_the_code_is_refused(store: Any, url: str, schema: str) -> None:
    from callschedule.plugins.postgres import PostgresStore

    admin(f"INSERT INTO \"{schema}\".callschedule_migrations (version, name) VALUES (999, 'future')")
    with pytest.raises(callschedule.CallScheduleError, match="newer than this callschedule"):
        PostgresStore.from_url(url)


def test_migrate_false_refuses_an_out_of_date_schema(url: str, schema: str) -> None:
    from callschedule.plugins.postgres import PostgresStore

    admin(f'CREATE SCHEMA "{schema}"')
    with pytest.raises(callschedule.CallScheduleError, match="migrate=true"):
        PostgresStore.from_url(with_options(url, migrate="false"))
    PostgresStore.from_url(url).close()
    PostgresStore.from_url(with_options(url, migrate="false")).close()


def test_libpq_options_in_the_url_reach_the_server(url: str) -> None:
    from callschedule.plugins.postgres import PostgresStore

    store = PostgresStore.from_url(with_options(url, options="-c%20statement_timeout%3D4321"))
    try:
        [[timeout]] = store._read(psycopg.sql.SQL("SHOW statement_timeout"))
    finally:
        store.close()
    assert timeout == "4321ms"


@pytest.mark.parametrize(
    "options",
    [{"clock": "sundial"}, {"migrate": "maybe"}, {"pool_max_size": "lots"}, {"pool_min_size": "0"}],
)
def test_bad_url_options_are_refused_naming_the_url(url: str, options: dict[str, str]) -> None:
    from callschedule.plugins.postgres import PostgresStore

    with pytest.raises(InvalidInput) as caught:
        PostgresStore.from_url(with_options(url, **options))
    assert caught.value.field == "url"


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(callschedule.__file__).parents[1])
    return env


def test_the_core_works_without_psycopg_and_says_which_extra_is_missing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("psycopg", "psycopg_pool"):
                    raise ImportError("no psycopg here")
        sys.meta_path.insert(0, Block())
        from callschedule import CallScheduler
        with CallScheduler.open(sys.argv[1]) as scheduler:
            scheduler.create_call(organization_id="org", scheduled_timestamp=int(time.time()) + 3600)
        assert "psycopg" not in sys.modules
        try:
            CallScheduler.open("postgresql://nobody@127.0.0.1/none")
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'calls.db'}"],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "pip install 'callschedule[postgres]'" in result.stdout


# -- data round-trips ---------------------------------------------------------------------------------


def test_payload_with_any_json_and_unicode_round_trips(store: Any) -> None:
    payload = {"nul": "a\u0000b", "emoji": "☎️", "big": 2**62, "float": 0.1, "list": [None, True, {}]}
    call = add(store, make_call(payload=payload, outcome={"answered": False}))
    assert store.get_call("org-a", "call-1") == call


def test_call_ids_order_by_code_point_like_the_other_stores(store: Any) -> None:
    for call_id in ("b", "B", "a-2", "a2", "é", "z"):
        add(store, make_call(call_id=call_id, scheduled_timestamp=NOW))
    listed = [c.call_id for c in store.list_calls("org-a")]
    assert listed == sorted(listed) == ["B", "a-2", "a2", "b", "z", "é"]
    page = store.list_calls("org-a", after=(NOW, "a2"), limit=2)
    assert [c.call_id for c in page] == ["b", "z"]


# -- racing writers -----------------------------------------------------------------------------------


def test_of_32_threads_racing_to_move_one_call_exactly_one_wins(store: Any) -> None:
    call = add(store, make_call())
    barrier = threading.Barrier(32)

    def race(n: int) -> bool:
        new = attrs.evolve(call, scheduled_timestamp=NOW + 1000 + n, version=2)
        event = _events.rescheduled(
            new, call.scheduled_timestamp, new.scheduled_timestamp, NOW_MS, Source.API
        )
        barrier.wait()
        try:
            store.update_call(new, 1, [event])
        except Conflict:
            return False
        return True

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(race, range(32)))
    assert results.count(True) == 1
    winner = store.get_call("org-a", "call-1")
    assert winner.version == 2
    events = store.events("org-a", "call-1")
    assert len(events) == 2
    assert events[1].data["new_scheduled_timestamp"] == winner.scheduled_timestamp


def test_a_claim_and_a_reschedule_racing_for_one_call_never_both_win(store: Any) -> None:
    outcomes = []
    for n in range(20):
        call = add(store, make_call(call_id=f"c{n}", scheduled_timestamp=NOW))
        barrier = threading.Barrier(2)

        def move(call: Call = call, barrier: threading.Barrier = barrier) -> str:
            new = attrs.evolve(call, scheduled_timestamp=NOW + 900, version=2)
            barrier.wait()
            try:
                store.update_call(new, 1, [])
            except Conflict:
                return "conflict"
            return "moved"

        def take(barrier: threading.Barrier = barrier) -> list[Call]:
            barrier.wait()
            return claim(store)

        with ThreadPoolExecutor(2) as pool:
            moved, claimed = pool.submit(move), pool.submit(take)
            outcome = (moved.result(), [c.call_id for c in claimed.result()])
        assert outcome in (("moved", []), ("conflict", [f"c{n}"]))
        stored = store.get_call("org-a", f"c{n}")
        expected = ExecutionStatus.PENDING if outcome[0] == "moved" else ExecutionStatus.IN_PROGRESS
        assert stored.execution_status is expected
        outcomes.append(outcome[0])


def test_racing_claims_with_an_organization_limit_never_exceed_it(store: Any) -> None:
    for org in ("org-a", "org-b"):
        for n in range(30):
            add(store, make_call(call_id=f"c{n:02}", organization_id=org, scheduled_timestamp=NOW - n))
    barrier = threading.Barrier(8)

    def race(n: int) -> list[Call]:
        barrier.wait()
        return list(
            store.claim_due(
                now=NOW,
                now_ms=NOW_MS,
                limit=2,
                lease_owner=f"w{n}",
                lease_expires_at=NOW_MS + 30_000,
                organization_limit=3,
            )
        )

    with ThreadPoolExecutor(8) as pool:
        claimed = [c for got in pool.map(race, range(8)) for c in got]
    by_org = sorted((c.organization_id, c.call_id) for c in claimed)
    # Each organization's three earliest, once each, whoever won them.
    assert by_org == [(org, f"c{n}") for org in ("org-a", "org-b") for n in (27, 28, 29)]


@pytest.mark.slow
def test_four_processes_claiming_at_once_take_each_call_exactly_once(store: Any, url: str) -> None:
    for n in range(400):
        add(store, make_call(call_id=f"c{n:04}", scheduled_timestamp=NOW - n % 50))
    script = textwrap.dedent(
        """
        import sys
        from callschedule.plugins.postgres import PostgresStore
        store = PostgresStore.from_url(sys.argv[1])
        now = int(sys.argv[2])
        while batch := store.claim_due(now=now, now_ms=now * 1000, limit=7,
                                       lease_owner=sys.argv[3], lease_expires_at=now * 1000 + 60_000):
            for call in batch:
                print(call.call_id, call.attempts, call.lease_owner)
        store.close()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(NOW), f"p{i}"],
            env=_subprocess_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        outputs = [p.communicate(timeout=50)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    lines = [line.split() for out in outputs for line in out.splitlines()]
    claimed = sorted(call_id for call_id, _, _ in lines)
    assert claimed == [f"c{n:04}" for n in range(400)]
    assert {attempt for _, attempt, _ in lines} == {"1"}
    stored = store.list_calls("org-a", limit=1000)
    assert all(c.execution_status is ExecutionStatus.IN_PROGRESS for c in stored)
    owners = {call_id: owner for call_id, _, owner in lines}
    assert all(c.lease_owner == owners[c.call_id] for c in stored)
    # One claimed event per call, naming the process that holds it.
    for c in stored[:25]:
        events = store.events("org-a", c.call_id)
        assert [e.type.value for e in events] == ["created", "claimed"]
        assert events[1].data["lease_owner"] == owners[c.call_id]


# -- notifications --------------------------------------------------------------------------------------


class Heard:
    """Collects the timestamps a subscription delivers."""

    def __init__(self) -> None:
        self.timestamps: list[int] = []
        self.changed = threading.Condition()

    def __call__(self, timestamp: int) -> None:
        with self.changed:
            self.timestamps.append(timestamp)
            self.changed.notify_all()

    def wait_for(self, timestamp: int, timeout: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: timestamp in self.timestamps, timeout=timeout)


@pytest.fixture
def other_store(url: str) -> Iterator[Any]:
    """A second store on the same schema: what another process would have."""
    from callschedule.plugins.postgres import PostgresStore

    store = PostgresStore.from_url(url)
    yield store
    store.close()


def test_another_process_creating_moving_or_retrying_a_call_wakes_subscribers(
    store: Any, other_store: Any
) -> None:
    heard = Heard()
    unsubscribe = store.subscribe_due(heard)
    try:
        _wait_listening(store)
        call = add(other_store, make_call(scheduled_timestamp=NOW + 111))
        assert heard.wait_for(NOW + 111)
        moved = attrs.evolve(call, scheduled_timestamp=NOW + 222, version=2)
        other_store.update_call(moved, 1, [])
        assert heard.wait_for(NOW + 222)
        [claimed] = claim(other_store, now=NOW + 300)
        retry = attrs.evolve(
            claimed,
            execution_status=ExecutionStatus.PENDING,
            scheduled_timestamp=NOW + 333,
            version=claimed.version + 1,
        )
        other_store.update_call(retry, claimed.version, [])
        assert heard.wait_for(NOW + 333)
    finally:
        unsubscribe()


def test_changes_that_leave_no_pending_call_notify_nobody(store: Any, other_store: Any) -> None:
    call = add(other_store, make_call(scheduled_timestamp=NOW + 5))
    heard = Heard()
    unsubscribe = store.subscribe_due(heard)
    try:
        _wait_listening(store)
        assert heard.wait_for(NOW + 5)  # the earliest pending time, told on connecting
        cancelled = attrs.evolve(call, execution_status=ExecutionStatus.CANCELLED, version=2)
        other_store.update_call(cancelled, 1, [])
        add(other_store, make_call(call_id="marker", scheduled_timestamp=NOW + 77))
        assert heard.wait_for(NOW + 77)
        assert heard.timestamps == [NOW + 5, NOW + 77]
    finally:
        unsubscribe()


def test_an_uncommitted_change_notifies_nobody(store: Any, other_store: Any) -> None:
    heard = Heard()
    unsubscribe = store.subscribe_due(heard)
    try:
        _wait_listening(store)
        add(other_store, make_call(call_id="a", scheduled_timestamp=NOW + 1))
        assert heard.wait_for(NOW + 1)
        stale = attrs.evolve(make_call(call_id="a"), scheduled_timestamp=NOW + 2, version=5)
        with pytest.raises(Conflict):
            other_store.update_call(stale, 4, [])
        add(other_store, make_call(call_id="b", scheduled_timestamp=NOW + 3))
        assert heard.wait_for(NOW + 3)
        assert NOW + 2 not in heard.timestamps
    finally:
        unsubscribe()


def _wait_listening(store: Any) -> None:
    listener = store._listener
    assert listener is not None and listener.connected.wait(10), "LISTEN connection never came up"


def _listen_backend_pids(schema: str) -> list[int]:
    rows = admin(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
        (f'LISTEN "callschedule_due_{schema}"%',),
    )
    return [r[0] for r in rows]


def test_the_listener_reconnects_after_its_connection_is_cut(
    store: Any, other_store: Any, schema: str
) -> None:
    heard = Heard()
    unsubscribe = store.subscribe_due(heard)
    try:
        _wait_listening(store)
        [pid] = _listen_backend_pids(schema)
        add(other_store, make_call(call_id="before", scheduled_timestamp=NOW + 10))
        assert heard.wait_for(NOW + 10)
        admin("SELECT pg_terminate_backend(%s)", (pid,))
        # While it is away, a call appears: its time comes on reconnecting, as the earliest due.
        add(other_store, make_call(call_id="away", scheduled_timestamp=NOW + 1))
        assert heard.wait_for(NOW + 1)
        _wait_listening(store)
        assert _listen_backend_pids(schema) != [pid]
        add(other_store, make_call(call_id="after", scheduled_timestamp=NOW + 20))
        assert heard.wait_for(NOW + 20)
    finally:
        unsubscribe()
    assert not store.listening


# -- a dead connection ------------------------------------------------------------------------------------


def test_the_pool_replaces_connections_cut_by_the_server(store: Any, schema: str) -> None:
    add(store, make_call(call_id="a"))
    with ThreadPoolExecutor(4) as pool:  # open a few connections
        list(pool.map(lambda _: store.get_call("org-a", "a"), range(8)))
    assert terminate(schema) >= 1
    add(store, make_call(call_id="b"))
    assert [c.call_id for c in store.list_calls("org-a")] == ["a", "b"]
    [claimed] = claim(store, now=NOW + 600, limit=1)
    assert claimed.call_id == "a"
    assert terminate(schema) >= 1
    assert [c.call_id for c in claim(store, now=NOW + 600)] == ["b"]
    assert [e.type.value for e in store.events("org-a", "a")] == ["created", "claimed"]


def test_a_write_whose_connection_dies_before_commit_runs_again_once(store: Any, schema: str) -> None:
    add(store, make_call(scheduled_timestamp=NOW))
    cut = []
    original = store._insert_events

    def lose_the_connection_then_insert_events(conn: Any, events: Any) -> None:
        if not cut:  # after the claim's UPDATE, before its events and its COMMIT
            cut.append(conn.info.backend_pid)
            admin("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        original(conn, events)

    store._insert_events = lose_the_connection_then_insert_events
    [claimed] = claim(store)
    assert cut
    assert claimed.attempts == 1 and claimed.version == 2
    assert store.get_call("org-a", "call-1") == claimed
    assert [e.type.value for e in store.events("org-a", "call-1")] == ["created", "claimed"]


def test_a_write_on_a_connection_that_died_while_idle_runs_on_a_live_one(store: Any, schema: str) -> None:
    call = add(store, make_call())
    assert terminate(schema) >= 1  # the pool's idle connection dies
    moved = attrs.evolve(call, scheduled_timestamp=NOW + 900, version=2)
    event = _events.rescheduled(moved, call.scheduled_timestamp, NOW + 900, NOW_MS, Source.API)
    assert store.update_call(moved, 1, [event]) == moved
    assert store.get_call("org-a", "call-1") == moved
    assert store.events("org-a", "call-1")[1:] == [event]


@pytest.fixture
def lost_acks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Arm with ``.append(True)``: the next commit happens, then its connection dies before the
    client hears so, as when the server restarts right after a commit. A commit is the end of a
    transaction, or a statement run on its own that writes (``INSERT``/``WITH``)."""
    armed: list[bool] = []
    original_exit = psycopg.Transaction.__exit__
    original_execute = psycopg.Connection.execute

    def lose_the_answer(conn: psycopg.Connection[Any]) -> None:
        armed.clear()
        admin("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        original_execute(conn, "SELECT 1")  # the client learns the connection is gone

    def exit_then_lose_the_answer(self: psycopg.Transaction, *exc_info: Any) -> Any:
        result = original_exit(self, *exc_info)
        if exc_info[0] is None and armed:
            lose_the_answer(self.connection)
        return result

    def execute_then_lose_the_answer(
        self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any
    ) -> Any:
        result = original_execute(self, query, *args, **kwargs)
        text = query.as_string(self) if isinstance(query, psycopg.sql.Composable) else str(query)
        if armed and self.autocommit and not self.info.transaction_status and text.startswith("WITH"):
            lose_the_answer(self)
        return result

    monkeypatch.setattr(psycopg.Transaction, "__exit__", exit_then_lose_the_answer)
    monkeypatch.setattr(psycopg.Connection, "execute", execute_then_lose_the_answer)
    return armed


def test_a_change_whose_commit_answer_was_lost_is_found_committed_not_written_twice(
    store: Any, lost_acks: list[bool]
) -> None:
    lost_acks.append(True)
    call = make_call()
    event = _events.created(call, NOW_MS, Source.LIBRARY)
    assert store.insert_call(call, event) == call
    assert not lost_acks, "the commit's answer was not lost: the test did not test anything"
    assert store.events("org-a", "call-1") == [event]

    lost_acks.append(True)
    moved = attrs.evolve(call, scheduled_timestamp=NOW + 900, version=2)
    moved_event = _events.rescheduled(moved, call.scheduled_timestamp, NOW + 900, NOW_MS, Source.API)
    assert store.update_call(moved, 1, [moved_event]) == moved
    assert not lost_acks
    assert store.get_call("org-a", "call-1") == moved
    assert store.events("org-a", "call-1") == [event, moved_event]


def test_a_claim_whose_commit_answer_was_lost_hands_out_nothing_and_leaves_it_to_the_lease(
    store: Any, lost_acks: list[bool]
) -> None:
    add(store, make_call(scheduled_timestamp=NOW))
    lost_acks.append(True)
    assert claim(store) == []
    assert not lost_acks
    held = store.get_call("org-a", "call-1")
    assert held.execution_status is ExecutionStatus.IN_PROGRESS and held.attempts == 1
    # Its lease runs out like a dead worker's, and recovery finds it.
    assert store.expired_leases(now_ms=NOW_MS + 30_001, limit=10) == [held]


def completed_and_moved_on(store: Any) -> tuple[Call, Call]:
    """A claimed call (``call-1``) and its completion (not yet written); ``call-2`` is due."""
    add(store, make_call(scheduled_timestamp=NOW))
    (held,) = claim(store)
    done = attrs.evolve(held, execution_status=ExecutionStatus.COMPLETED, version=held.version + 1)
    add(store, make_call("call-2", scheduled_timestamp=NOW))
    return held, done


def outcomes_and_claim(
    store: Any, done: Call, held: Call, organization_limit: int | None = None
) -> tuple[list[Any], list[Call]]:
    event = _events.completed(done, NOW_MS + 5, {"ok": True}, Source.WORKER)
    result: tuple[list[Any], list[Call]] = store.update_calls_and_claim_due(
        [(done, held.version, [event])],
        now=NOW,
        now_ms=NOW_MS + 5,
        limit=10,
        lease_owner="w1",
        lease_expires_at=NOW_MS + 30_000,
        organization_limit=organization_limit,
    )
    return result


def test_a_worker_round_s_outcomes_and_next_claim_are_one_transaction(store: Any, schema: str) -> None:
    """One commit a round, as on SQLite: both rows carry the same transaction id."""
    held, done = completed_and_moved_on(store)
    results, claimed = outcomes_and_claim(store, done, held)
    assert results == [done]
    assert [c.call_id for c in claimed] == ["call-2"]
    rows = admin(f'SELECT call_id, xmin::text FROM "{schema}".calls ORDER BY call_id')
    assert [r[0] for r in rows] == ["call-1", "call-2"]
    assert rows[0][1] == rows[1][1], "the outcome and the claim were committed apart"
    events = admin(f'SELECT DISTINCT xmin::text FROM "{schema}".events WHERE timestamp = %s', (NOW_MS + 5,))
    assert len(events) == 1


def test_a_limited_round_waits_for_the_claim_turn_before_locking_its_outcome_rows(
    store: Any, schema: str
) -> None:
    """A round with an organization limit takes the limited-claim turn before any row lock:
    a limited claim holding the turn waits on rows (no SKIP LOCKED), so a round that locked its
    outcome rows first and then waited for the turn could deadlock with it."""
    held, done = completed_and_moved_on(store)
    turn = f"callschedule-limited-claim:{schema}"
    with psycopg.connect(BASE_URL) as holder:  # another worker's limited claim, holding the turn
        holder.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [turn])
        with ThreadPoolExecutor(1) as pool:
            round_ = pool.submit(outcomes_and_claim, store, done, held, organization_limit=2)
            for _ in range(500):  # until the round waits for the turn (at most 10 s)
                if admin(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid::bigint = hashtext(%s)::bigint & 4294967295",
                    (turn,),
                ):
                    break
                assert not round_.done(), f"the round did not wait for the turn: {round_.result()}"
                time.sleep(0.02)
            else:
                pytest.fail("the round never waited for the claim turn")
            # The round waits with no row of its own locked: the holder can take its outcome row.
            holder.execute(
                f'SELECT 1 FROM "{schema}".calls WHERE call_id = %s FOR UPDATE NOWAIT', [held.call_id]
            )
            holder.rollback()  # the turn is free again, and the round goes on
            results, claimed = round_.result(timeout=30)
    assert results == [done]
    assert [c.call_id for c in claimed] == ["call-2"]


def test_a_worker_round_whose_commit_answer_was_lost_keeps_its_outcomes_and_leaves_the_claim_to_the_lease(
    store: Any, lost_acks: list[bool]
) -> None:
    held, done = completed_and_moved_on(store)
    lost_acks.append(True)
    results, claimed = outcomes_and_claim(store, done, held)
    assert not lost_acks, "the commit's answer was not lost: the test did not test anything"
    assert results == [done] and claimed == []
    assert store.get_call("org-a", "call-1") == done
    taken = store.get_call("org-a", "call-2")
    assert taken.execution_status is ExecutionStatus.IN_PROGRESS and taken.attempts == 1
    assert store.expired_leases(now_ms=NOW_MS + 30_001, limit=10) == [taken]


def test_a_lost_commit_answer_is_read_right_when_the_round_s_claim_took_its_own_retry_again(
    store: Any, lost_acks: list[bool]
) -> None:
    """A retry due at once is claimed again by the same round, so its row no longer shows the
    outcome as written; the server's word on the transaction decides, not the rows."""
    add(store, make_call("a", scheduled_timestamp=NOW))
    add(store, make_call("b", scheduled_timestamp=NOW))
    held_a, held_b = claim(store)
    retry = attrs.evolve(
        held_a, execution_status=ExecutionStatus.PENDING, version=held_a.version + 1, lease_owner=None
    )
    done = attrs.evolve(held_b, execution_status=ExecutionStatus.COMPLETED, version=held_b.version + 1)
    changes = [
        (retry, held_a.version, [_events.retry_scheduled(retry, NOW_MS + 5, NOW, "busy", Source.WORKER)]),
        (done, held_b.version, [_events.completed(done, NOW_MS + 5, {"ok": True}, Source.WORKER)]),
    ]
    lost_acks.append(True)
    results, claimed = store.update_calls_and_claim_due(
        changes, now=NOW, now_ms=NOW_MS + 5, limit=10, lease_owner="w1", lease_expires_at=NOW_MS + 30_000
    )
    assert not lost_acks, "the commit's answer was not lost: the test did not test anything"
    assert results == [retry, done] and claimed == []
    again = store.get_call("org-a", "a")
    assert (again.execution_status, again.version, again.attempts) == (ExecutionStatus.IN_PROGRESS, 4, 2)
    assert store.get_call("org-a", "b") == done


@pytest.fixture
def lost_outer_acks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Append True to lose the answer to the next outer ``COMMIT`` (not a savepoint's)."""
    armed: list[bool] = []
    original_exit = psycopg.Transaction.__exit__
    original_execute = psycopg.Connection.execute

    def exit_then_lose_the_answer(self: psycopg.Transaction, *exc_info: Any) -> Any:
        outer = self._outer_transaction
        result = original_exit(self, *exc_info)
        if exc_info[0] is None and armed and outer:
            armed.clear()
            admin("SELECT pg_terminate_backend(%s)", (self.connection.info.backend_pid,))
            original_execute(self.connection, "SELECT 1")
        return result

    monkeypatch.setattr(psycopg.Transaction, "__exit__", exit_then_lose_the_answer)
    return armed


@pytest.mark.parametrize("with_claim", [False, True])
def test_a_lost_commit_answer_of_a_batch_moving_one_call_twice_is_found_committed(
    store: Any, lost_outer_acks: list[bool], with_claim: bool
) -> None:
    call = add(store, make_call(scheduled_timestamp=NOW + 600))
    first = attrs.evolve(call, scheduled_timestamp=NOW + 700, version=2)
    second = attrs.evolve(first, scheduled_timestamp=NOW + 800, version=3)
    changes = [
        (first, 1, [_events.rescheduled(first, NOW + 600, NOW + 700, NOW_MS, Source.API)]),
        (second, 2, [_events.rescheduled(second, NOW + 700, NOW + 800, NOW_MS, Source.API)]),
    ]
    lost_outer_acks.append(True)
    if with_claim:
        results, _ = store.update_calls_and_claim_due(
            changes, now=NOW, now_ms=NOW_MS, limit=10, lease_owner="w", lease_expires_at=NOW_MS + 30_000
        )
    else:
        results = store.update_calls(changes)
    assert not lost_outer_acks, "the commit's answer was not lost: the test did not test anything"
    assert results == [first, second]
    assert store.get_call("org-a", "call-1") == second


def test_a_subclass_that_changes_the_claim_keeps_it_when_outcomes_and_claim_go_together(url: str) -> None:
    from callschedule.plugins.postgres import PostgresStore

    class ClaimAtMostOne(PostgresStore):
        def claim_due(self, **kwargs: Any) -> list[Call]:
            return super().claim_due(**{**kwargs, "limit": 1})

    store = ClaimAtMostOne.from_url(url)
    try:
        for n in range(3):
            add(store, make_call(f"c{n}", scheduled_timestamp=NOW))
        _, claimed = store.update_calls_and_claim_due(
            [], now=NOW, now_ms=NOW_MS, limit=5, lease_owner="w", lease_expires_at=NOW_MS + 30_000
        )
        assert [c.call_id for c in claimed] == ["c0"]
    finally:
        store.close()


# -- the clock -------------------------------------------------------------------------------------------


def test_a_scheduler_opened_on_postgres_reads_the_database_clock(url: str) -> None:
    from callschedule.plugins.postgres import DatabaseClock

    with CallScheduler.open(url) as scheduler:
        assert isinstance(scheduler.clock, DatabaseClock)
    with CallScheduler.open(with_options(url, clock="local")) as scheduler:
        assert type(scheduler.clock) is callschedule.Clock


def test_the_database_clock_on_one_machine_is_the_frozen_local_clock(url: str) -> None:
    from freezegun import freeze_time

    with freeze_time("2025-05-28 17:06:40"), CallScheduler.open(url) as scheduler:
        call = scheduler.create_call(organization_id="org", scheduled_timestamp=NOW + 3600)
        assert call.created_at == NOW_MS
        assert scheduler.clock.now_s() == NOW


def test_the_database_clock_adds_an_offset_larger_than_its_measurement_error() -> None:
    from freezegun import freeze_time

    from callschedule.plugins.postgres import DatabaseClock

    readings = iter([(-42.5, 0.002), (0.0007, 0.0002), (0.003, 0.004)])
    clock = DatabaseClock(lambda: next(readings), refresh_every=0.0)
    with freeze_time("2025-05-28 17:06:40"):
        assert clock.now_ms() == NOW_MS - 42_500  # a machine 42.5 s ahead of the server
        assert clock.now_ms() == NOW_MS  # 0.7 ms: within 1 ms + half the round trip
        assert clock.now_s() == NOW  # 3 ms measured over a 4 ms round trip: noise


def test_the_database_clock_keeps_its_last_offset_while_the_server_is_away() -> None:
    from freezegun import freeze_time

    from callschedule.plugins.postgres import DatabaseClock

    server_up = [True]

    def measure() -> tuple[float, float]:
        if not server_up[0]:
            raise psycopg.OperationalError("server closed the connection")
        return 10.0, 0.001

    clock = DatabaseClock(measure)
    with freeze_time("2025-05-28 17:06:40"):
        clock.refresh()
        server_up[0] = False
        clock.refresh()
        assert clock.now_s() == NOW + 10
