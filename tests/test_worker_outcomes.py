"""What the worker records when an execution ends in an unusual way."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from callschedule import CallScheduler, ExecutionStatus, InvalidInput, RetryPolicy
from callschedule.executors import Attempt

ORG = "org-a"


def test_a_dial_cut_off_by_cancellation_is_a_failed_attempt_not_a_completed_call() -> None:
    def dial(call: Any, attempt: Attempt) -> Any:
        async def place() -> None:
            task = asyncio.ensure_future(asyncio.sleep(10))
            task.cancel()
            await task

        return asyncio.run(place())

    with CallScheduler.open("memory://") as scheduler:
        scheduler.create_call(ORG, int(time.time()), call_id="c1")
        with scheduler.worker(dial, retry=RetryPolicy(max_attempts=1)) as worker:
            worker.run_once()
        call = scheduler.get_call(ORG, "c1")
    assert call.execution_status is ExecutionStatus.FAILED
    assert "CancelledError" in str(call.outcome) or call.outcome is None


def test_two_organizations_calls_with_one_id_get_distinct_idempotency_keys() -> None:
    keys: list[str] = []
    with CallScheduler.open("memory://") as scheduler:
        scheduler.create_call("org-a", int(time.time()), call_id="welcome-call")
        scheduler.create_call("org-b", int(time.time()), call_id="welcome-call")
        with scheduler.worker(lambda call, attempt: keys.append(attempt.idempotency_key)) as worker:
            worker.run_until_idle()
    assert sorted(keys) == ["org-a:welcome-call:1", "org-b:welcome-call:1"]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("poll_interval", float("inf")),
        ("lease_seconds", float("nan")),
        ("stop_grace_seconds", -1),
        ("concurrency", 0),
        ("misfire", "later"),
    ],
)
def test_impossible_worker_settings_are_refused_up_front(setting: str, value: Any) -> None:
    with CallScheduler.open("memory://") as scheduler, pytest.raises(InvalidInput) as info:
        scheduler.worker("log", **{setting: value})
    assert info.value.field == setting


def test_impossible_retry_delays_are_refused_up_front() -> None:
    with pytest.raises(InvalidInput, match="max_delay"):
        RetryPolicy(max_delay=float("inf"))
