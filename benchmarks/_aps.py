"""The APScheduler 3.11 reference: a BackgroundScheduler with its SQLAlchemy job store on a SQLite file.

Configured as its documentation shows, with two changes that only help it here: jobs never count
as misfired (``misfire_grace_time=None``, so late jobs still run and are counted, not dropped),
and no coalescing. The SQLite file is SQLAlchemy's default: rollback journal, synchronous=FULL.
"""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import time
from pathlib import Path
from typing import Any

#: (job key, wall-clock seconds when it ran), appended by :func:`record` in the worker threads.
RUNS: list[tuple[str, float]] = []
_RUNS_LOCK = threading.Lock()


def noop() -> None:
    """A job that does nothing."""


def record(key: str) -> None:
    """A job that notes when it ran."""
    now = time.time()
    with _RUNS_LOCK:
        RUNS.append((key, now))


def scheduler(path: Path, *, threads: int = 10) -> Any:
    """A BackgroundScheduler over a SQLAlchemyJobStore on the SQLite file ``path`` (not started)."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{path}")},
        executors={"default": ThreadPoolExecutor(threads)},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        timezone=dt.timezone.utc,
    )


def when(timestamp: float) -> dt.datetime:
    """A timezone-aware UTC datetime for a Unix timestamp."""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)


def bulk_add(
    sched: Any,
    count: int,
    *,
    first_due: float,
    spread: float = 0.0,
    func: Any = record,
    whole_seconds: bool = False,
) -> list[str]:
    """Put ``count`` date-triggered jobs into the started scheduler's job store in one transaction.

    A setup shortcut, not a measure: one job goes through ``add_job``, the others are copies of its
    pickled state with their own id and run time, inserted with one ``executemany``, exactly the
    rows ``add_job`` would have written. Job ``i`` runs at ``first_due + i * spread / count`` and is
    called with its id (``first_due + (i * spread) // count`` with ``whole_seconds``). Returns the ids.
    """
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.util import datetime_to_utc_timestamp
    from sqlalchemy import select

    store = sched._lookup_jobstore("default")
    sched.add_job(func, "date", run_date=when(first_due + 86_400 * 365), id="template", args=("template",))
    with store.engine.begin() as conn:
        state = pickle.loads(
            conn.execute(select(store.jobs_t.c.job_state).where(store.jobs_t.c.id == "template")).scalar()
        )
    sched.remove_job("template")
    rows, ids = [], []
    for i in range(count):
        job_id = f"j{i:07d}"
        offset = ((i * int(spread)) // count if whole_seconds else i * spread / count) if count else 0
        run_at = when(first_due + offset)
        job_state = dict(state)
        job_state.update(
            id=job_id, args=(job_id,), trigger=DateTrigger(run_date=run_at), next_run_time=run_at
        )
        rows.append(
            {
                "id": job_id,
                "next_run_time": datetime_to_utc_timestamp(run_at),
                "job_state": pickle.dumps(job_state, store.pickle_protocol),
            }
        )
        ids.append(job_id)
    with store.engine.begin() as conn:
        conn.execute(store.jobs_t.insert(), rows)
    return ids
