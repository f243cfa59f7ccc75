"""The worker's run loop in real time: waking, sleeping, stopping; and the webhook executor."""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callschedule import (
    CallNotInProgress,
    CallScheduler,
    Conflict,
    EventType,
    ExecutionStatus,
    RetryPolicy,
    Worker,
)
from callschedule._model import Call
from callschedule.executors import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    Attempt,
    ReportLater,
    WebhookExecutor,
    sign,
    verify_signature,
)
from callschedule.plugins.memory import MemoryStore

ORG = "org-1"
WAIT = 15.0  # generous bound for things that happen "at once"; never reached when it works


@pytest.fixture(params=["memory", "sqlite"])
def real_scheduler(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CallScheduler]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'c.db'}?synchronous=normal"
    with CallScheduler.open(url) as scheduler:
        yield scheduler


class Running:
    """``worker.run()`` in a thread, stopped and joined at the end of the test."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(install_signal_handlers=False)
        except BaseException as exc:  # surfaced by stop_and_join
            self.error = exc

    def stop_and_join(self, grace: float | None = None) -> None:
        self.worker.stop(grace)
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "run() did not return after stop()"
        assert self.error is None


def statuses(scheduler: CallScheduler) -> list[ExecutionStatus]:
    return [c.execution_status for c in scheduler.list_calls(ORG, limit=1000).calls]


def test_a_sleeping_worker_wakes_when_a_call_becomes_due_in_this_process(
    real_scheduler: CallScheduler,
) -> None:
    dialled = threading.Event()
    # A poll of a minute: only the in-process wake-up can explain a prompt dial.
    worker = real_scheduler.worker(lambda call, attempt: dialled.set(), poll_interval=60)
    running = Running(worker)
    try:
        real_scheduler.create_call(ORG, int(time.time()), call_id="now")
        assert dialled.wait(WAIT)
    finally:
        running.stop_and_join()
    assert real_scheduler.get_call(ORG, "now").execution_status is ExecutionStatus.COMPLETED


def test_a_worker_sleeps_until_the_next_due_time(real_scheduler: CallScheduler) -> None:
    dialled = threading.Event()
    real_scheduler.create_call(ORG, int(time.time()) + 2, call_id="soon")
    worker = real_scheduler.worker(lambda call, attempt: dialled.set(), poll_interval=60)
    running = Running(worker)
    try:
        assert dialled.wait(WAIT)  # woke for the due time, not for the minute-long poll
    finally:
        running.stop_and_join()


class CountingStore(MemoryStore):
    """A memory store that counts how often the worker asks it for due calls."""

    claims: int = 0

    def claim_due(self, **kwargs: Any) -> list[Call]:
        self.claims += 1
        return super().claim_due(**kwargs)


def test_an_idle_worker_does_not_spin() -> None:
    store = CountingStore()
    scheduler = CallScheduler(store=store)
    scheduler.create_call(ORG, int(time.time()) + 3600, call_id="later")
    running = Running(scheduler.worker(lambda c, a: None, poll_interval=0.5))
    try:
        time.sleep(1.2)
    finally:
        running.stop_and_join()
    # Woken only by its half-second poll: a handful of claims, not thousands.
    assert 1 <= store.claims <= 5


def test_graceful_stop_waits_for_calls_in_flight(real_scheduler: CallScheduler) -> None:
    now = int(time.time())
    for i in range(4):
        real_scheduler.create_call(ORG, now, call_id=f"c{i}")
    started = threading.Semaphore(0)
    release = threading.Event()

    def dial(call: Any, attempt: Attempt) -> str:
        started.release()
        release.wait(WAIT)
        return "answered"

    worker = real_scheduler.worker(dial, concurrency=4)
    running = Running(worker)
    for _ in range(4):
        assert started.acquire(timeout=WAIT)
    worker.stop(grace=WAIT)  # returns at once; run() now waits for the four
    real_scheduler.create_call(ORG, now, call_id="after-stop")
    assert running.thread.is_alive()
    release.set()
    running.stop_and_join()

    for i in range(4):
        assert real_scheduler.get_call(ORG, f"c{i}").execution_status is ExecutionStatus.COMPLETED
    # Nothing claimed after the stop, nothing left in progress.
    assert real_scheduler.get_call(ORG, "after-stop").execution_status is ExecutionStatus.PENDING
    assert ExecutionStatus.IN_PROGRESS not in statuses(real_scheduler)


def test_stop_releases_calls_still_running_after_the_grace_period(
    real_scheduler: CallScheduler,
) -> None:
    now = int(time.time())
    real_scheduler.create_call(ORG, now, call_id="stuck")
    started = threading.Event()
    release = threading.Event()

    def dial(call: Any, attempt: Attempt) -> str:
        started.set()
        release.wait(WAIT)
        return "too late"

    worker = real_scheduler.worker(dial, retry=RetryPolicy(max_attempts=3))
    running = Running(worker)
    assert started.wait(WAIT)
    running.stop_and_join(grace=0.1)

    call = real_scheduler.get_call(ORG, "stuck")
    assert call.execution_status is ExecutionStatus.PENDING  # given back, to run again
    assert call.lease_owner is None
    released = real_scheduler.events(ORG, "stuck")[-1]
    assert released.type is EventType.RELEASED
    assert released.data["attempt"] == 1
    release.set()
    # The abandoned attempt's late answer does not overwrite anything.
    time.sleep(0.1)
    assert real_scheduler.get_call(ORG, "stuck").execution_status is ExecutionStatus.PENDING


def test_async_executors_run_under_the_loop(real_scheduler: CallScheduler) -> None:
    import asyncio

    now = int(time.time())
    for i in range(5):
        real_scheduler.create_call(ORG, now, call_id=f"c{i}")
    done = threading.Semaphore(0)

    async def dial(call: Any, attempt: Attempt) -> str:
        await asyncio.sleep(0.01)
        done.release()
        return attempt.idempotency_key

    running = Running(real_scheduler.worker(dial, concurrency=5))
    try:
        for _ in range(5):
            assert done.acquire(timeout=WAIT)
    finally:
        running.stop_and_join()
    assert {c.outcome for c in real_scheduler.list_calls(ORG).calls} == {f"{ORG}:c{i}:1" for i in range(5)}


# -- the webhook executor ----------------------------------------------------------------------

SECRET = "whsec-test"


class Receiver(http.server.ThreadingHTTPServer):
    """A dialer's webhook endpoint on 127.0.0.1 that checks signatures like a receiver should."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dial"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {
                "body": json.loads(body),
                "verified": verify_signature(SECRET, body, self.headers[SIGNATURE_HEADER]),
                "idempotency_key": self.headers[IDEMPOTENCY_HEADER],
            }
        )
        status, headers, answer = self.server.answers.pop(0) if self.server.answers else (200, {}, b"{}")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver([])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_webhook_executor_posts_each_call_signed(receiver: Receiver) -> None:
    receiver.answers.append((200, {"Content-Type": "application/json"}, b'{"dialled": true}'))
    with CallScheduler.open("memory://") as scheduler:
        scheduler.create_call(ORG, int(time.time()), call_id="c1", payload={"to": "+15551234567"})
        worker = scheduler.worker("webhook", executor_options={"url": receiver.url, "secret": SECRET})
        assert worker.run_once() == 1
        worker.close()
        call = scheduler.get_call(ORG, "c1")
    [request] = receiver.received
    assert request["verified"] is True
    assert request["idempotency_key"] == f"{ORG}:c1:1"
    assert request["body"]["call"]["call_id"] == "c1"
    assert request["body"]["call"]["payload"] == {"to": "+15551234567"}
    assert request["body"]["attempt"] == {"number": 1, "idempotency_key": f"{ORG}:c1:1"}
    assert call.execution_status is ExecutionStatus.COMPLETED
    assert call.outcome == {"status_code": 200, "response": {"dialled": True}}


