"""The worker in one process, on a driven clock: claim, execute, record, and every policy."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from callschedule import (
    CallingWindow,
    CallNotInProgress,
    CallScheduler,
    Conflict,
    EventType,
    ExecutionStatus,
    ExecutorNotFound,
    InvalidInput,
    RetryPolicy,
    SchedulingPolicy,
    hookimpl,
)
from callschedule.executors import Attempt, PermanentFailure, ReportLater, RetryLater

ORG = "org-789"
T0 = 1748452000  # 2025-05-28T17:06:40Z, the seed page's "now"
NO_JITTER = RetryPolicy(max_attempts=3, initial_delay=60, multiplier=2, jitter=0)


class Recorder:
    """An executor that records each attempt it is handed and answers from a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.attempts: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, call: Any, attempt: Attempt) -> Any:
        with self.lock:
            self.attempts.append(attempt.idempotency_key)
            answer = self.answers.pop(0) if self.answers else {"answered": True}
        if isinstance(answer, BaseException):
            raise answer
        return answer


def types(scheduler: CallScheduler, call_id: str) -> list[EventType]:
    return [e.type for e in scheduler.events(ORG, call_id)]


# -- claim, execute, record --------------------------------------------------------------------


def test_due_calls_are_executed_once_and_completed_with_their_outcome(
    scheduler: CallScheduler, frozen: Any
) -> None:
    scheduler.create_call(ORG, T0 + 10, call_id="due", payload={"to": "+15551234567"})
    scheduler.create_call(ORG, T0 + 3600, call_id="later")
    dial = Recorder({"duration": 42})
    worker = scheduler.worker(dial)

    assert worker.run_once() == 0  # nothing due yet
    frozen.tick(10)
    assert worker.run_once() == 1
    assert worker.run_once() == 0

    call = scheduler.get_call(ORG, "due")
    assert call.execution_status is ExecutionStatus.COMPLETED
    assert call.outcome == {"duration": 42}
    assert call.attempts == 1
    assert dial.attempts == [f"{ORG}:due:1"]
    assert types(scheduler, "due") == [EventType.CREATED, EventType.CLAIMED, EventType.COMPLETED]
    completed = scheduler.events(ORG, "due")[-1]
    assert completed.data == {"attempt": 1, "outcome": {"duration": 42}}
    assert scheduler.get_call(ORG, "later").execution_status is ExecutionStatus.PENDING


def test_event_listeners_hear_every_step_of_an_execution(store_url: str, frozen: Any) -> None:
    heard: list[tuple[str, EventType]] = []

    class Listener:
        @hookimpl
        def callschedule_event(self, call: Any, event: Any) -> None:
            heard.append((call.call_id, event.type))

    with CallScheduler.open(store_url, plugins=[Listener()]) as scheduler:
        scheduler.create_call(ORG, T0, call_id="c1")
        scheduler.worker(Recorder(RuntimeError("busy")), retry=NO_JITTER).run_once()
        frozen.tick(60)
        scheduler.worker(Recorder()).run_once()
        assert [kind for _, kind in heard] == [e.type for e in scheduler.events(ORG, "c1")]
    assert [kind for _, kind in heard] == [
        EventType.CREATED,
        EventType.CLAIMED,
        EventType.RETRY_SCHEDULED,
        EventType.CLAIMED,
        EventType.COMPLETED,
    ]


def test_async_executors_are_awaited(scheduler: CallScheduler) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")

    async def dial(call: Any, attempt: Attempt) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"key": attempt.idempotency_key}

    with scheduler.worker(dial) as worker:
        assert worker.run_once() == 1
    assert scheduler.get_call(ORG, "c1").outcome == {"key": f"{ORG}:c1:1"}


def test_calls_run_in_parallel_up_to_the_concurrency(scheduler: CallScheduler) -> None:
    for i in range(12):
        scheduler.create_call(ORG, T0, call_id=f"c{i:02}")
    # Five executions can only all pass this barrier if they run at the same time.
    together = threading.Barrier(5, timeout=10)

    def dial(call: Any, attempt: Attempt) -> None:
        together.wait()

    worker = scheduler.worker(dial, concurrency=5)
    assert worker.run_once() == 5
    assert worker.run_once() == 5
    statuses = [c.execution_status for c in scheduler.list_calls(ORG).calls]
    assert statuses.count(ExecutionStatus.COMPLETED) == 10
    assert statuses.count(ExecutionStatus.PENDING) == 2


