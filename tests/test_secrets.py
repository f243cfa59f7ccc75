"""Secrets stay out of reprs, logs, events and error bodies."""

from __future__ import annotations

import logging
import time

import pytest

from callschedule import CallScheduler, EventType, RetryPolicy
from callschedule.executors import WebhookExecutor

SECRET = "whsec-do-not-print-me"


def test_the_webhook_secret_is_not_in_the_executor_or_worker_repr() -> None:
    executor = WebhookExecutor(
        url="https://dialer.invalid/calls", secret=SECRET, headers={"Authorization": "Bearer " + SECRET}
    )
    assert SECRET not in repr(executor)
    with CallScheduler.open("memory://") as scheduler:
        worker = scheduler.worker(executor)
        assert SECRET not in repr(worker)


def test_api_secrets_are_not_stored_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with CallScheduler.open("memory://") as scheduler:
        key, secret = scheduler.create_api_key("org-a")
        scheduler.authenticate(key, secret)
        stored = scheduler.store.get_api_key(key)
        assert stored is not None
        assert secret not in repr(stored)
    assert secret not in caplog.text


def test_an_executors_error_text_stays_in_the_workers_log_not_the_call_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def dial(call: object, attempt: object) -> None:
        raise RuntimeError("could not reach postgres://dialer:hunter2@10.0.0.7/trunks")

    with CallScheduler.open("memory://") as scheduler:
        scheduler.create_call("org-a", int(time.time()), call_id="c1")
        with scheduler.worker(dial, retry=RetryPolicy(max_attempts=1)) as worker:
            worker.run_once()
        events = scheduler.events("org-a", "c1")
    assert "hunter2" not in repr([e.data for e in events])
    assert events[-1].type is EventType.FAILED
    assert "RuntimeError" in events[-1].data["error"]
    assert "hunter2" in caplog.text  # the operator still sees the whole error
