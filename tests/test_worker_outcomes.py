"""What the worker records when an execution ends in an unusual way."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from callschedule import CallScheduler, ExecutionStatus, RetryPolicy
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