def test_run_until_idle_executes_everything_due(scheduler: CallScheduler) -> None:
    for i in range(20):
        scheduler.create_call(ORG, T0, call_id=f"c{i:02}")
    dial = Recorder()
    assert scheduler.worker(dial, concurrency=3).run_until_idle() == 20
    assert sorted(dial.attempts) == [f"{ORG}:c{i:02}:1" for i in range(20)]


def test_a_result_that_is_not_json_is_kept_as_its_repr(scheduler: CallScheduler) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    scheduler.worker(Recorder({1, 2})).run_once()
    assert scheduler.get_call(ORG, "c1").outcome == "{1, 2}"


# -- retries -----------------------------------------------------------------------------------


def test_failed_attempts_are_retried_with_backoff_then_failed(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    dial = Recorder(RuntimeError("no answer"), RuntimeError("busy"), RuntimeError("busy"))
    worker = scheduler.worker(dial, retry=NO_JITTER)

    assert worker.run_once() == 1
    call = scheduler.get_call(ORG, "c1")
    assert call.execution_status is ExecutionStatus.PENDING
    assert call.scheduled_timestamp == T0 + 60
    retry_event = scheduler.events(ORG, "c1")[-1]
    assert retry_event.type is EventType.RETRY_SCHEDULED
    assert retry_event.data == {
        "attempt": 1,
        "retry_at": T0 + 60,
        "error": "RuntimeError (details in the worker's log)",
    }

    frozen.tick(59)
    assert worker.run_once() == 0
    frozen.tick(1)
    assert worker.run_once() == 1
    assert scheduler.get_call(ORG, "c1").scheduled_timestamp == T0 + 60 + 120  # doubled

    frozen.tick(120)
    assert worker.run_once() == 1
    call = scheduler.get_call(ORG, "c1")
    assert call.execution_status is ExecutionStatus.FAILED
    assert call.attempts == 3
    assert dial.attempts == [f"{ORG}:c1:1", f"{ORG}:c1:2", f"{ORG}:c1:3"]
    failed = scheduler.events(ORG, "c1")[-1]
    assert failed.type is EventType.FAILED
    assert "no attempts left: 3 of 3" in failed.data["error"]


def test_backoff_jitter_spreads_delays_within_its_bounds() -> None:
    policy = RetryPolicy(initial_delay=100, multiplier=3, max_delay=500, jitter=0.2)
    first = {policy.delay(1) for _ in range(200)}
    assert all(80 <= d <= 120 for d in first)
    assert len(first) > 100  # spread, not one value
    assert all(400 <= policy.delay(5) <= 600 for _ in range(200))  # capped at max_delay ±20%


def test_retry_later_moves_the_call_to_the_asked_time(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="delay")
    scheduler.create_call(ORG, T0, call_id="at")
    answers = {"delay": RetryLater(delay=300, reason="line busy"), "at": RetryLater(T0 + 7200)}

    def dial(call: Any, attempt: Attempt) -> Any:
        if attempt.number == 1:
            return answers[call.call_id]
        return "ok"

    worker = scheduler.worker(dial, retry=NO_JITTER)
    assert worker.run_once() == 2
    assert scheduler.get_call(ORG, "delay").scheduled_timestamp == T0 + 300
    assert scheduler.get_call(ORG, "at").scheduled_timestamp == T0 + 7200
    assert scheduler.events(ORG, "delay")[-1].data["error"] == "line busy"
    frozen.tick(300)
    assert worker.run_once() == 1
    assert scheduler.get_call(ORG, "delay").execution_status is ExecutionStatus.COMPLETED
    assert scheduler.get_call(ORG, "at").execution_status is ExecutionStatus.PENDING


def test_permanent_failure_fails_at_once(scheduler: CallScheduler) -> None:
    scheduler.create_call(ORG, T0, call_id="raised")
    scheduler.create_call(ORG, T0, call_id="returned")

    def dial(call: Any, attempt: Attempt) -> Any:
        if call.call_id == "raised":
            raise PermanentFailure("number disconnected")
        return PermanentFailure("do not call")

    scheduler.worker(dial, retry=NO_JITTER).run_until_idle()
    for call_id, reason in [("raised", "number disconnected"), ("returned", "do not call")]:
        call = scheduler.get_call(ORG, call_id)
        assert call.execution_status is ExecutionStatus.FAILED
        assert call.attempts == 1
        assert scheduler.events(ORG, call_id)[-1].data["error"] == reason


def test_retry_later_arguments_are_checked() -> None:
    with pytest.raises(InvalidInput, match="timeout"):
        ReportLater(timeout=-5)
    with pytest.raises(InvalidInput, match="at"):
        RetryLater(at=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="delay"):
        RetryLater(delay=-1)
    with pytest.raises(InvalidInput, match="either at or delay"):
        RetryLater(T0, delay=5)


# -- calling windows at execution --------------------------------------------------------------

WINDOW = CallingWindow(start=dt.time(9), end=dt.time(17))


@pytest.fixture
def windowed(store_url: str, frozen: Any) -> Iterator[CallScheduler]:
    # 2025-05-28 16:50 UTC
    frozen.move_to(dt.datetime(2025, 5, 28, 16, 50, tzinfo=dt.timezone.utc))
    with CallScheduler.open(store_url, policy=SchedulingPolicy(calling_window=WINDOW)) as scheduler:
        yield scheduler


def _utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())  # type: ignore[misc]


