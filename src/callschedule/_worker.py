"""The worker: claims due calls, hands each to the executor once per attempt, records the outcome.

Threads: the thread that calls :meth:`Worker.run` (or ``run_once``) does every read of the clock
and every write to the store: it claims calls, records outcomes, renews leases, recovers expired
ones and sleeps. Each claimed call's executor runs in a thread of a pool (as many threads as
executions at once, at most ``concurrency`` unless an abandoned execution still holds one;
a thread idle for a few seconds ends) and hands its result back; ``async`` executors run on one event loop
thread shared by the worker's executions. Keeping the clock on one thread also keeps a frozen
clock (freezegun, which reads real time for code called from threading) consistent in tests.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import attrs

from callschedule import _events, _json
from callschedule._model import Call, Event, ExecutionStatus, Source
from callschedule._rules import CallingWindow
from callschedule.exceptions import CallScheduleError, Conflict, InvalidInput
from callschedule.executors import Attempt, Executor, PermanentFailure, ReportLater, RetryLater

if TYPE_CHECKING:
    from callschedule._scheduler import CallScheduler

logger = logging.getLogger("callschedule.worker")

MisfirePolicy = Literal["run", "skip", "move"]

#: How long an execution thread waits for another call before it ends.
_THREAD_IDLE_SECONDS = 5.0
LeaseExpiryPolicy = Literal["retry", "fail"]

#: The lease owner of a call whose executor returned ``ReportLater``: no worker holds it.
AWAITING_REPORT = "awaiting-report"


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _finite(value) or not value > 0:
        raise InvalidInput(attribute.name, f"expected a finite positive number, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _finite(value) or value < 0:
        raise InvalidInput(attribute.name, f"expected a finite non-negative number, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(attribute.name, f"expected a positive integer, got {value!r}")


def _one_of(*allowed: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise InvalidInput(attribute.name, f"expected one of {', '.join(allowed)}, got {value!r}")

    return check


@attrs.frozen
class RetryPolicy:
    """How failed attempts are retried.

    - ``max_attempts``: attempts in all, the first included (1: never retry).
    - ``initial_delay``: seconds after the first failed attempt; each further failure
      multiplies it by ``multiplier``, up to ``max_delay``.
    - ``jitter``: each delay is spread by up to this fraction either way (0.1: ±10%), so calls
      that failed together do not retry together.
    """

    max_attempts: int = attrs.field(default=3, validator=_positive_int)
    initial_delay: float = attrs.field(default=60.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=3600.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        exponent = max(0, failed_attempt - 1)
        try:
            base = min(self.max_delay, self.initial_delay * self.multiplier**exponent)
        except OverflowError:
            base = self.max_delay
        if self.jitter:
            spread = min(self.jitter, 1.0)
            base *= 1 + (rng or random).uniform(-spread, spread)
        return max(0.0, base)


# -- what an attempt's result does to its call (pure; shared with CallScheduler.complete) ------


#: ``json.dumps(value, allow_nan=False)``, without building an encoder for every outcome.
_strict_dumps = _json.make_dumps(allow_nan=False)


def _jsonable(value: Any) -> Any:
    try:
        _strict_dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _describe(error: BaseException) -> str:
    """The full text of an executor's error, for the worker's log (the operator's eyes only)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _public_error(error: BaseException) -> str:
    """What the call's event log, which its organization reads, says of an unexpected error.

    Only the exception's type: its text may hold what the organization must not see (a driver's
    connection string, another system's error page). The full text is in the worker's log.
    Reasons given on purpose (``RetryLater(reason=...)``, ``PermanentFailure(reason)``) are
    written as they are.
    """
    return f"{type(error).__name__} (details in the worker's log)"


def _in_window(at: int, call: Call, window: CallingWindow | None) -> int:
    return at if window is None else window.next_allowed(at, call.timezone)


def _failed(call: Call, now_ms: int, error: str, source: Source) -> tuple[Call, list[Event]]:
    new = attrs.evolve(
        call,
        execution_status=ExecutionStatus.FAILED,
        version=call.version + 1,
        updated_at=now_ms,
        lease_owner=None,
        lease_expires_at=None,
    )
    return new, [_events.failed(new, now_ms, error, source)]


def _retry_at(
    call: Call,
    now_ms: int,
    at: int,
    error: str,
    *,
    retry: RetryPolicy,
    window: CallingWindow | None,
    source: Source,
) -> tuple[Call, list[Event]]:
    if call.attempts >= retry.max_attempts:
        return _failed(
            call, now_ms, f"{error} (no attempts left: {call.attempts} of {retry.max_attempts})", source
        )
    when = _in_window(max(at, now_ms // 1000), call, window)
    new = attrs.evolve(
        call,
        execution_status=ExecutionStatus.PENDING,
        scheduled_timestamp=when,
        version=call.version + 1,
        updated_at=now_ms,
        lease_owner=None,
        lease_expires_at=None,
    )
    return new, [_events.retry_scheduled(new, now_ms, when, error, source)]


def settle(
    call: Call,
    result: Any,
    *,
    now_ms: int,
    retry: RetryPolicy,
    window: CallingWindow | None,
    source: Source,
    rng: random.Random | None = None,
) -> tuple[Call, list[Event]]:
    """The in-progress ``call`` after its attempt ended with ``result``, and the events saying so.

    ``result`` is what the executor returned, or the exception it raised (see
    :mod:`callschedule.executors` for what each kind means).
    """
    now = now_ms // 1000
    if isinstance(result, ReportLater):
        new = attrs.evolve(
            call,
            version=call.version + 1,
            updated_at=now_ms,
            lease_owner=AWAITING_REPORT,
            lease_expires_at=now_ms + math.ceil(result.timeout * 1000),
        )
        return new, [_events.awaiting_report(new, now_ms)]
    if isinstance(result, PermanentFailure):
        return _failed(call, now_ms, result.reason, source)
    if isinstance(result, RetryLater):
        if result.at is not None:
            at = result.at
        elif result.delay is not None:
            at = now + math.ceil(result.delay)
        else:
            at = now + math.ceil(retry.delay(call.attempts, rng))
        return _retry_at(
            call,
            now_ms,
            at,
            result.reason or "retry requested",
            retry=retry,
            window=window,
            source=source,
        )
    if isinstance(result, BaseException):
        at = now + math.ceil(retry.delay(call.attempts, rng))
        return _retry_at(call, now_ms, at, _public_error(result), retry=retry, window=window, source=source)
    outcome = _jsonable(result)
    new = attrs.evolve(
        call,
        execution_status=ExecutionStatus.COMPLETED,
        version=call.version + 1,
        updated_at=now_ms,
        lease_owner=None,
        lease_expires_at=None,
        outcome=outcome,
    )
    return new, [_events.completed(new, now_ms, outcome, source)]


# -- the worker --------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Running:
    """A claimed call whose attempt is being executed by this worker."""

    call: Call
    attempt: Attempt
    result: Any = None
    abandoned: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.call.organization_id, self.call.call_id)


@attrs.frozen
class _Cycle:
    claimed: int = 0
    executed: int = 0
    recovered: int = 0
    limit: int = 0


class _AsyncRunner:
    """One event loop in a daemon thread for the worker's ``async`` executors."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, awaitable: Awaitable[Any]) -> Any:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="callschedule-async", daemon=True
                )
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), loop).result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@attrs.define(eq=False)
class Worker:
    """Hands each due call to ``executor`` at its time; build one with :meth:`CallScheduler.worker`.

    See ``docs/worker.md`` for the policies. Thread-safe: :meth:`stop` may be called from any
    thread or a signal handler.
    """

    scheduler: CallScheduler
    executor: Executor
    concurrency: int = attrs.field(default=8, validator=_positive_int)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    lease_seconds: float = attrs.field(default=60.0, validator=_positive)
    lease_expiry: LeaseExpiryPolicy = attrs.field(default="retry", validator=_one_of("retry", "fail"))
    misfire: MisfirePolicy = attrs.field(default="run", validator=_one_of("run", "skip", "move"))
    misfire_grace_seconds: float = attrs.field(default=60.0, validator=_non_negative)
    organization_limit: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive_int)
    )
    poll_interval: float = attrs.field(default=1.0, validator=_positive)
    stop_grace_seconds: float = attrs.field(default=30.0, validator=_non_negative)
    worker_id: str = attrs.field(factory=_default_worker_id)
    rng: random.Random = attrs.field(factory=random.Random)
    close_executor: bool = False

    _inflight: dict[tuple[str, str], _Running] = attrs.field(factory=dict, init=False)
    _done: list[_Running] = attrs.field(factory=list, init=False)
    _cond: threading.Condition = attrs.field(factory=threading.Condition, init=False)
    _wake: threading.Event = attrs.field(factory=threading.Event, init=False)
    _stopping: threading.Event = attrs.field(factory=threading.Event, init=False)
    _grace: float | None = attrs.field(default=None, init=False)
    _drain_deadline: float | None = attrs.field(default=None, init=False)
    _sleep_until: float = attrs.field(default=0.0, init=False)
    _async: _AsyncRunner = attrs.field(factory=_AsyncRunner, init=False)
    _running_loop: bool = attrs.field(default=False, init=False)
    _jobs: queue.SimpleQueue[_Running] = attrs.field(factory=queue.SimpleQueue, init=False)
    _pool_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _idle_threads: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if not callable(self.executor):
            raise InvalidInput("executor", f"expected a callable or an executor name, got {self.executor!r}")

    @property
    def _lease_ms(self) -> int:
        return math.ceil(self.lease_seconds * 1000)

    # -- public API ---------------------------------------------------------------------------

    def run(self, install_signal_handlers: bool = True) -> None:
        """Work until :meth:`stop` (or SIGINT/SIGTERM, if ``install_signal_handlers``).

        Sleeps until the next due call, woken early when a call of this process becomes due
        sooner and at least every ``poll_interval`` seconds for changes by other processes.
        On stop it claims nothing more, waits up to the grace period for running executions
        and gives back (releases) what is still running after it.
        """
        restore = self._install_signal_handlers() if install_signal_handlers else None
        self._running_loop = True
        self.scheduler.add_due_listener(self._on_due)
        unsubscribe = self.scheduler.store.subscribe_due(self._on_due)
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                # Until the next sleep is planned, any call made due wakes it: a create that
                # commits during this cycle must not be missed by the sleep computed after it.
                self._sleep_until = math.inf
                try:
                    cycle = self._cycle()
                    if self._stopping.is_set():
                        break
                    if cycle.limit and cycle.claimed == cycle.limit and self._free_slots() > 0:
                        continue  # a full batch: more may be due right now
                    timeout = self._sleep_seconds()
                except Exception:
                    # The store is unreachable or locked for longer than its timeout: keep the
                    # calls in flight, try again after a poll interval, don't die.
                    logger.exception("worker %s: store operation failed; retrying", self.worker_id)
                    timeout = self.poll_interval
                self._wake.wait(timeout)
        finally:
            self.scheduler.remove_due_listener(self._on_due)
            unsubscribe()
            try:
                grace = self.stop_grace_seconds if self._grace is None else self._grace
                self._drain(grace)
            finally:
                self._running_loop = False
                self._stopping.clear()  # a later run() starts afresh
                self._grace = None
                self._drain_deadline = None
                self.close()
                if restore is not None:
                    restore()

    def run_once(self) -> int:
        """Recover expired leases, claim up to ``concurrency`` calls due now, execute them, record
        their outcomes, and return how many were handed to the executor."""
        cycle = self._cycle()
        self._wait_idle()
        return cycle.executed

    def run_until_idle(self) -> int:
        """Repeat :meth:`run_once` until nothing is due now; return how many were executed."""
        total = 0
        while True:
            cycle = self._cycle()
            self._wait_idle()
            total += cycle.executed
            if cycle.claimed == 0 and cycle.recovered == 0:
                return total

    def stop(self, grace: float | None = None) -> None:
        """Ask :meth:`run` to stop: claim nothing more, wait up to ``grace`` seconds (default
        ``stop_grace_seconds``) for running executions, then release what still runs.

        Returns at once; safe from any thread and from signal handlers. Called again during
        the grace period with a shorter ``grace`` (``0``: release now), it shortens it.
        """
        if grace is not None:
            _non_negative(self, attrs.fields(Worker).stop_grace_seconds, grace)
            self._grace = grace
            deadline = self._drain_deadline
            if deadline is not None:
                self._drain_deadline = min(deadline, time.monotonic() + grace)
        self._stopping.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the event loop of ``async`` executors and close a named executor's connections."""
        self._async.close()
        close = getattr(self.executor, "close", None)
        if self.close_executor and callable(close):
            close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        """How many calls this worker is executing now."""
        with self._cond:
            return len(self._inflight)

    # -- one pass -----------------------------------------------------------------------------

    def _cycle(self) -> _Cycle:
        self._renew_leases()
        recovered = self._recover_expired()
        done, changes = self._take_done()
        with self._cond:
            # The finished executions' slots are free once their outcomes are written below.
            freed = sum(1 for running in done if self._inflight.get(running.key) is running)
            limit = max(0, self.concurrency - len(self._inflight) + freed)
        if limit == 0 or (self._stopping.is_set() and self._running_loop):
            self._record(done, changes)
            return _Cycle(recovered=recovered)
        try:
            # The outcomes and the next claim in one round of the store (one commit on SQLite).
            results, claimed = self.scheduler.commit_changes_and_claim_due(
                changes,
                limit=limit,
                lease_owner=self.worker_id,
                lease_seconds=self.lease_seconds,
                organization_limit=self.organization_limit,
            )
        except Exception as exc:
            # The store failed: write the outcomes apart, retrying (if they were written
            # already they conflict, harmlessly), then claim on its own as before.
            logger.warning("store error recording outcomes and claiming: %s; one at a time", exc)
            self._record(done, changes)
            claimed = self._claim(limit)
        else:
            self._free(done)
            self._log_refused(changes, results, "record the outcome of")
        now_ms = self.scheduler.clock.now_ms()
        executed = 0
        given_back: list[tuple[Call, int, list[Event]]] = []
        for call in sorted(claimed, key=lambda c: (c.scheduled_timestamp, c.call_id)):
            change = self._admit(call, now_ms)
            if change is None:
                self._dispatch(call, now_ms)
                executed += 1
            else:
                given_back.append(change)
        if len(given_back) == 1:
            self._commit_quietly(*given_back[0], "give back")
        elif given_back:  # a backlog found outside the window, or overdue: one commit
            self._commit_all_quietly(given_back, "give back")
        return _Cycle(claimed=len(claimed), executed=executed, recovered=recovered, limit=limit)

    def _claim(self, limit: int) -> list[Call]:
        return self.scheduler.claim_due(
            limit=limit,
            lease_owner=self.worker_id,
            lease_seconds=self.lease_seconds,
            organization_limit=self.organization_limit,
        )

    def _free_slots(self) -> int:
        with self._cond:
            return max(0, self.concurrency - len(self._inflight))

    def _admit(self, call: Call, now_ms: int) -> tuple[Call, int, list[Event]] | None:
        """``None`` if the claimed call runs now; else the change that gives it back under the
        misfire policy or the calling window, with the event that says why."""
        now = now_ms // 1000
        window = self.scheduler.policy.calling_window
        late = now - call.scheduled_timestamp
        unclaimed: dict[str, Any] = {
            "attempts": call.attempts - 1,  # this attempt was never handed to the executor
            "version": call.version + 1,
            "updated_at": now_ms,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        events: list[Event]
        if self.misfire != "run" and late > self.misfire_grace_seconds:
            if self.misfire == "skip":
                new = attrs.evolve(call, execution_status=ExecutionStatus.FAILED, **unclaimed)
                events = [_events.misfire_skipped(new, now_ms, late)]
            else:
                new = attrs.evolve(
                    call,
                    execution_status=ExecutionStatus.PENDING,
                    scheduled_timestamp=_in_window(now, call, window),
                    **unclaimed,
                )
                events = [_events.misfire_moved(new, now_ms, call.scheduled_timestamp, late)]
        elif window is not None and not window.contains(now, call.timezone):
            new = attrs.evolve(
                call,
                execution_status=ExecutionStatus.PENDING,
                scheduled_timestamp=window.next_allowed(now, call.timezone),
                **unclaimed,
            )
            events = [_events.window_deferred(new, now_ms, call.scheduled_timestamp)]
        else:
            return None
        return new, call.version, events

    # -- executing ----------------------------------------------------------------------------

    def _dispatch(self, call: Call, now_ms: int) -> None:
        attempt = Attempt(
            call_id=call.call_id,
            organization_id=call.organization_id,
            number=call.attempts,
            started_at=now_ms,
        )
        running = _Running(call, attempt)
        with self._cond:
            self._inflight[running.key] = running
        self._jobs.put(running)
        with self._pool_lock:
            if self._idle_threads > 0:
                self._idle_threads -= 1  # an idle thread of the pool takes it
                return
        threading.Thread(target=self._pool_thread, name="callschedule-execute", daemon=True).start()

    def _pool_thread(self) -> None:
        """An execution thread: runs claimed calls one after another, ends once idle a while.

        ``_idle_threads`` counts the idle threads no queued job is promised to; a thread ends
        only by taking one of those, so every queued job keeps a thread that will run it.
        Daemon threads: an execution that never returns must not keep the process alive.
        """
        while True:
            try:
                running = self._jobs.get(timeout=_THREAD_IDLE_SECONDS)
            except queue.Empty:
                with self._pool_lock:
                    if self._idle_threads > 0:
                        self._idle_threads -= 1
                        return
                continue  # every idle thread is promised to a job: stay for it
            self._execute(running)
            with self._pool_lock:
                self._idle_threads += 1

    def _execute(self, running: _Running) -> None:
        """In the execution's own thread: run the executor, hand the result to the loop thread."""
        try:
            running.result = self._invoke(running.call, running.attempt)
        finally:
            with self._cond:
                self._done.append(running)
                self._cond.notify_all()
            self._wake.set()

    def _invoke(self, call: Call, attempt: Attempt) -> Any:
        try:
            result = self.executor(call, attempt)
            if inspect.isawaitable(result):
                result = self._async.run(result)
        except BaseException as exc:  # a dial cut off (CancelledError, SystemExit) is not a success
            if not isinstance(exc, RetryLater | PermanentFailure):
                logger.warning(
                    "attempt %s of call %s failed: %s", attempt.number, call.call_id, _describe(exc)
                )
            return exc
        return result

    def _collect(self) -> None:
        """Record the outcomes of finished executions and free their slots.

        The outcomes are decided here, on the clock's thread, and written as one batch, which
        a store that can (SQLite, PostgreSQL) commits in one transaction instead of one each.
        """
        self._record(*self._take_done())

    def _record(self, done: list[_Running], changes: list[tuple[Call, int, list[Event]]]) -> None:
        """Write the outcomes of ``done`` (retrying while the store fails), then free their slots."""
        try:
            self._write_outcomes(changes)
        finally:
            self._free(done)

    def _free(self, done: list[_Running]) -> None:
        with self._cond:
            for running in done:
                if self._inflight.get(running.key) is running:
                    del self._inflight[running.key]

    def _take_done(self) -> tuple[list[_Running], list[tuple[Call, int, list[Event]]]]:
        """The finished executions, and the changes that record their outcomes."""
        with self._cond:
            done, self._done = self._done, []
        if not done:
            return done, []
        now_ms = self.scheduler.clock.now_ms()
        changes: list[tuple[Call, int, list[Event]]] = []
        for running in done:
            if running.abandoned:
                logger.warning(
                    "attempt %s of call %s finished after the worker gave it up; outcome %r not recorded",
                    running.attempt.number,
                    running.call.call_id,
                    running.result,
                )
                continue
            new, events = settle(
                running.call,
                running.result,
                now_ms=now_ms,
                retry=self.retry,
                window=self.scheduler.policy.calling_window,
                source=Source.WORKER,
                rng=self.rng,
            )
            changes.append((new, running.call.version, events))
        return done, changes

    def _write_outcomes(self, changes: list[tuple[Call, int, list[Event]]]) -> None:
        """Write known outcomes; while the store fails (a restart, a lock held too long), try
        again with backoff rather than drop them, for up to half a lease. An outcome dropped
        here would come back, through the lease expiry, as a second dial of a call that ran."""
        delay, deadline = 0.05, time.monotonic() + self.lease_seconds / 2
        while changes:
            try:
                if len(changes) == 1:
                    self._commit_quietly(*changes[0], "record the outcome of")
                else:
                    self._commit_all_quietly(changes, "record the outcome of")
                return
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    logger.exception("giving up recording %d outcomes after store errors", len(changes))
                    return
                logger.warning(
                    "store error recording %d outcomes, again in %.2fs: %s", len(changes), delay, exc
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _commit_all_quietly(self, changes: list[tuple[Call, int, list[Event]]], what: str) -> None:
        try:
            results = self.scheduler.commit_changes(changes)
        except CallScheduleError:
            logger.exception("could not %s %d calls", what, len(changes))
            return
        self._log_refused(changes, results, what)

    def _log_refused(
        self,
        changes: list[tuple[Call, int, list[Event]]],
        results: list[Call | CallScheduleError],
        what: str,
    ) -> None:
        for (call, _, _), result in zip(changes, results, strict=True):
            if isinstance(result, Conflict):
                self._log_conflict(what, call)
            elif isinstance(result, CallScheduleError):
                logger.error("could not %s call %s: %s", what, call.call_id, result)

    def _commit_quietly(
        self, call: Call, expected_version: int, events: list[Event], what: str
    ) -> Call | None:
        try:
            return self.scheduler.commit_change(call, expected_version, events)
        except Conflict:
            self._log_conflict(what, call)
        except CallScheduleError:
            logger.exception("could not %s call %s", what, call.call_id)
        return None

    @staticmethod
    def _log_conflict(what: str, call: Call) -> None:
        logger.warning(
            "could not %s call %s: it changed meanwhile (its lease was lost or it was "
            "completed through the API)",
            what,
            call.call_id,
        )

    # -- leases -------------------------------------------------------------------------------

    def _renew_leases(self) -> None:
        now_ms = self.scheduler.clock.now_ms()
        with self._cond:
            running = [r for r in self._inflight.values() if r not in self._done]
        for item in running:
            expires = item.call.lease_expires_at or 0
            if item.abandoned or expires - now_ms > self._lease_ms / 2:
                continue
            renewed = attrs.evolve(
                item.call, version=item.call.version + 1, lease_expires_at=now_ms + self._lease_ms
            )
            try:
                item.call = self.scheduler.commit_change(renewed, item.call.version, [])
            except Conflict:
                logger.warning(
                    "lost the lease of call %s (attempt %s): another worker or a report changed "
                    "it; its outcome will not be recorded here",
                    item.call.call_id,
                    item.attempt.number,
                )
                item.abandoned = True
            except CallScheduleError:
                logger.exception("could not renew the lease of call %s", item.call.call_id)

    def _next_renewal_ms(self) -> int | None:
        with self._cond:
            expiries = [r.call.lease_expires_at or 0 for r in self._inflight.values()]
        if not expiries:
            return None
        return min(expiries) - self._lease_ms // 2

    def _recover_expired(self) -> int:
        """Handle calls whose worker stopped renewing their lease, under ``lease_expiry``."""
        now_ms = self.scheduler.clock.now_ms()
        recovered = 0
        for call in self.scheduler.store.expired_leases(now_ms=now_ms, limit=100):
            with self._cond:
                if (call.organization_id, call.call_id) in self._inflight:
                    continue  # ours and still running: renewed on the next pass
            new, events = self._give_back(call, now_ms, "lease")
            if self._commit_quietly(new, call.version, events, "recover") is not None:
                recovered += 1
        return recovered

    def _give_back(self, call: Call, now_ms: int, why: Literal["lease", "stop"]) -> tuple[Call, list[Event]]:
        """The in-progress ``call`` whose attempt's outcome is unknown, retried or failed."""
        window = self.scheduler.policy.calling_window
        if why == "lease":
            head = _events.lease_expired(call, now_ms, self.lease_expiry)
            if call.lease_owner == AWAITING_REPORT:
                error = "no report of the outcome arrived before its deadline"
            else:
                error = f"lease expired: worker {call.lease_owner} stopped"
            if self.lease_expiry == "fail":
                new, tail = _failed(call, now_ms, error, Source.WORKER)
                return new, [head, *tail]
            at = now_ms // 1000 + math.ceil(self.retry.delay(call.attempts, self.rng))
            new, tail = _retry_at(
                call,
                now_ms,
                at,
                error,
                retry=self.retry,
                window=window,
                source=Source.WORKER,
            )
            return new, [head, *tail]
        if call.attempts >= self.retry.max_attempts:
            return _failed(
                call,
                now_ms,
                "the worker stopped before the last attempt finished; its outcome is unknown",
                Source.WORKER,
            )
        new = attrs.evolve(
            call,
            execution_status=ExecutionStatus.PENDING,
            scheduled_timestamp=_in_window(now_ms // 1000, call, window),
            version=call.version + 1,
            updated_at=now_ms,
            lease_owner=None,
            lease_expires_at=None,
        )
        reason = "the worker stopped before the attempt finished; its outcome is unknown"
        return new, [_events.released(new, now_ms, call.attempts, reason)]

    # -- waiting ------------------------------------------------------------------------------

    def _on_due(self, scheduled_timestamp: int) -> None:
        if scheduled_timestamp < self._sleep_until:
            self._wake.set()

    def _sleep_seconds(self) -> float:
        now = self.scheduler.clock.now()
        timeout = self.poll_interval
        if self._free_slots() > 0:
            next_due = self.scheduler.store.next_due_timestamp()
            if next_due is not None and (next_due > now or self.organization_limit is None):
                # Due already (made due after this cycle claimed): go round again at once.
                # Under an organization limit, a due call may be waiting for its organization's
                # running calls instead; their ends wake the worker.
                timeout = min(timeout, max(0.0, next_due - now))
        renewal = self._next_renewal_ms()
        if renewal is not None:
            timeout = min(timeout, max(0.0, renewal / 1000 - now))
        self._sleep_until = now + timeout
        return max(0.0, timeout)

    def _wait_idle(self, draining: bool = False) -> bool:
        """Wait until no execution runs, recording outcomes and renewing leases meanwhile;
        when ``draining``, ``False`` once the stop's grace period is over."""
        while True:
            deadline = self._drain_deadline if draining else None
            self._collect()
            with self._cond:
                if not self._inflight:
                    return True
                renewal = self._next_renewal_ms()
                wait = self.poll_interval
                if renewal is not None:
                    wait = min(wait, max(0.0, renewal / 1000 - self.scheduler.clock.now()))
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    wait = min(wait, remaining)
                if not self._done:
                    self._cond.wait(max(wait, 0.01))
            self._renew_leases()

    def _drain(self, grace: float) -> None:
        """Stop: wait up to ``grace`` seconds for running executions, then release the rest."""
        self._drain_deadline = time.monotonic() + grace
        if self._grace is not None:  # a stop(grace) that came while the deadline was being set
            self._drain_deadline = min(self._drain_deadline, time.monotonic() + self._grace)
        if self._wait_idle(draining=True):
            return
        self._collect()
        now_ms = self.scheduler.clock.now_ms()
        with self._cond:
            running = list(self._inflight.values())
            self._inflight.clear()
        for item in running:
            if item.abandoned:
                continue
            item.abandoned = True
            new, events = self._give_back(item.call, now_ms, "stop")
            self._commit_quietly(new, item.call.version, events, "release")

    # -- signals ------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: signal handlers not installed")
            return None
        signals = [signal.SIGINT, signal.SIGTERM]
        previous = {sig: signal.getsignal(sig) for sig in signals}

        def handle(signum: int, frame: FrameType | None) -> None:
            if self._stopping.is_set():
                logger.warning("second stop signal: releasing running calls now")
                self.stop(grace=0.0)
                return
            logger.info("signal %s: stopping after running calls finish", signum)
            self.stop()

        for sig in signals:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def resolve_executor(
    scheduler: CallScheduler, executor: Executor | str, options: dict[str, Any] | None
) -> tuple[Executor, bool]:
    """The executor callable for a callable or a name (through the executor hook), and whether
    the worker owns it (and closes it)."""
    from callschedule.exceptions import ExecutorNotFound

    if isinstance(executor, str):
        found = scheduler.plugin_manager.hook.callschedule_executor(
            name=executor, options=dict(options or {})
        )
        if found is None:
            raise ExecutorNotFound(executor)
        return found, True
    if options:
        raise InvalidInput("executor_options", "only an executor given by name takes options")
    if not callable(executor):
        raise InvalidInput("executor", f"expected a callable or an executor name, got {executor!r}")
    return executor, False


__all__ = ["RetryPolicy", "Worker", "resolve_executor", "settle"]
