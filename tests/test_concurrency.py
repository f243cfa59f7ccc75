"""Racing writers: threads in one process, and processes on one SQLite file."""

from __future__ import annotations

import gc
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
from callschedule import (
    CallNotFound,
    CallNotReschedulable,
    CallScheduler,
    Conflict,
    EventType,
    ExecutionStatus,
    StoreClosed,
)

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


@pytest.mark.parametrize("store_url", ["memory", "sqlite"], indirect=True)
def test_a_change_made_while_another_threads_is_in_progress_runs_on_the_schedulers_loop(
    scheduler: CallScheduler,
) -> None:
    """Its answer is the same as in its own thread, errors included; the loop thread ends
    with the scheduler."""
    base = 1_748_460_000
    for call_id in ("held", "moved", "cancelled"):
        scheduler.create_call(ORG, base, call_id=call_id)
    ran_on: dict[int, str] = {}
    held_inside, go_on = threading.Event(), threading.Event()

    def listener(scheduled_timestamp: int) -> None:  # called by whichever thread ran the change
        ran_on[scheduled_timestamp] = threading.current_thread().name
        if scheduled_timestamp == base + 1:
            held_inside.set()
            go_on.wait(10)  # the change of "held" stays in progress meanwhile

    scheduler.add_due_listener(listener)
    holder = threading.Thread(target=scheduler.reschedule, args=(ORG, "held", base + 1))
    holder.start()
    try:
        assert held_inside.wait(10)
        moved = scheduler.reschedule(ORG, "moved", base + 2)
        cancelled = scheduler.cancel(ORG, "cancelled", reason="not needed")
        with pytest.raises(CallNotReschedulable):
            scheduler.reschedule(ORG, "cancelled", base + 3)
        with pytest.raises(CallNotFound):
            scheduler.reschedule(ORG, "nobody", base + 3)
        created = scheduler.create_call(ORG, base + 4, call_id="new")
    finally:
        go_on.set()
        holder.join(10)
    assert "callschedule-changes" in {t.name for t in threading.enumerate()}  # the loop ran them
    # What follows each commit ran back in the thread that asked for the change.
    assert ran_on[base + 2] == ran_on[base + 4] == threading.current_thread().name
    assert ran_on[base + 1] == holder.name
    assert moved.new_scheduled_timestamp == base + 2
    assert scheduler.get_call(ORG, "moved").scheduled_timestamp == base + 2
    assert cancelled.execution_status is ExecutionStatus.CANCELLED
    assert scheduler.get_call(ORG, "new") == created
    assert [e.type for e in scheduler.events(ORG, "cancelled")] == [EventType.CREATED, EventType.CANCELLED]
    scheduler.close()
    assert "callschedule-changes" not in {t.name for t in threading.enumerate()}


def test_closing_answers_the_changes_threads_gave_the_loop(tmp_path: Path) -> None:
    scheduler = CallScheduler.open(f"sqlite:///{tmp_path / 'calls.db'}", load_entry_points=False)
    base = int(time.time()) + 3600
    for call_id in ("held", "waiting"):
        scheduler.create_call(ORG, base, call_id=call_id)
    held_inside, go_on = threading.Event(), threading.Event()
    answers: list[object] = []

    def listener(scheduled_timestamp: int) -> None:
        if scheduled_timestamp == base + 1:
            held_inside.set()
            go_on.wait(10)

    def change() -> None:
        try:
            answers.append(scheduler.reschedule(ORG, "waiting", base + 2).new_scheduled_timestamp)
        except StoreClosed as exc:
            answers.append(exc)

    scheduler.add_due_listener(listener)
    holder = threading.Thread(target=scheduler.reschedule, args=(ORG, "held", base + 1))
    holder.start()
    assert held_inside.wait(10)
    waiting = threading.Thread(target=change)
    waiting.start()
    deadline = time.monotonic() + 10
    while not scheduler._loop_thread.busy and time.monotonic() < deadline:
        time.sleep(0.001)  # until the change is given to the loop
    scheduler.close()  # returns once the change given to the loop is answered
    assert len(answers) == 1 and (answers[0] == base + 2 or isinstance(answers[0], StoreClosed))
    go_on.set()
    holder.join(10)
    waiting.join(10)


def _hold_a_change_in_progress(
    scheduler: CallScheduler, call_id: str, to: int
) -> tuple[threading.Thread, threading.Event]:
    """Start a thread whose change of ``call_id`` stays in progress (in its due listener) until
    the returned event is set: changes of other threads meanwhile go to the scheduler's loop."""
    inside, go_on = threading.Event(), threading.Event()

    def listener(scheduled_timestamp: int) -> None:
        if scheduled_timestamp == to:
            inside.set()
            go_on.wait(10)

    scheduler.add_due_listener(listener)
    holder = threading.Thread(target=scheduler.reschedule, args=(ORG, call_id, to))
    holder.start()
    assert inside.wait(10)
    return holder, go_on


def test_a_change_that_raises_system_exit_on_the_loop_leaves_the_scheduler_working(tmp_path: Path) -> None:
    exits = [SystemExit(3)]

    class ExitOnceOnTheLoop(callschedule.Clock):  # SystemExit in the middle of one change
        def now_ms(self) -> int:
            if threading.current_thread().name == "callschedule-changes" and exits:
                raise exits.pop()
            return super().now_ms()

    base = int(time.time()) + 3600
    scheduler = CallScheduler.open(
        f"sqlite:///{tmp_path / 'calls.db'}", clock=ExitOnceOnTheLoop(), load_entry_points=False
    )
    for call_id in ("held", "first", "second"):
        scheduler.create_call(ORG, base, call_id=call_id)
    holder, go_on = _hold_a_change_in_progress(scheduler, "held", base + 1)
    try:
        with pytest.raises(SystemExit):  # raised in the thread that asked for the change
            scheduler.reschedule(ORG, "first", base + 2)
        assert scheduler.reschedule(ORG, "second", base + 3).new_scheduled_timestamp == base + 3
    finally:
        go_on.set()
        holder.join(10)
    assert scheduler.get_call(ORG, "first").scheduled_timestamp == base  # nothing written
    assert scheduler.reschedule(ORG, "first", base + 4).new_scheduled_timestamp == base + 4
    scheduler.close()


def test_a_scheduler_dropped_without_close_leaves_no_thread_behind(tmp_path: Path) -> None:
    def loop_threads() -> int:
        return sum(t.name == "callschedule-changes" for t in threading.enumerate())

    before = loop_threads()
    scheduler = CallScheduler.open("memory://", load_entry_points=False)
    base = int(time.time()) + 3600
    for call_id in ("held", "other"):
        scheduler.create_call(ORG, base, call_id=call_id)
    holder, go_on = _hold_a_change_in_progress(scheduler, "held", base + 1)
    scheduler.reschedule(ORG, "other", base + 2)  # through the loop: its thread started
    go_on.set()
    holder.join(10)
    assert loop_threads() == before + 1
    del scheduler, holder
    gc.collect()
    deadline = time.monotonic() + 10
    while loop_threads() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loop_threads() == before