def test_a_retry_never_dials_outside_the_calling_window(windowed: CallScheduler, frozen: Any) -> None:
    windowed.create_call(ORG, _utc(2025, 5, 28, 16, 59), call_id="c1")
    dial = Recorder(RuntimeError("no answer"))
    worker = windowed.worker(dial, retry=RetryPolicy(initial_delay=600, jitter=0))
    frozen.move_to(dt.datetime(2025, 5, 28, 16, 59, tzinfo=dt.timezone.utc))
    assert worker.run_once() == 1

    # 16:59 + 10 minutes is after 17:00: the retry waits for tomorrow's 09:00.
    next_opening = _utc(2025, 5, 29, 9, 0)
    assert windowed.get_call(ORG, "c1").scheduled_timestamp == next_opening
    assert windowed.events(ORG, "c1")[-1].data["retry_at"] == next_opening
    frozen.move_to(dt.datetime(2025, 5, 28, 17, 9, tzinfo=dt.timezone.utc))
    assert worker.run_once() == 0
    frozen.move_to(dt.datetime(2025, 5, 29, 9, 0, tzinfo=dt.timezone.utc))
    assert worker.run_once() == 1
    assert dial.attempts == [f"{ORG}:c1:1", f"{ORG}:c1:2"]


def test_a_call_due_inside_the_window_but_claimed_after_it_closed_waits(
    windowed: CallScheduler, frozen: Any
) -> None:
    windowed.create_call(ORG, _utc(2025, 5, 28, 16, 59), call_id="c1")
    dial = Recorder()
    worker = windowed.worker(dial, misfire_grace_seconds=3600)
    frozen.move_to(dt.datetime(2025, 5, 28, 17, 5, tzinfo=dt.timezone.utc))  # the worker was late

    assert worker.run_once() == 0
    assert dial.attempts == []
    call = windowed.get_call(ORG, "c1")
    assert call.execution_status is ExecutionStatus.PENDING
    assert call.scheduled_timestamp == _utc(2025, 5, 29, 9, 0)
    assert call.attempts == 0
    deferred = windowed.events(ORG, "c1")[-1]
    assert deferred.type is EventType.WINDOW_DEFERRED
    assert deferred.data == {
        "previous_scheduled_timestamp": _utc(2025, 5, 28, 16, 59),
        "new_scheduled_timestamp": _utc(2025, 5, 29, 9, 0),
    }
    frozen.move_to(dt.datetime(2025, 5, 29, 9, 0, tzinfo=dt.timezone.utc))
    assert worker.run_once() == 1
    assert dial.attempts == [f"{ORG}:c1:1"]


