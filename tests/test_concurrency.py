"""Racing writers: threads in one process, and processes on one SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import callschedule
from callschedule import CallScheduler, Conflict, EventType

ORG = "org-race"


@pytest.mark.parametrize("racers", [32])
def test_threads_rescheduling_one_call_each_win_once_or_conflict(
    scheduler: CallScheduler, racers: int
) -> None:
    call = scheduler.create_call(ORG, 1_748_460_000, call_id="contested")
    barrier = threading.Barrier(racers)

    def race(n: int) -> tuple[str, int]:
        target = 1_748_460_000 + 1 + n
        barrier.wait()
        try:
            scheduler.reschedule(ORG, call.call_id, target)
        except Conflict:
            return "conflict", target
        return "won", target

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(race, range(racers)))

    won = [target for result, target in outcomes if result == "won"]
    assert Counter(result for result, _ in outcomes).keys() <= {"won", "conflict"}
    assert len(won) >= 1
    final = scheduler.get_call(ORG, call.call_id)
    assert final.version == call.version + len(won)
    assert final.reschedule_count == len(won)
    moves = [e for e in scheduler.events(ORG, call.call_id) if e.type is EventType.RESCHEDULED]
    assert sorted(e.data["new_scheduled_timestamp"] for e in moves) == sorted(won)
    assert final.scheduled_timestamp == moves[-1].data["new_scheduled_timestamp"]


WRITER = textwrap.dedent(
    """
    import json, sys
    from callschedule import CallScheduler, Conflict

    url, name = sys.argv[1], sys.argv[2]
    count, start, base = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    import time
    while time.time() < start:
        time.sleep(0.001)
    scheduler = CallScheduler.open(url)
    report = {"created": [], "moved": [], "shared_wins": 0, "shared_conflicts": 0, "errors": []}
    for n in range(count):
        try:
            call = scheduler.create_call("org-race", base + n, call_id=f"{name}-{n}")
            report["created"].append(call.call_id)
            scheduler.reschedule("org-race", call.call_id, base + n + 1)
            report["moved"].append(call.call_id)
            try:
                scheduler.reschedule("org-race", "shared", base + 100_000 + n)
                report["shared_wins"] += 1
            except Conflict:
                report["shared_conflicts"] += 1
        except Exception as exc:
            report["errors"].append(repr(exc))
    scheduler.close()
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_two_processes_write_one_sqlite_file_without_lock_errors_or_lost_writes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    base = int(time.time()) + 86_400
    with CallScheduler.open(url) as setup:
        setup.create_call(ORG, base + 100_000, call_id="shared")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(Path(callschedule.__file__).parents[1])}
    count = 300
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, name, str(count), str(start), str(base)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    try:
        outputs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            p.kill()
    reports = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    for report in reports:
        assert report["errors"] == []
        assert len(report["created"]) == len(report["moved"]) == count

    with CallScheduler.open(url) as check:
        for name in ("a", "b"):
            for n in range(count):
                call = check.get_call(ORG, f"{name}-{n}")
                assert call.scheduled_timestamp == base + n + 1 and call.version == 2
                assert len(check.events(ORG, call.call_id)) == 2
        shared = check.get_call(ORG, "shared")
        wins = sum(r["shared_wins"] for r in reports)
        assert shared.version == 1 + wins
        assert len(check.events(ORG, "shared")) == 1 + wins
        assert wins + sum(r["shared_conflicts"] for r in reports) == 2 * count