def test_webhook_answers_decide_retry_or_failure(receiver: Receiver) -> None:
    receiver.answers.extend(
        [
            (503, {"Retry-After": "120"}, b"busy"),  # c1: retry in two minutes
            (500, {}, b"oops"),  # c2: a failed attempt, retried under the policy
            (410, {}, b"gone"),  # c3: no point retrying
        ]
    )
    with CallScheduler.open("memory://") as scheduler:
        now = int(time.time())
        for i in (1, 2, 3):
            scheduler.create_call(ORG, now, call_id=f"c{i}")
        worker = scheduler.worker(
            "webhook",
            executor_options={"url": receiver.url, "secret": SECRET},
            concurrency=1,
            retry=RetryPolicy(initial_delay=600, jitter=0),
        )
        assert worker.run_until_idle() == 3
        worker.close()
        c1, c2, c3 = (scheduler.get_call(ORG, f"c{i}") for i in (1, 2, 3))
    assert c1.execution_status is ExecutionStatus.PENDING
    assert now + 120 <= c1.scheduled_timestamp <= now + 125
    assert c2.execution_status is ExecutionStatus.PENDING
    assert now + 600 <= c2.scheduled_timestamp <= now + 605
    assert c3.execution_status is ExecutionStatus.FAILED


def test_a_webhook_timeout_is_a_failed_attempt() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    executor = WebhookExecutor(
        url="http://dialer.invalid/", secret=SECRET, client=httpx.Client(transport=httpx.MockTransport(hang))
    )
    with CallScheduler.open("memory://") as scheduler:
        scheduler.create_call(ORG, int(time.time()), call_id="c1")
        scheduler.worker(executor, retry=RetryPolicy(initial_delay=60, jitter=0)).run_once()
        retry = scheduler.events(ORG, "c1")[-1]
    executor.close()
    assert retry.type is EventType.RETRY_SCHEDULED
    assert "ReadTimeout" in retry.data["error"]


