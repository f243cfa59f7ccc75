"""B1 (create), B2 (reschedule one by one), B2c (reschedule from 32 threads) and their references.

Each function runs in a fresh child process on a new SQLite file in ``workdir`` and returns its
figures; setup (schema, bulk-loaded calls or jobs) is outside the timed part.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from _common import AHEAD, ORG, PAYLOAD, Timer, bulk_load_calls, sqlite_url


def _open(path: Path, synchronous: str) -> Any:
    from callschedule import CallScheduler

    return CallScheduler.open(sqlite_url(path, synchronous), load_entry_points=False)


# -- B1: create ------------------------------------------------------------------------------


def b1_lib(workdir: Path, n: int, synchronous: str = "full") -> dict[str, Any]:
    """``create_call`` ``n`` times, one after the other."""
    path = workdir / "b1-lib.db"
    due = int(time.time()) + AHEAD
    with _open(path, synchronous) as scheduler:
        create = scheduler.create_call
        with Timer() as t:
            for i in range(n):
                create(organization_id=ORG, scheduled_timestamp=due + i % 3600, payload=PAYLOAD)
    return {"ops_per_s": n / t.seconds, "seconds": t.seconds}


def _raw_connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    return conn


def b1_raw(workdir: Path, n: int, synchronous: str = "full") -> dict[str, Any]:
    """The raw limit: insert the call row and its event row, one commit per call, plain sqlite3.

    Same tables and indexes as the library (the schema comes from opening the store once); the
    row values are prepared outside the loop, so the loop holds nothing but the SQL.
    """
    import json

    path = workdir / "b1-raw.db"
    bulk_load_calls(path, 0, first_due=0)  # the schema only
    due = int(time.time()) + AHEAD
    now_ms = int(time.time() * 1000)
    payload = json.dumps(PAYLOAD)
    call_rows = [
        (
            ORG,
            f"r{i:07d}",
            due + i % 3600,
            "pending",
            None,
            payload,
            0,
            0,
            1,
            now_ms,
            now_ms,
            None,
            None,
            None,
        )
        for i in range(n)
    ]
    event_data = json.dumps({"scheduled_timestamp": due, "created_at": now_ms, "source": "library"})
    event_rows = [
        (ORG, f"r{i:07d}", "created", now_ms, "Call scheduled via library", event_data, "library")
        for i in range(n)
    ]
    from callschedule.plugins.sqlite import _INSERT_CALL, _INSERT_EVENT

    conn = _raw_connect(path, synchronous)
    execute = conn.execute
    with Timer() as t:
        for call_row, event_row in zip(call_rows, event_rows, strict=True):
            execute("BEGIN IMMEDIATE")
            execute(_INSERT_CALL, call_row)
            execute(_INSERT_EVENT, event_row)
            execute("COMMIT")
    conn.close()
    return {"ops_per_s": n / t.seconds, "seconds": t.seconds}


def _bounded(done: int, n: int, seconds: float, max_seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"ops_per_s": done / seconds, "seconds": seconds}
    if done < n:
        result["partial"] = f"{done:,} of {n:,} within {max_seconds:.0f} s"
    return result


def b1_aps(workdir: Path, n: int, max_seconds: float = 12.0) -> dict[str, Any]:
    """APScheduler: ``add_job`` (a date trigger) ``n`` times on a started, paused scheduler.

    Bounded: after ``max_seconds`` it stops, and its rate is that of the jobs added by then.
    """
    import _aps

    sched = _aps.scheduler(workdir / "b1-aps.db")
    sched.start(paused=True)
    base = time.time() + AHEAD
    add = sched.add_job
    deadline = time.perf_counter() + max_seconds
    done = 0
    with Timer() as t:
        for i in range(n):
            add(_aps.noop, "date", run_date=_aps.when(base + i % 3600), id=f"j{i:07d}")
            done += 1
            if i % 50 == 49 and time.perf_counter() > deadline:
                break
    sched.shutdown(wait=False)
    return _bounded(done, n, t.seconds, max_seconds)


# -- B2: reschedule one by one ---------------------------------------------------------------


def b2_lib(workdir: Path, n: int, synchronous: str = "full", stored: int = 0) -> dict[str, Any]:
    """``reschedule`` each of ``n`` stored calls once, one after the other.

    With ``stored`` > ``n``, the table holds that many calls and ``n`` of them, spread over the
    table, are moved (B5).
    """
    path = workdir / "b2-lib.db"
    bulk_load_calls(path, max(n, stored), first_due=int(time.time()) + AHEAD, spread=3600)
    return b2_lib_on(path, n, synchronous)


def b2_lib_on(path: Path, n: int, synchronous: str = "full") -> dict[str, Any]:
    """``reschedule`` ``n`` of the calls already in ``path``, spread evenly over the table."""
    with sqlite3.connect(str(path)) as conn:
        ids = [
            r[0] for r in conn.execute("SELECT call_id FROM calls WHERE call_id LIKE 'c%' ORDER BY call_id")
        ]
    conn.close()
    step = max(1, len(ids) // n)
    targets = ids[::step][:n]
    due = int(time.time()) + AHEAD
    with _open(path, synchronous) as scheduler:
        reschedule = scheduler.reschedule
        with Timer() as t:
            for i, call_id in enumerate(targets):
                reschedule(organization_id=ORG, call_id=call_id, scheduled_timestamp=due + 7200 + i % 3600)
    return {"ops_per_s": n / t.seconds, "seconds": t.seconds, "stored": len(ids)}


def b2_raw(workdir: Path, n: int, synchronous: str = "full") -> dict[str, Any]:
    """The raw limit: a conditional UPDATE of the call and an INSERT of its event, one commit each."""
    import json

    path = workdir / "b2-raw.db"
    due = int(time.time()) + AHEAD
    ids = bulk_load_calls(path, n, first_due=due, spread=3600)
    now_ms = int(time.time() * 1000)
    update = (
        "UPDATE calls SET scheduled_timestamp = ?, reschedule_count = reschedule_count + 1, "
        "version = version + 1, updated_at = ? "
        "WHERE organization_id = ? AND call_id = ? AND execution_status = 'pending'"
    )
    from callschedule.plugins.sqlite import _INSERT_EVENT

    work = []
    for i, call_id in enumerate(ids):
        new = due + 7200 + i % 3600
        data = json.dumps({"previous_scheduled_timestamp": due, "new_scheduled_timestamp": new})
        work.append(
            (
                (new, now_ms, ORG, call_id),
                (
                    ORG,
                    call_id,
                    "rescheduled",
                    now_ms,
                    "Scheduled call time updated via library",
                    data,
                    "library",
                ),
            )
        )
    conn = _raw_connect(path, synchronous)
    execute = conn.execute
    with Timer() as t:
        for update_params, event_row in work:
            execute("BEGIN IMMEDIATE")
            execute(update, update_params)
            execute(_INSERT_EVENT, event_row)
            execute("COMMIT")
    conn.close()
    return {"ops_per_s": n / t.seconds, "seconds": t.seconds}


def b2_floor(workdir: Path, n: int, synchronous: str = "full") -> dict[str, Any]:
    """What B2 could reach: the same reschedules written straight through, for measuring only.

    The same arguments checked, the same read, rules, moved call, event, rows and statements as
    ``reschedule``, with nothing around them: the read inside the write transaction on the
    writer connection, no group commit, no ``attrs.evolve``, no hooks or due listeners. Not a
    way to use the library (it reaches into the SQLite store's writer); see B2f.
    """
    from callschedule import _rules, _validation
    from callschedule._events import rescheduled
    from callschedule._model import Call, RescheduleResult, Source
    from callschedule.plugins.sqlite import _CALL_COLUMNS, _call_from_row, _prepare_update

    path = workdir / "b2-floor.db"
    due = int(time.time()) + AHEAD
    ids = bulk_load_calls(path, n, first_due=due, spread=3600)
    scheduler = _open(path, synchronous)
    conn, clock, policy = scheduler.store._writer, scheduler.clock, scheduler.policy
    execute = conn.execute
    select = f"SELECT {_CALL_COLUMNS} FROM calls WHERE organization_id = ? AND call_id = ?"

    def reschedule(organization_id: str, call_id: str, scheduled_timestamp: int) -> RescheduleResult:
        organization_id = _validation.identifier("organization_id", organization_id)
        call_id = _validation.identifier("call_id", call_id)
        requested = _validation.timestamp("scheduled_timestamp", scheduled_timestamp)
        execute("BEGIN IMMEDIATE")
        try:
            call = _call_from_row(execute(select, (organization_id, call_id)).fetchall()[0])
            now_ms = clock.now_ms()
            new_time = _rules.decide_reschedule(call, requested, now_ms // 1000, policy)
            moved = Call(
                call.call_id,
                call.organization_id,
                new_time,
                call.execution_status,
                call.timezone,
                call.payload,
                call.attempts,
                call.reschedule_count + 1,
                call.version + 1,
                call.created_at,
                now_ms,
                call.lease_owner,
                call.lease_expires_at,
                call.outcome,
            )
            event = rescheduled(moved, call.scheduled_timestamp, new_time, now_ms, Source.LIBRARY)
            _prepare_update(moved, call.version, [event])(conn)
            execute("COMMIT")
        except BaseException:
            execute("ROLLBACK")
            raise
        return RescheduleResult(
            organization_id=organization_id,
            call_id=call_id,
            previous_scheduled_timestamp=call.scheduled_timestamp,
            new_scheduled_timestamp=new_time,
            call=moved,
            events=[event],
        )

    with Timer() as t:
        for i, call_id in enumerate(ids):
            reschedule(ORG, call_id, due + 7200 + i % 3600)
    scheduler.close()
    return {"ops_per_s": n / t.seconds, "seconds": t.seconds}


def b2_aps(workdir: Path, n: int, max_seconds: float = 12.0) -> dict[str, Any]:
    """APScheduler: ``reschedule_job`` (a new date trigger) for each of ``n`` stored jobs.

    Bounded: after ``max_seconds`` it stops, and its rate is that of the jobs moved by then.
    """
    import _aps

    sched = _aps.scheduler(workdir / "b2-aps.db")
    sched.start(paused=True)
    base = time.time() + AHEAD
    ids = _aps.bulk_add(sched, n, first_due=base, spread=3600)
    reschedule = sched.reschedule_job
    deadline = time.perf_counter() + max_seconds
    done = 0
    with Timer() as t:
        for i, job_id in enumerate(ids):
            reschedule(job_id, trigger="date", run_date=_aps.when(base + 7200 + i % 3600))
            done += 1
            if i % 50 == 49 and time.perf_counter() > deadline:
                break
    sched.shutdown(wait=False)
    return _bounded(done, n, t.seconds, max_seconds)


# -- B2c: reschedule from concurrent callers -------------------------------------------------


def b2c_lib(workdir: Path, n: int, threads: int = 32, synchronous: str = "full") -> dict[str, Any]:
    """``threads`` threads share one scheduler and each reschedules its slice of ``n`` calls.

    Every ``reschedule`` returns only once its change is committed at the store's durability:
    concurrent changes share commits (group commit), they do not skip them.
    """
    path = workdir / "b2c-lib.db"
    due = int(time.time()) + AHEAD
    ids = bulk_load_calls(path, n, first_due=due, spread=3600)
    slices = [ids[k::threads] for k in range(threads)]
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []
    with _open(path, synchronous) as scheduler:

        def caller(mine: list[str]) -> None:
            start.wait()
            try:
                for i, call_id in enumerate(mine):
                    scheduler.reschedule(
                        organization_id=ORG, call_id=call_id, scheduled_timestamp=due + 7200 + i % 3600
                    )
            except BaseException as exc:  # reported, not hidden
                errors.append(exc)

        workers = [threading.Thread(target=caller, args=(s,)) for s in slices]
        for w in workers:
            w.start()
        with Timer() as t:
            start.wait()
            for w in workers:
                w.join()
        if errors:
            raise errors[0]
        moved = scheduler.store._read(  # check: every change and its event are there
            "SELECT COUNT(*) FROM events WHERE type = 'rescheduled'"
        )[0][0]
    return {"ops_per_s": n / t.seconds, "seconds": t.seconds, "events": moved}


def b2c_async_lib(workdir: Path, n: int, tasks: int = 32, synchronous: str = "full") -> dict[str, Any]:
    """``tasks`` asyncio tasks on one event loop share one scheduler, each rescheduling its slice
    of ``n`` calls with ``reschedule_async``: an async application's callers, without threads.

    Each ``reschedule_async`` returns only once its change is committed; the changes one turn of
    the loop makes share a commit, which a thread of the store runs while the loop goes on.
    """
    import asyncio

    path = workdir / "b2c-async-lib.db"
    due = int(time.time()) + AHEAD
    ids = bulk_load_calls(path, n, first_due=due, spread=3600)
    slices = [ids[k::tasks] for k in range(tasks)]
    with _open(path, synchronous) as scheduler:
        assert scheduler.serves_event_loop  # measured on the loop, not in a thread each
        reschedule = scheduler.reschedule_async

        async def caller(mine: list[str]) -> None:
            for i, call_id in enumerate(mine):
                await reschedule(
                    organization_id=ORG, call_id=call_id, scheduled_timestamp=due + 7200 + i % 3600
                )

        async def run_all() -> None:
            await asyncio.gather(*(caller(s) for s in slices))

        with Timer() as t:
            asyncio.run(run_all())
        moved = scheduler.store._read("SELECT COUNT(*) FROM events WHERE type = 'rescheduled'")[0][0]
    if moved != n:
        raise RuntimeError(f"{moved:,} rescheduled events for {n:,} changes")
    return {"ops_per_s": n / t.seconds, "seconds": t.seconds, "events": moved}
