"""Worker processes on one PostgreSQL database: load across four processes, and connections cut
under a running worker. Executions are counted by the executor in its own files
(tests/worker_process.py), never by the library's view of itself.

The SIGKILL crash, SIGTERM stop and claim/reschedule race run on PostgreSQL in
tests/test_worker_processes.py (parametrised over SQLite and PostgreSQL).
"""

from __future__ import annotations

import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from callschedule import CallScheduler, EventType, ExecutionStatus
from test_worker_processes import StoppedClock, Workers, count_status, log_lines, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ORG = "org-load"


@pytest.fixture
def worker_processes(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.close()


def _schema(url: str) -> str:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["schema"]


def _as_other_application(url: str) -> str:
    """The same schema under another ``application_name``, so cutting the workers spares it."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["application_name"] = query["schema"] + "_test"
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _cut(base_url: str, application_name: str) -> int:
    """Terminate the server connections opened under ``application_name`` (ours only)."""
    with psycopg.connect(base_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


def _create(scheduler: CallScheduler, due: dict[str, int]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: scheduler.create_call(ORG, item[1], call_id=item[0]), due.items()))


def test_four_worker_processes_execute_10000_calls_due_within_5_seconds_exactly_once(
    tmp_path: Path, worker_processes: Workers, postgres_url: str
) -> None:
    logs = [tmp_path / f"executed-{i}.log" for i in range(4)]
    for i, log in enumerate(logs):
        worker_processes.start(
            postgres_url, log, "count", concurrency=16, poll_interval=1.0, worker_id=f"w{i}"
        )
    creation_started = time.time()
    # Creating 10,000 calls (a commit each) takes ~15-20 s on 2 busy cores: they fall due after.
    first_due = int(creation_started) + 25
    due = {f"call-{n:05}": first_due + n % 5 for n in range(10_000)}
    # The creating side reads a clock stopped at the start, so a slow machine that creates past
    # `first_due` still schedules every call where the test says.
    with CallScheduler.open(
        _as_other_application(postgres_url), clock=StoppedClock(creation_started)
    ) as scheduler:
        _create(scheduler, due)
        created = time.time()
        wait_for(lambda: len(log_lines(*logs)) >= len(due), "every call to be executed", timeout=50)
        executed_by = time.time()
        wait_for(lambda: count_status(scheduler, ExecutionStatus.COMPLETED) == len(due), "all completed")
        for process in worker_processes.processes:
            assert worker_processes.terminate(process) == 0

        executed = log_lines(*logs, with_time=True)
        per_call = Counter(call_id for _, call_id, _, _, _ in executed)
        assert set(per_call) == set(due)  # none missed
        assert [c for c, n in per_call.items() if n != 1] == []  # none twice
        assert {attempt for _, _, attempt, _, _ in executed} == {1}
        by_process = Counter(pid for _, _, _, pid, _ in executed)
        assert len(by_process) == 4  # every process took part
        lateness = sorted(at - due[call_id] for _, call_id, _, _, at in executed)
        assert lateness[0] >= 0  # nothing ran before its second
        assert [e.type for e in scheduler.events(ORG, "call-04321")] == [
            EventType.CREATED,
            EventType.CLAIMED,
            EventType.COMPLETED,
        ]
    print(
        f"\npostgres: 10000 calls created in {created - creation_started:.1f}s; due over 5 s from "
        f"{first_due - creation_started:.1f}s after creation began; 4 worker processes executed "
        f"{sorted(by_process.values())}; all executed {executed_by - (first_due + 4):.2f}s after "
        f"the last due second; lateness after the due second p50 {lateness[len(lateness) // 2]:.3f}s "
        f"p99 {lateness[int(len(lateness) * 0.99)]:.3f}s max {lateness[-1]:.3f}s"
    )


def test_a_worker_whose_connections_are_cut_resumes_without_losing_or_repeating_a_call(
    tmp_path: Path, worker_processes: Workers, postgres_url: str
) -> None:
    base_url = postgres_url.split("?", 1)[0]
    worker_app = _schema(postgres_url)  # the workers' application_name
    logs = [tmp_path / "executed-a.log", tmp_path / "executed-b.log"]
    options = {"concurrency": 8, "seconds": 0.05, "lease_seconds": 3, "poll_interval": 0.5}
    processes = [worker_processes.start(postgres_url, log, "slow", **options) for log in logs]
    start = time.time()
    due = {f"call-{n:03}": int(start) + 2 + n % 4 for n in range(300)}
    with CallScheduler.open(_as_other_application(postgres_url), clock=StoppedClock(start)) as scheduler:
        _create(scheduler, due)
        # Cut every connection of both workers (pool and LISTEN) again and again while due
        # calls are claimed, executed and recorded.
        cuts = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and len(log_lines(*logs)) < 2 * len(due):
            cuts += _cut(base_url, worker_app)
            time.sleep(0.3)
        assert cuts >= 10, "the workers' connections were never cut: the test tested nothing"
        assert all(p.poll() is None for p in processes), "a worker died when its connection was cut"

        wait_for(lambda: count_status(scheduler, ExecutionStatus.COMPLETED) == len(due), "all completed")
        # After the cuts the workers still hear of new calls and run them.
        late = {"after-the-cuts": int(time.time()) + 1}
        scheduler.clock = StoppedClock(time.time())  # type: ignore[misc]
        _create(scheduler, late)
        wait_for(
            lambda: scheduler.get_call(ORG, "after-the-cuts").execution_status is ExecutionStatus.COMPLETED,
            "a call created after the cuts to run",
        )
        for process in processes:
            assert worker_processes.terminate(process) == 0

        done = [line for line in log_lines(*logs) if line[0] == "done"]
        started = [line for line in log_lines(*logs) if line[0] == "started"]
        per_call = Counter(call_id for _, call_id, _, _ in done)
        assert set(per_call) == set(due) | set(late)  # none lost
        assert [c for c, n in per_call.items() if n != 1] == []  # none run twice
        assert len(started) == len(done)  # and none started but left unfinished
    print(f"\npostgres: {cuts} connections cut under 2 workers; {len(per_call)} calls each ran once")