def test_signatures_fail_for_a_changed_body_another_secret_or_an_old_timestamp() -> None:
    body = b'{"call": {"call_id": "c1"}}'
    now = 1748452000
    header = sign(SECRET, body, now)
    assert verify_signature(SECRET, body, header, now=now + 10)
    assert not verify_signature(SECRET, body + b" ", header, now=now)
    assert not verify_signature("another-secret", body, header, now=now)
    assert not verify_signature(SECRET, body, header, now=now + 301)  # a replay, five minutes on
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, "garbage")
    assert not verify_signature(SECRET, body, header.replace("v1=", "v1=0"), now=now)


def test_a_stop_before_run_starts_is_not_lost(real_scheduler: CallScheduler) -> None:
    real_scheduler.create_call(ORG, int(time.time()), call_id="c1")
    worker = real_scheduler.worker(lambda c, a: None)
    worker.stop()
    running = Running(worker)
    running.thread.join(WAIT)
    assert not running.thread.is_alive()
    assert real_scheduler.get_call(ORG, "c1").execution_status is ExecutionStatus.PENDING


class FlakyStore(MemoryStore):
    """A memory store whose first claims fail, as a database that restarts would."""

    failures: int = 2

    def claim_due(self, **kwargs: Any) -> list[Call]:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().claim_due(**kwargs)


def test_a_worker_survives_store_errors_and_carries_on() -> None:
    scheduler = CallScheduler(store=FlakyStore())
    scheduler.create_call(ORG, int(time.time()), call_id="c1")
    dialled = threading.Event()
    running = Running(scheduler.worker(lambda c, a: dialled.set(), poll_interval=0.05))
    try:
        assert dialled.wait(WAIT)
    finally:
        running.stop_and_join()
    assert scheduler.get_call(ORG, "c1").execution_status is ExecutionStatus.COMPLETED


class FailingWritesStore(MemoryStore):
    """A memory store whose writes of outcomes fail twice before the store comes back."""

    failures: int = 2

    def update_call(self, call: Call, expected_version: int, events: Any) -> Call:
        if call.execution_status is ExecutionStatus.COMPLETED and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return super().update_call(call, expected_version, events)


def test_an_outcome_is_written_once_the_store_comes_back_not_dialled_again() -> None:
    store = FailingWritesStore()
    scheduler = CallScheduler(store=store)
    scheduler.create_call(ORG, int(time.time()), call_id="c1")
    dialled: list[str] = []
    worker = scheduler.worker(lambda c, a: dialled.append(a.idempotency_key) or "answered")
    assert worker.run_until_idle() == 1
    assert store.failures == 0
    assert dialled == [f"{ORG}:c1:1"]
    call = scheduler.get_call(ORG, "c1")
    assert call.execution_status is ExecutionStatus.COMPLETED
    assert call.outcome == "answered"


