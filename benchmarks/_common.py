"""Helpers shared by the benchmark cases: timing, statistics, bulk loading, the machine's description.

Nothing here asserts anything: the benchmarks print figures, they never fail a build.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ORG = "org-bench"
PAYLOAD = {"to": "+15551234567", "agent": "bench"}
#: Seconds ahead of now that benchmark calls are created at (well inside every rule).
AHEAD = 86_400


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    """The median, or NaN when there is nothing to take it of."""
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else float("nan")


def rss_bytes() -> int:
    """This process's resident set size now."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib * 1024 if sys.platform != "darwin" else kib)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``: wall-clock time of the block."""

    seconds: float = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def sqlite_url(path: Path, synchronous: str = "full") -> str:
    """The library's URL for a SQLite file at ``path`` (absolute) with the given durability."""
    query = "" if synchronous == "full" else f"?synchronous={synchronous}"
    return f"sqlite:///{path}{query}"


def bulk_load_calls(
    path: Path, count: int, *, first_due: int, spread: int = 0, prefix: str = "c", chunk: int = 50_000
) -> list[str]:
    """Put ``count`` pending calls (and their creation events) into the library's SQLite file at
    ``path`` with plain ``executemany``, in one transaction per chunk: a fast setup, not a measure.

    The schema comes from opening the store once; the rows from the library's own row builders,
    so they are exactly what ``create_call`` would have written. Call ``i`` is due at
    ``first_due + (i * spread) // count``. Returns the call ids.
    """
    from callschedule import _events
    from callschedule._model import Call, Source
    from callschedule.plugins import sqlite as sqlite_store

    store = sqlite_store.SQLiteStore(path=str(path))  # creates or migrates the schema
    store.close()
    now_ms = int(time.time() * 1000)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    ids: list[str] = []
    for start in range(0, count, chunk):
        calls = []
        for i in range(start, min(count, start + chunk)):
            call = Call(
                call_id=f"{prefix}{i:07d}",
                organization_id=ORG,
                scheduled_timestamp=first_due + (i * spread) // count if count else first_due,
                payload=PAYLOAD,
                created_at=now_ms,
                updated_at=now_ms,
            )
            calls.append(call)
            ids.append(call.call_id)
        conn.execute("BEGIN")
        conn.executemany(sqlite_store._INSERT_CALL, [sqlite_store._call_row(c) for c in calls])
        conn.executemany(
            sqlite_store._INSERT_EVENT,
            [sqlite_store._event_row(_events.created(c, now_ms, Source.LIBRARY)) for c in calls],
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    flush_to_disk(path)
    return ids


def flush_to_disk(path: Path) -> None:
    """fsync the file at ``path``: a setup's writes go to disk before the measured part starts,
    so that its first checkpoint does not pay for flushing the setup (hundreds of MiB for B5)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_flushed(source: str | Path, target: Path) -> None:
    """Copy a prepared database file and flush the copy to disk (see :func:`flush_to_disk`)."""
    import shutil

    shutil.copyfile(source, target)
    flush_to_disk(target)


def machine() -> dict[str, Any]:
    """Cores, memory, OS and Python of this machine."""
    import psutil

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    """Versions of everything compared (what is importable here)."""
    from importlib import metadata

    found = {}
    for name in ("callschedule", "apscheduler", "sqlalchemy", "starlette", "uvicorn", "httpx", "psycopg"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def emit(result: dict[str, Any]) -> None:
    """Print a child's result as the last line of its output, for the parent to read."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
