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


def test_a_call_made_due_while_the_worker_claims_is_not_slept_through() -> None:
    """A create that commits between the worker's claim and its sleep wakes it (a poll of a
    minute would otherwise hide the call for a minute)."""
    import threading

    from callschedule.plugins.memory import MemoryStore

    scheduler_box: list[CallScheduler] = []

    class CreateDuringFirstClaim(MemoryStore):
        first = True

        def claim_due(self, **kwargs: Any) -> Any:
            claimed = super().claim_due(**kwargs)
            if self.first:
                self.first = False
                scheduler_box[0].create_call(ORG, int(time.time()), call_id="slipped-in")
            return claimed

    dialled = threading.Event()
    with CallScheduler(store=CreateDuringFirstClaim()) as scheduler:
        scheduler_box.append(scheduler)
        worker = scheduler.worker(lambda call, attempt: dialled.set(), poll_interval=60)
        thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
        thread.start()
        try:
            assert dialled.wait(15), "the worker slept through a call made due during its claim"
        finally:
            worker.stop(grace=5)
            thread.join(15)