def test_a_late_report_racing_the_lease_recovery_wins_or_loses_whole(
    real_scheduler: CallScheduler,
) -> None:
    ids = [f"c{i:03}" for i in range(150)]
    for call_id in ids:
        real_scheduler.create_call(ORG, int(time.time()), call_id=call_id)
    # Every call placed, its report due at once: each is both reportable and recoverable.
    placer = real_scheduler.worker(lambda c, a: ReportLater(timeout=0), concurrency=len(ids))
    assert placer.run_once() == len(ids)
    time.sleep(0.01)
    reported: dict[str, bool] = {}

    def report() -> None:
        for call_id in reversed(ids):  # the recovery goes the other way: they meet
            try:
                real_scheduler.complete(ORG, call_id, {"answered": True}, attempt=1)
                reported[call_id] = True
            except (CallNotInProgress, Conflict):
                reported[call_id] = False

    reporter = threading.Thread(target=report)
    recoverer = real_scheduler.worker(lambda c, a: None, retry=RetryPolicy(initial_delay=3600))
    reporter.start()
    while reporter.is_alive():
        recoverer.run_once()
    reporter.join()
    recoverer.run_once()

    outcomes: Counter[str] = Counter()
    for call_id in ids:
        call = real_scheduler.get_call(ORG, call_id)
        kinds = [e.type for e in real_scheduler.events(ORG, call_id)]
        if reported[call_id]:
            assert call.execution_status is ExecutionStatus.COMPLETED
            assert EventType.LEASE_EXPIRED not in kinds
            outcomes["reported"] += 1
        else:
            assert call.execution_status is ExecutionStatus.PENDING  # recovered: a new attempt later
            assert EventType.COMPLETED not in kinds
            assert kinds[-2:] == [EventType.LEASE_EXPIRED, EventType.RETRY_SCHEDULED]
            outcomes["recovered"] += 1
    assert sum(outcomes.values()) == len(ids)


def test_a_second_stop_with_a_shorter_grace_ends_the_wait(real_scheduler: CallScheduler) -> None:
    real_scheduler.create_call(ORG, int(time.time()), call_id="stuck")
    started = threading.Event()
    release = threading.Event()

    def dial(call: Any, attempt: Attempt) -> str:
        started.set()
        release.wait(WAIT)
        return "too late"

    running = Running(real_scheduler.worker(dial))
    try:
        assert started.wait(WAIT)
        running.worker.stop(grace=3600)  # would wait an hour for the stuck call...
        time.sleep(0.1)
        assert running.thread.is_alive()
        running.stop_and_join(grace=0)  # ...until told to stop now: it is released at once
        assert real_scheduler.get_call(ORG, "stuck").execution_status is ExecutionStatus.PENDING
        assert real_scheduler.events(ORG, "stuck")[-1].type is EventType.RELEASED
    finally:
        release.set()


class FailingRoundStore(MemoryStore):
    """A memory store whose first write of outcomes together with a claim fails whole."""

    failed = threading.Event()

    def update_calls_and_claim_due(self, changes: Any, **claim: Any) -> Any:
        if changes and not self.failed.is_set():
            self.failed.set()
            raise sqlite3.OperationalError("disk I/O error")
        return super().update_calls_and_claim_due(changes, **claim)


def test_outcomes_whose_round_with_the_claim_failed_are_written_apart_and_work_goes_on() -> None:
    store = FailingRoundStore()
    scheduler = CallScheduler(store=store)
    scheduler.create_call(ORG, int(time.time()), call_id="c1")
    dialled: list[str] = []
    second = threading.Event()

    def dial(call: Call, attempt: Any) -> str:
        dialled.append(attempt.idempotency_key)
        if call.call_id == "c2":
            second.set()
        return "answered"

    running = Running(scheduler.worker(dial, poll_interval=0.05))
    try:
        assert store.failed.wait(WAIT)
        scheduler.create_call(ORG, int(time.time()), call_id="c2")
        assert second.wait(WAIT)
    finally:
        running.stop_and_join()
    assert dialled == [f"{ORG}:c1:1", f"{ORG}:c2:1"]
    assert statuses(scheduler) == [ExecutionStatus.COMPLETED, ExecutionStatus.COMPLETED]
    assert [e.type.value for e in scheduler.events(ORG, "c1")] == ["created", "claimed", "completed"]