def test_a_backlog_found_after_the_window_closed_all_waits_for_the_next_opening(
    windowed: CallScheduler, frozen: Any
) -> None:
    for i in range(5):
        windowed.create_call(ORG, _utc(2025, 5, 28, 16, 55) + i, call_id=f"c{i}")
    dial = Recorder()
    frozen.move_to(dt.datetime(2025, 5, 28, 17, 1, tzinfo=dt.timezone.utc))
    assert windowed.worker(dial, concurrency=10).run_until_idle() == 0
    assert dial.attempts == []
    for i in range(5):
        call = windowed.get_call(ORG, f"c{i}")
        assert call.scheduled_timestamp == _utc(2025, 5, 29, 9, 0)
        assert types(windowed, f"c{i}")[-1] is EventType.WINDOW_DEFERRED


# -- misfires ----------------------------------------------------------------------------------


def test_misfire_run_executes_overdue_calls(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    frozen.tick(8 * 3600)  # the system was down for the night
    dial = Recorder()
    assert scheduler.worker(dial, misfire="run").run_once() == 1
    assert dial.attempts == [f"{ORG}:c1:1"]


def test_misfire_skip_fails_overdue_calls_without_dialling(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="overdue")
    scheduler.create_call(ORG, T0 + 8 * 3600 - 30, call_id="in-grace")
    frozen.tick(8 * 3600)
    dial = Recorder()
    worker = scheduler.worker(dial, misfire="skip", misfire_grace_seconds=60)

    assert worker.run_until_idle() == 1
    assert dial.attempts == [f"{ORG}:in-grace:1"]
    call = scheduler.get_call(ORG, "overdue")
    assert call.execution_status is ExecutionStatus.FAILED
    assert call.attempts == 0
    skipped = scheduler.events(ORG, "overdue")[-1]
    assert skipped.type is EventType.MISFIRE_SKIPPED
    assert skipped.data["late_seconds"] == 8 * 3600


def test_misfire_move_waits_for_the_next_window_opening(windowed: CallScheduler, frozen: Any) -> None:
    windowed.create_call(ORG, _utc(2025, 5, 28, 16, 55), call_id="c1")
    frozen.move_to(dt.datetime(2025, 5, 29, 6, 0, tzinfo=dt.timezone.utc))  # down all night
    dial = Recorder()
    worker = windowed.worker(dial, misfire="move")

    assert worker.run_until_idle() == 0
    call = windowed.get_call(ORG, "c1")
    assert call.scheduled_timestamp == _utc(2025, 5, 29, 9, 0)
    moved = windowed.events(ORG, "c1")[-1]
    assert moved.type is EventType.MISFIRE_MOVED
    assert moved.data["previous_scheduled_timestamp"] == _utc(2025, 5, 28, 16, 55)
    assert moved.data["new_scheduled_timestamp"] == _utc(2025, 5, 29, 9, 0)
    frozen.move_to(dt.datetime(2025, 5, 29, 9, 0, tzinfo=dt.timezone.utc))
    assert worker.run_once() == 1
    assert dial.attempts == [f"{ORG}:c1:1"]


def test_misfire_move_inside_the_window_runs_now_and_says_it_was_late(
    windowed: CallScheduler, frozen: Any
) -> None:
    windowed.create_call(ORG, _utc(2025, 5, 28, 16, 55), call_id="c1")
    frozen.move_to(dt.datetime(2025, 5, 29, 10, 0, tzinfo=dt.timezone.utc))
    dial = Recorder()
    assert windowed.worker(dial, misfire="move").run_until_idle() == 1
    assert dial.attempts == [f"{ORG}:c1:1"]
    assert EventType.MISFIRE_MOVED in types(windowed, "c1")
    assert windowed.get_call(ORG, "c1").execution_status is ExecutionStatus.COMPLETED


# -- leases ------------------------------------------------------------------------------------


def _claim_as_dead_worker(scheduler: CallScheduler, lease_seconds: int = 30) -> None:
    now_ms = scheduler.clock.now_ms()
    claimed = scheduler.store.claim_due(
        now=now_ms // 1000,
        now_ms=now_ms,
        limit=100,
        lease_owner="dead-worker",
        lease_expires_at=now_ms + lease_seconds * 1000,
    )
    assert claimed


def test_an_expired_lease_is_retried_with_a_new_attempt(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    scheduler.create_call(ORG, T0 + 86400, call_id="untouched")
    _claim_as_dead_worker(scheduler)
    dial = Recorder()
    worker = scheduler.worker(dial, lease_expiry="retry", retry=RetryPolicy(initial_delay=5, jitter=0))

    frozen.tick(29)
    assert worker.run_until_idle() == 0  # the lease still holds
    assert scheduler.get_call(ORG, "c1").execution_status is ExecutionStatus.IN_PROGRESS
    frozen.tick(2)
    worker.run_until_idle()
    expired, retry = scheduler.events(ORG, "c1")[-2:]
    assert expired.type is EventType.LEASE_EXPIRED
    assert expired.data["lease_owner"] == "dead-worker"
    assert expired.data["action"] == "retry"
    assert retry.type is EventType.RETRY_SCHEDULED
    frozen.tick(5)
    assert worker.run_until_idle() == 1
    assert dial.attempts == [f"{ORG}:c1:2"]
    assert scheduler.get_call(ORG, "c1").execution_status is ExecutionStatus.COMPLETED
    assert types(scheduler, "untouched") == [EventType.CREATED]


def test_an_expired_lease_fails_the_call_under_the_fail_policy(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    _claim_as_dead_worker(scheduler)
    frozen.tick(31)
    dial = Recorder()
    scheduler.worker(dial, lease_expiry="fail").run_until_idle()
    assert dial.attempts == []
    call = scheduler.get_call(ORG, "c1")
    assert call.execution_status is ExecutionStatus.FAILED
    assert types(scheduler, "c1")[-2:] == [EventType.LEASE_EXPIRED, EventType.FAILED]


def test_an_expired_lease_on_the_last_attempt_fails(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    _claim_as_dead_worker(scheduler)
    frozen.tick(31)
    scheduler.worker(Recorder(), retry=RetryPolicy(max_attempts=1)).run_until_idle()
    assert scheduler.get_call(ORG, "c1").execution_status is ExecutionStatus.FAILED


def test_long_executions_extend_their_lease(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="long")
    expiries: list[int] = []

    def dial(call: Any, attempt: Attempt) -> str:
        # Runs in the execution's thread; the worker's own thread renews the lease meanwhile.
        expiries.append(call.lease_expires_at)
        for step in range(1, 5):  # 4 x 6 s: far past the 10 s lease the call was claimed with
            frozen.tick(6)
            now_ms = (T0 + 6 * step) * 1000
            for _ in range(500):
                stored = scheduler.store.get_call(ORG, "long")
                assert stored is not None
                if stored.lease_expires_at > now_ms:
                    break
                threading.Event().wait(0.01)
            expiries.append(stored.lease_expires_at)
            # What a rival worker would find to take over: nothing.
            assert scheduler.store.expired_leases(now_ms=now_ms, limit=10) == []
        return "done"

    worker = scheduler.worker(dial, lease_seconds=10, poll_interval=0.02)
    assert worker.run_once() == 1
    assert expiries[0] == (T0 + 10) * 1000
    assert all(expiry > (T0 + 6 * step) * 1000 for step, expiry in enumerate(expiries))
    call = scheduler.get_call(ORG, "long")
    assert call.execution_status is ExecutionStatus.COMPLETED
    assert call.attempts == 1
    assert EventType.LEASE_EXPIRED not in types(scheduler, "long")


# -- outcomes reported later -------------------------------------------------------------------


def test_a_dialer_reports_the_outcome_later_through_complete(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    worker = scheduler.worker(Recorder(ReportLater(timeout=600)))
    assert worker.run_once() == 1
    call = scheduler.get_call(ORG, "c1")
    assert call.execution_status is ExecutionStatus.IN_PROGRESS
    assert types(scheduler, "c1")[-1] is EventType.AWAITING_REPORT

    frozen.tick(120)
    done = scheduler.complete(ORG, "c1", outcome={"answered": True, "seconds": 95}, attempt=1)
    assert done.execution_status is ExecutionStatus.COMPLETED
    assert scheduler.get_call(ORG, "c1").outcome == {"answered": True, "seconds": 95}
    assert types(scheduler, "c1")[-1] is EventType.COMPLETED
    with pytest.raises(CallNotInProgress, match="completed"):
        scheduler.complete(ORG, "c1", outcome="again")


def test_complete_can_fail_or_retry_a_call(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="fail")
    scheduler.create_call(ORG, T0, call_id="retry")
    scheduler.worker(Recorder(ReportLater(), ReportLater())).run_once()

    scheduler.complete(ORG, "fail", PermanentFailure("voicemail"))
    scheduler.complete(ORG, "retry", RetryLater(delay=900), retry=NO_JITTER)
    assert scheduler.get_call(ORG, "fail").execution_status is ExecutionStatus.FAILED
    retried = scheduler.get_call(ORG, "retry")
    assert retried.execution_status is ExecutionStatus.PENDING
    assert retried.scheduled_timestamp == T0 + 900


def test_a_report_for_a_finished_attempt_is_refused(scheduler: CallScheduler, frozen: Any) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    worker = scheduler.worker(Recorder(ReportLater(timeout=60)), retry=RetryPolicy(initial_delay=0, jitter=0))
    worker.run_once()
    frozen.tick(61)  # no report came: the attempt is over, a new one starts
    worker.run_until_idle()
    assert scheduler.get_call(ORG, "c1").attempts == 2
    retry = next(e for e in scheduler.events(ORG, "c1") if e.type is EventType.RETRY_SCHEDULED)
    assert retry.data["error"] == "no report of the outcome arrived before its deadline"
    with pytest.raises(CallNotInProgress):
        scheduler.complete(ORG, "c1", "late report", attempt=1)


def test_a_stale_attempt_number_conflicts(scheduler: CallScheduler) -> None:
    scheduler.create_call(ORG, T0, call_id="c1")
    scheduler.worker(Recorder(ReportLater())).run_once()
    with pytest.raises(Conflict, match="attempt 2 is over"):
        scheduler.complete(ORG, "c1", "x", attempt=2)
    assert scheduler.get_call(ORG, "c1").execution_status is ExecutionStatus.IN_PROGRESS


# -- per-organization limit --------------------------------------------------------------------


def test_organization_limit_caps_calls_in_progress_per_organization(scheduler: CallScheduler) -> None:
    for org in ("org-a", "org-b"):
        for i in range(5):
            scheduler.create_call(org, T0, call_id=f"c{i}")
    # org-a already has one call in progress, held by another worker.
    scheduler.create_call("org-a", T0, call_id="held")
    held = scheduler.get_call("org-a", "held")
    busy = attrs.evolve(
        held,
        execution_status=ExecutionStatus.IN_PROGRESS,
        version=held.version + 1,
        lease_owner="other-worker",
        lease_expires_at=(T0 + 60) * 1000,
    )
    scheduler.store.update_call(busy, held.version, [])
    seen: list[str] = []

    def dial(call: Any, attempt: Attempt) -> None:
        seen.append(call.organization_id)

    worker = scheduler.worker(dial, concurrency=10, organization_limit=2)
    assert worker.run_once() == 3
    assert sorted(seen) == ["org-a", "org-b", "org-b"]
    assert worker.run_until_idle() == 7


# -- executors by name -------------------------------------------------------------------------


def test_the_log_executor_prints_each_call(
    scheduler: CallScheduler, capsys: pytest.CaptureFixture[str]
) -> None:
    scheduler.create_call(ORG, T0, call_id="c1", payload={"to": "+15551234567"})
    assert scheduler.worker("log").run_once() == 1
    out = capsys.readouterr().out
    assert "c1" in out
    assert "+15551234567" in out
    assert scheduler.get_call(ORG, "c1").outcome == {"logged": True}


def test_an_unknown_executor_name_is_refused(scheduler: CallScheduler) -> None:
    with pytest.raises(ExecutorNotFound, match="dialogic"):
        scheduler.worker("dialogic")


def test_webhook_options_are_checked(scheduler: CallScheduler) -> None:
    with pytest.raises(InvalidInput, match=r"executor_options\.url"):
        scheduler.worker("webhook", executor_options={"secret": "s"})
    with pytest.raises(InvalidInput, match="unknown webhook options"):
        scheduler.worker("webhook", executor_options={"url": "http://x", "secret": "s", "x": 1})


def test_worker_settings_are_checked(scheduler: CallScheduler) -> None:
    with pytest.raises(InvalidInput, match="concurrency"):
        scheduler.worker(Recorder(), concurrency=0)
    with pytest.raises(InvalidInput, match="misfire"):
        scheduler.worker(Recorder(), misfire="later")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="executor"):
        scheduler.worker(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="max_attempts"):
        RetryPolicy(max_attempts=0)
