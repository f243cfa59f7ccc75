"""B3 (calls due over 2 s), B4 (calls due at one instant), B5 (the same among 1,000,000 stored) and
their APScheduler references.

Lateness is the wall-clock time at which the executor (APScheduler: the job function) starts,
minus the time the call was due. Due times are whole seconds on both sides, because a call's
``scheduled_timestamp`` is: "2,000 calls over 2 s" is 1,000 calls due at each of two seconds.
The executor does nothing but note the time; for callschedule a call counts as done when its
completion (status and event) is committed, for APScheduler when its job function has run.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import AHEAD, copy_flushed, peak_rss_bytes, percentile, rss_bytes, sqlite_url

HERE = Path(__file__).resolve().parent
#: Due calls are loaded at this far-off time, then moved to the real due time just before the worker
#: starts (a setup shortcut that keeps the worker process free of the setup's memory).
PARKED = 4_000_000_000


def _subprocess(target: str, **kwargs: Any) -> None:
    """Run a setup function in another process, so this process's memory is the worker's alone."""
    import json

    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, str(HERE / "run.py"), "--child", target, json.dumps(kwargs), "."],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"setup {target} failed: {proc.stderr[-800:]}")


def load(
    workdir: Path, path: str, count: int, first_due: int, spread: int = 0, prefix: str = "c"
) -> dict[str, Any]:
    """Bulk-load ``count`` calls into ``path`` (a setup step run as a child)."""
    from _common import bulk_load_calls

    bulk_load_calls(Path(path), count, first_due=first_due, spread=spread, prefix=prefix)
    return {"loaded": count}


def _move_due(path: Path, prefix: str, due: int) -> None:
    """Shift the parked calls whose id starts with ``prefix`` so that the earliest is due at ``due``."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute(
        "UPDATE calls SET scheduled_timestamp = scheduled_timestamp - ? + ? "
        "WHERE call_id >= ? AND call_id < ?",
        (PARKED, due, prefix, prefix + "\uffff"),
    )
    conn.close()


def _figures(lateness_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in lateness_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=0.0),
    }


# -- callschedule ------------------------------------------------------------------------------


def _completions(expected: int) -> Any:
    """A plugin that notes when each completion is committed (``all_done`` once ``expected``)."""
    from callschedule.hookspecs import hookimpl

    class Completions:
        def __init__(self) -> None:
            self.count = 0
            self.last = 0.0
            self.all_done = threading.Event()

        @hookimpl
        def callschedule_event(self, call: Any, event: Any) -> None:
            if event.type.value == "completed":
                self.count += 1
                self.last = time.time()
                if self.count >= expected:
                    self.all_done.set()

    return Completions()


