"""Secrets stay out of reprs, logs, events and error bodies."""

from __future__ import annotations

import logging

import pytest

from callschedule import CallScheduler
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
