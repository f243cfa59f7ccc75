"""B7: B4 on PostgreSQL with 1 and with 4 worker processes.

Each repetition gets a fresh schema (dropped afterwards) on the server named by
``CALLSCHEDULE_BENCH_POSTGRES_URL`` (or ``CALLSCHEDULE_TEST_POSTGRES_URL``). ``n`` calls are
bulk-loaded due at one instant a few seconds ahead; the worker processes start, sleep until then,
and run them with a no-op executor that notes each call it ran. A call is done when its completion
is committed: the parent polls the count of completed calls. Duplicates are counted across all
processes from their notes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from _common import ORG, PAYLOAD, percentile

HERE = Path(__file__).resolve().parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    """The server the benchmark uses."""
    return (
        os.environ.get("CALLSCHEDULE_BENCH_POSTGRES_URL")
        or os.environ.get("CALLSCHEDULE_TEST_POSTGRES_URL")
        or DEFAULT_URL
    )


def unavailable() -> str | None:
    """Why B7 cannot run here, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(postgres_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {postgres_url()}: {str(exc).splitlines()[0]}"
    return None


def _with_schema(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + f"schema={schema}"


def _load(url: str, n: int, due: int) -> None:
    """Create the schema through the store, then insert ``n`` due calls and their creation events."""
    import psycopg

    from callschedule import CallScheduler, _events
    from callschedule._model import Call, Source
    from callschedule.plugins import _postgres_store as pg

    with CallScheduler.open(url, load_entry_points=False) as scheduler:
        store = scheduler.store
        now_ms = int(time.time() * 1000)
        calls = [
            Call(
                call_id=f"d{i:07d}",
                organization_id=ORG,
                scheduled_timestamp=due,
                payload=PAYLOAD,
                created_at=now_ms,
                updated_at=now_ms,
            )
            for i in range(n)
        ]
        columns = [c.strip() for c in pg._CALL_COLUMNS.split(",")]
        insert_call = store._q(
            f"INSERT INTO {{calls}} ({pg._CALL_COLUMNS}) VALUES ({', '.join(['%s'] * len(columns))})"
        )
        insert_event = store._q(
            "INSERT INTO {events} (organization_id, call_id, type, timestamp, event, data, source) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
        )
        conninfo = store.conninfo
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        cursor.executemany(insert_call, [[pg._call_params(c)[k] for k in columns] for c in calls])
        cursor.executemany(
            insert_event, [pg._event_row(_events.created(c, now_ms, Source.LIBRARY)) for c in calls]
        )


def worker_process(workdir: Path, url: str, concurrency: int, out: str) -> dict[str, Any]:
    """One worker process (a child): run until SIGTERM, then write the calls it ran to ``out``."""
    from callschedule import CallScheduler

    ran: list[tuple[str, float, int]] = []

    def executor(call: Any, attempt: Any) -> None:
        ran.append((call.call_id, time.time(), call.scheduled_timestamp))

    with CallScheduler.open(url, load_entry_points=False) as scheduler:
        worker = scheduler.worker(executor=executor, concurrency=concurrency, poll_interval=0.5)
        print("READY", flush=True)
        worker.run()  # SIGTERM stops it
    Path(out).write_text(json.dumps(ran))
    return {"ran": len(ran)}


def b7(workdir: Path, n: int, workers: int, concurrency: int = 100, timeout: float = 120.0) -> dict[str, Any]:
    """``n`` calls due at one instant, ``workers`` worker processes on one PostgreSQL schema."""
    import psycopg

    base = postgres_url()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = _with_schema(base, schema)
    procs: list[subprocess.Popen[str]] = []
    try:
        due = int(time.time()) + 4 + workers
        _load(url, n, due)
        env = dict(os.environ)
        outs = [str(workdir / f"ran-{k}.json") for k in range(workers)]
        for out in outs:
            kwargs = {"url": url, "concurrency": concurrency, "out": out}
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "run.py"),
                        "--child",
                        "cases_pg.worker_process",
                        json.dumps(kwargs),
                        str(workdir),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "READY" not in line:
                raise RuntimeError(
                    f"a worker did not start: {proc.stderr.read()[-500:] if proc.stderr else ''}"
                )
        started_late = time.time() > due
        done_at = 0.0
        with psycopg.connect(base) as conn:
            conn.autocommit = True
            count = f"SELECT count(*) FROM \"{schema}\".calls WHERE execution_status = 'completed'"
            deadline = time.time() + timeout
            while time.time() < deadline:
                row = conn.execute(count).fetchone()
                if row is not None and row[0] >= n:
                    done_at = time.time()
                    break
                time.sleep(0.02)
            events = dict(
                conn.execute(
                    f'SELECT type, count(*) FROM "{schema}".events '
                    "WHERE type IN ('claimed', 'completed') GROUP BY type"
                ).fetchall()
            )
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        ran: list[tuple[str, float, int]] = []
        for out in outs:
            if Path(out).exists():
                ran.extend(tuple(x) for x in json.loads(Path(out).read_text()))
        counts = Counter(cid for cid, _, _ in ran)
        lateness_ms = sorted((at - sched) * 1000 for _, at, sched in ran)
        result: dict[str, Any] = {
            "workers": workers,
            "executed": len(counts),
            "misses": n - len(counts),
            "duplicates": sum(c - 1 for c in counts.values()),
            "claimed_events": events.get("claimed", 0),
            "completed_events": events.get("completed", 0),
            "calls_per_s": n / (done_at - due) if done_at > due else 0.0,
            "p50_ms": percentile(lateness_ms, 50),
            "p99_ms": percentile(lateness_ms, 99),
            "max_ms": max(lateness_ms, default=0.0),
        }
        if not done_at:
            result["error"] = f"not all {n} completed within {timeout:.0f}s"
        if started_late:
            result["error"] = "the workers started after the calls were due: setup too slow"
        return result
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with psycopg.connect(base) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