def _lib_run(path: Path, n: int, *, first_due: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """Run one worker on ``path`` until ``n`` calls are completed; its figures."""
    from callschedule import CallScheduler

    runs: dict[str, list[float]] = {}
    due_of: dict[str, int] = {}
    lock = threading.Lock()

    def executor(call: Any, attempt: Any) -> None:
        now = time.time()
        with lock:
            runs.setdefault(call.call_id, []).append(now)
            due_of[call.call_id] = call.scheduled_timestamp

    completions = _completions(n)
    rss_before = rss_bytes()
    scheduler = CallScheduler.open(sqlite_url(path), load_entry_points=False, plugins=[completions])
    worker = scheduler.worker(executor=executor, concurrency=concurrency)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    started_late = time.time() > first_due
    finished = completions.all_done.wait(timeout)
    worker.stop(grace=5)
    thread.join(30)
    rss_after = rss_bytes()
    counts = scheduler.store._read(
        "SELECT type, COUNT(*) FROM events WHERE type IN ('claimed', 'completed') GROUP BY type"
    )
    scheduler.close()
    events = dict(counts)
    lateness = [times[0] - due_of[cid] for cid, times in runs.items()]
    result: dict[str, Any] = {
        "executed": len(runs),
        "misses": n - len(runs),
        "duplicates": sum(len(t) - 1 for t in runs.values()),
        "claimed_events": events.get("claimed", 0),
        "completed_events": events.get("completed", 0),
        "calls_per_s": n / (completions.last - first_due)
        if finished and completions.last > first_due
        else 0.0,
        "rss_mib": rss_after / 2**20,
        "rss_growth_mib": (rss_after - rss_before) / 2**20,
        "peak_rss_mib": peak_rss_bytes() / 2**20,
        **_figures(lateness),
    }
    if not finished:
        result["error"] = f"only {completions.count} of {n} completed within {timeout:.0f}s"
    if started_late:
        result["error"] = "the worker started after the calls were due: setup too slow"
    return result


def lib(
    workdir: Path, n: int, spread: int, concurrency: int = 10, stored: int = 0, base: str = ""
) -> dict[str, Any]:
    """``n`` calls due over ``spread`` seconds (0: one instant), one worker; with ``stored`` calls
    due far later already in the table (copied from ``base`` if given)."""
    path = workdir / "worker.db"
    if base:
        copy_flushed(base, path)
    elif stored:
        _subprocess(
            "cases_worker.load",
            path=str(path),
            count=stored,
            first_due=int(time.time()) + AHEAD,
            spread=3600,
            prefix="c",
        )
    _subprocess(
        "cases_worker.load",
        path=str(path),
        count=n,
        first_due=PARKED,
        spread=spread,
        prefix="d",
    )
    due = int(time.time()) + 2
    _move_due(path, "d", due)
    result = _lib_run(path, n, first_due=due, concurrency=concurrency, timeout=60 + n / 200)
    result["stored"] = stored + n
    return result


def build_base(workdir: Path, path: str, stored: int) -> dict[str, Any]:
    """Build the table of ``stored`` calls due far later that B5 copies for each repetition."""
    from _common import bulk_load_calls

    started = time.perf_counter()
    bulk_load_calls(Path(path), stored, first_due=int(time.time()) + AHEAD, spread=3600, prefix="c")
    return {"stored": stored, "seconds": time.perf_counter() - started, "mib": os.path.getsize(path) / 2**20}


def lib_reschedule(workdir: Path, n: int, base: str = "", stored: int = 0) -> dict[str, Any]:
    """B2 among ``stored`` calls (copied from ``base``): ``reschedule`` ``n`` calls spread over the table."""
    import cases_store

    if base:
        path = workdir / "b2-lib.db"
        copy_flushed(base, path)
        return cases_store.b2_lib_on(path, n)
    return cases_store.b2_lib(workdir, n, stored=stored)


# -- APScheduler -----------------------------------------------------------------------------


def aps(workdir: Path, n: int, spread: int, threads: int = 10, max_seconds: float = 15.0) -> dict[str, Any]:
    """APScheduler: ``n`` jobs due over ``spread`` seconds on a BackgroundScheduler with a
    SQLAlchemy job store on a SQLite file and a pool of ``threads``.

    Bounded: after ``max_seconds`` past the due time the run stops, and its rate is the jobs
    that ran by then over the time they took (``partial`` says how many of ``n``); lateness is
    then that of the jobs that ran, which flatters APScheduler, never callschedule.
    """
    import _aps

    sched = _aps.scheduler(workdir / "aps.db", threads=threads)
    sched.start(paused=True)
    due = int(time.time()) + 3
    ids = _aps.bulk_add(sched, n, first_due=due, spread=spread, whole_seconds=True)
    due_of = {job_id: due + (i * spread) // n for i, job_id in enumerate(ids)}
    started_late = time.time() > due
    _aps.RUNS.clear()
    sched.resume()
    deadline = due + spread + max_seconds
    while len(_aps.RUNS) < n and time.time() < deadline:
        time.sleep(0.01)
    sched.shutdown(wait=False)
    runs_list = list(_aps.RUNS)
    runs = Counter(key for key, _ in runs_list)
    first_run: dict[str, float] = {}
    for key, at in runs_list:
        first_run.setdefault(key, at)
    last = max((at for _, at in runs_list), default=0.0)
    finished = len(runs) >= n
    result: dict[str, Any] = {
        "executed": len(runs),
        "misses": 0 if not finished else n - len(runs),
        "duplicates": sum(c - 1 for c in runs.values()),
        "calls_per_s": len(runs) / (last - due) if last > due else 0.0,
        **_figures([at - due_of[key] for key, at in first_run.items()]),
    }
    if not finished:
        result["partial"] = f"{len(runs):,} of {n:,} ran within {max_seconds:.0f} s"
    if started_late:
        result["error"] = "the scheduler resumed after the jobs were due: setup too slow"
    return result
