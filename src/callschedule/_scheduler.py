"""The CallScheduler: the public face of the library."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import importlib
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import pluggy

from callschedule import _events, _rules, _validation
from callschedule._clock import Clock
from callschedule._loop_thread import LoopStopped, LoopThread
from callschedule._model import (
    ApiKey,
    Call,
    CallPage,
    Event,
    ExecutionStatus,
    RescheduleResult,
    Source,
)
from callschedule._plugins import make_plugin_manager
from callschedule._rules import SchedulingPolicy
from callschedule.abc import Store
from callschedule.exceptions import (
    CallNotFound,
    CallNotInProgress,
    CallScheduleError,
    Conflict,
    InvalidInput,
    StoreNotFound,
    Unauthorized,
)
from callschedule.plugins import DEFAULT_PLUGINS, auth

if TYPE_CHECKING:
    from callschedule._worker import LeaseExpiryPolicy, MisfirePolicy, RetryPolicy, Worker
    from callschedule.executors import Executor

logger = logging.getLogger("callschedule")

T = TypeVar("T")

#: A change's committed call and events, for what follows a commit; ``None`` if nothing was written.
_Committed = tuple[Call, Sequence[Event]] | None

DEFAULT_URL = "sqlite:///callschedule.db"


def _new_call_id() -> str:
    """A new call id, ``call_`` and a UUID version 7 (RFC 9562): unique, and ordered by the
    millisecond it was made in.

    Time-ordered ids land at the end of the stores' indexes by call id, so a create writes the
    same few index pages as the one before it; random ids (version 4) would touch a random page
    of every such index, which costs page writes on every commit and cache misses once the
    table outgrows memory.
    """
    rand = int.from_bytes(os.urandom(10), "big")  # 12 + 62 random bits (and 6 unused)
    value = (
        (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80  # the Unix millisecond
        | 0x7000 << 64  # version 7
        | (rand >> 64 & 0xFFF) << 64
        | 0x8000_0000_0000_0000  # the RFC 9562 variant
        | rand & 0x3FFF_FFFF_FFFF_FFFF
    )
    text = f"{value:032x}"  # formatted here: twice as fast as str(uuid.UUID(int=value))
    return f"call_{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@attrs.define
class CallScheduler:
    """Schedule, move, cancel and inspect calls; every method is scoped to one organization.

    Thread-safe and synchronous. Open one with :meth:`open`, or build one around a store.
    """

    store: Store
    policy: SchedulingPolicy = attrs.field(factory=SchedulingPolicy)
    clock: Clock = attrs.field(factory=Clock)
    plugin_manager: pluggy.PluginManager = attrs.field(factory=make_plugin_manager)
    _due_listeners: list[Callable[[int], None]] = attrs.field(factory=list, init=False)
    _listeners_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _solo: threading.Lock = attrs.field(factory=threading.Lock, init=False)  # a thread's change runs
    _loop_thread: LoopThread = attrs.field(factory=LoopThread, init=False)  # the others' changes run

    def __attrs_post_init__(self) -> None:
        # A scheduler dropped without close() does not leave its loop thread behind.
        weakref.finalize(self, functools.partial(self._loop_thread.stop, wait=False))

    @classmethod
    def open(
        cls,
        url: str = DEFAULT_URL,
        *,
        policy: SchedulingPolicy | None = None,
        clock: Clock | None = None,
        plugins: Iterable[object] = (),
        load_entry_points: bool = True,
    ) -> CallScheduler:
        """Open the store at ``url`` through the store hook and return a scheduler over it.

        :param url: ``sqlite:///calls.db``, ``memory://``, ``postgresql://...`` or any URL a
            store plugin accepts.
        :param policy: the scheduling rules (default: :class:`SchedulingPolicy()`).
        :param clock: the clock (default: the store's shared clock if it has one, such as the
            PostgreSQL server's, else the system clock; freezegun freezes either).
        :param plugins: extra plugin objects or modules to register on this scheduler only.
        :param load_entry_points: also load plugins of the ``callschedule`` entry-point group.
        """
        if not isinstance(url, str):
            raise InvalidInput("url", f"expected a store URL string, got {type(url).__name__}")
        pm = make_plugin_manager(plugins, load_entry_points=load_entry_points)
        store = pm.hook.callschedule_store(url=url)
        if store is None:
            raise StoreNotFound(url)
        return cls(
            store=store,
            policy=policy or SchedulingPolicy(),
            clock=clock or store.clock() or Clock(),
            plugin_manager=pm,
        )

    @property
    def serves_event_loop(self) -> bool:
        """``True`` when an event loop may call this scheduler's reads, its authentication and
        the planning half of a change itself, because none of them can block: the store says so
        (:attr:`Store.serves_event_loop`: SQLite, memory) and no plugin outside callschedule
        implements the authenticate, check_schedule or event hooks, which may do I/O.
        The HTTP adapter then answers without a thread pool; otherwise it uses one."""
        if not self.store.serves_event_loop:
            return False
        hook = self.plugin_manager.hook
        builtin = _builtin_plugins()
        for caller in (
            hook.callschedule_authenticate,
            hook.callschedule_check_schedule,
            hook.callschedule_event,
        ):
            for impl in caller.get_hookimpls():
                if impl.plugin not in builtin:
                    return False
        return True

    def close(self) -> None:
        """Close the store (changes in progress are answered first)."""
        self.store.close()
        self._loop_thread.stop()

    def _change(
        self, here: Callable[[], T], on_loop: Callable[[], Coroutine[Any, Any, tuple[T, _Committed]]]
    ) -> T:
        """Run a change of a calling thread: ``here``, in that thread, unless another thread's
        change is in progress (in its thread or on the loop); then, where nothing blocks
        (:attr:`serves_event_loop`), as ``on_loop()`` on the scheduler's loop thread, with the
        other threads' changes that arrive meanwhile. The result, errors and transaction are the
        same either way; many threads then share commits without taking turns at the interpreter
        lock for every statement (see ``callschedule._loop_thread``). ``on_loop`` plans and
        writes; what follows a commit (due listeners, event hooks) runs back in the calling
        thread, as it would have, so a listener never holds up the loop."""
        if not self._loop_thread.busy and self._solo.acquire(blocking=False):
            try:
                return here()
            finally:
                self._solo.release()
        if self._loop_thread.is_current() or not self.serves_event_loop:
            return here()
        try:
            value, committed = self._loop_thread.run(on_loop())
        except LoopStopped:  # the scheduler was closed: the store answers (StoreClosed)
            return here()
        self._after(committed)
        return value

    def _after(self, committed: _Committed) -> None:
        """What follows the commit of an ``*_on_loop`` change, in the thread or task that asked."""
        if committed is not None:
            self._after_commit(*committed)

    def __enter__(self) -> CallScheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------------------

    def create_call(
        self,
        organization_id: str,
        scheduled_timestamp: int,
        call_id: str | None = None,
        timezone: str | None = None,
        payload: dict[str, Any] | None = None,
        *,
        source: Source = Source.LIBRARY,
    ) -> Call:
        """Schedule a new pending call and log its creation.

        With a ``call_id`` of your choosing the create is idempotent: repeating it returns the
        existing call, unless that call has a different payload, time zone or (if never moved)
        time, which raises :class:`Conflict`. Without one, an id ``call_<uuid7>`` is made (a UUID
        version 7: ids made later sort later).

        :raises InvalidInput: a bad argument (nothing is written).
        :raises ScheduleRejected: a rule refuses the time (calling window in ``shift`` mode moves it instead).
        """
        return self._change(
            lambda: self._create_call(
                organization_id, scheduled_timestamp, call_id, timezone, payload, source
            ),
            lambda: self._create_call_on_loop(
                organization_id, scheduled_timestamp, call_id, timezone, payload, source
            ),
        )

    async def _create_call_on_loop(
        self,
        organization_id: str,
        scheduled_timestamp: int,
        call_id: str | None,
        timezone: str | None,
        payload: dict[str, Any] | None,
        source: Source,
    ) -> tuple[Call, _Committed]:
        call, event, requested = self._plan_create(
            organization_id, scheduled_timestamp, call_id, timezone, payload, source
        )
        inserted = await self.store.insert_call_async(call, event)
        return self._created(call, requested, inserted), (call, [event]) if inserted is not None else None

    def _create_call(
        self,
        organization_id: str,
        scheduled_timestamp: int,
        call_id: str | None,
        timezone: str | None,
        payload: dict[str, Any] | None,
        source: Source,
    ) -> Call:
        call, event, requested = self._plan_create(
            organization_id, scheduled_timestamp, call_id, timezone, payload, source
        )
        inserted = self.store.insert_call(call, event)
        if inserted is not None:
            self._after_commit(call, [event])
        return self._created(call, requested, inserted)

    async def create_call_async(
        self,
        organization_id: str,
        scheduled_timestamp: int,
        call_id: str | None = None,
        timezone: str | None = None,
        payload: dict[str, Any] | None = None,
        *,
        source: Source = Source.LIBRARY,
    ) -> Call:
        """:meth:`create_call` for ``async`` code (see :meth:`reschedule_async`)."""
        if not self.serves_event_loop:
            return await asyncio.to_thread(
                functools.partial(
                    self.create_call,
                    organization_id,
                    scheduled_timestamp,
                    call_id,
                    timezone,
                    payload,
                    source=source,
                )
            )
        created, committed = await self._create_call_on_loop(
            organization_id, scheduled_timestamp, call_id, timezone, payload, source
        )
        self._after(committed)
        return created

    def _plan_create(
        self,
        organization_id: str,
        scheduled_timestamp: int,
        call_id: str | None,
        timezone: str | None,
        payload: dict[str, Any] | None,
        source: Source,
    ) -> tuple[Call, Event, int]:
        """Check the arguments, apply the rules; the new call, its event and the requested time."""
        organization_id = _validation.identifier("organization_id", organization_id)
        requested = _validation.timestamp("scheduled_timestamp", scheduled_timestamp)
        call_id = _new_call_id() if call_id is None else _validation.identifier("call_id", call_id)
        timezone = _validation.timezone("timezone", timezone)
        payload = _validation.payload("payload", payload)
        source = _source(source)

        now_ms = self.clock.now_ms()
        now = now_ms // 1000
        scheduled = _rules.decide(requested, timezone, now, self.policy)
        call = Call(
            call_id=call_id,
            organization_id=organization_id,
            scheduled_timestamp=scheduled,
            timezone=timezone,
            payload=payload,
            created_at=now_ms,
            updated_at=now_ms,
        )
        self._check_schedule(call, scheduled, now)
        return call, _events.created(call, now_ms, source), requested

    def _created(self, call: Call, requested: int, inserted: Call | None) -> Call:
        """After the insert: the new call, or the existing one an idempotent repeat asked for."""
        return call if inserted is not None else self._existing_for_create(call, requested)

    def _existing_for_create(self, wanted: Call, requested: int) -> Call:
        existing = self.store.get_call(wanted.organization_id, wanted.call_id)
        if existing is None:  # deleted between the insert and this read: cannot happen today
            raise Conflict(wanted.call_id)
        same_time = existing.reschedule_count > 0 or existing.scheduled_timestamp in (
            requested,
            wanted.scheduled_timestamp,
        )
        if existing.payload != wanted.payload or existing.timezone != wanted.timezone or not same_time:
            raise Conflict(wanted.call_id, "a call with this id already exists with different fields")
        return existing

    def reschedule(
        self,
        organization_id: str,
        call_id: str,
        scheduled_timestamp: int,
        *,
        source: Source = Source.LIBRARY,
        expected_version: int | None = None,
    ) -> RescheduleResult:
        """Move a pending call to a new time, under the rules, and log it.

        :param expected_version: if given, refuse with :class:`Conflict` unless the call is
            still at this version (optimistic locking across a read and a write).
        :raises CallNotFound: no such call in this organization.
        :raises CallNotReschedulable: the call is not pending.
        :raises ScheduleRejected: a rule refuses the time.
        :raises Conflict: the call changed since it was read (a worker claimed it, say).
        """
        return self._change(
            lambda: self._reschedule(organization_id, call_id, scheduled_timestamp, source, expected_version),
            lambda: self._reschedule_on_loop(
                organization_id, call_id, scheduled_timestamp, source, expected_version
            ),
        )

    async def _reschedule_on_loop(
        self,
        organization_id: str,
        call_id: str,
        scheduled_timestamp: int,
        source: Source,
        expected_version: int | None,
    ) -> tuple[RescheduleResult, _Committed]:
        result = self._plan_reschedule(
            organization_id, call_id, scheduled_timestamp, source, expected_version
        )
        stored = await self.store.update_call_async(result.call, result.call.version - 1, result.events)
        return result, (stored, result.events)

    def _reschedule(
        self,
        organization_id: str,
        call_id: str,
        scheduled_timestamp: int,
        source: Source,
        expected_version: int | None,
    ) -> RescheduleResult:
        result = self._plan_reschedule(
            organization_id, call_id, scheduled_timestamp, source, expected_version
        )
        self._commit(result.call, result.call.version - 1, result.events)
        return result

    async def reschedule_async(
        self,
        organization_id: str,
        call_id: str,
        scheduled_timestamp: int,
        *,
        source: Source = Source.LIBRARY,
        expected_version: int | None = None,
    ) -> RescheduleResult:
        """:meth:`reschedule` for ``async`` code: the same rules, errors and transaction.

        Where nothing blocks (:attr:`serves_event_loop`), the read and the rules run on the
        event loop and only the commit is awaited; concurrent requests then share commits
        without a thread each. Otherwise the whole change runs in a thread.

        Cancelling the awaiting task does not undo a change already handed to the store: it is
        committed all the same (as a plain call's would be), and on the event loop the in-process
        due listeners (a sleeping worker) then hear of it only at their next poll.
        """
        if not self.serves_event_loop:
            return await asyncio.to_thread(
                functools.partial(
                    self.reschedule,
                    organization_id,
                    call_id,
                    scheduled_timestamp,
                    source=source,
                    expected_version=expected_version,
                )
            )
        result, committed = await self._reschedule_on_loop(
            organization_id, call_id, scheduled_timestamp, source, expected_version
        )
        self._after(committed)
        return result

    def _plan_reschedule(
        self,
        organization_id: str,
        call_id: str,
        scheduled_timestamp: int,
        source: Source,
        expected_version: int | None,
    ) -> RescheduleResult:
        """Read the call, apply the rules and build the moved call and its event (not written)."""
        call = self._get(organization_id, call_id)
        requested = _validation.timestamp("scheduled_timestamp", scheduled_timestamp)
        source = _source(source)
        if expected_version is not None:
            _validation.positive_int("expected_version", expected_version, maximum=2**62)
        if expected_version is not None and expected_version != call.version:
            raise Conflict(call.call_id, f"expected version {expected_version}, found {call.version}")
        now_ms = self.clock.now_ms()
        now = now_ms // 1000
        new_time = _rules.decide_reschedule(call, requested, now, self.policy)
        self._check_schedule(call, new_time, now)
        moved = attrs.evolve(
            call,
            scheduled_timestamp=new_time,
            reschedule_count=call.reschedule_count + 1,
            version=call.version + 1,
            updated_at=now_ms,
        )
        event = _events.rescheduled(moved, call.scheduled_timestamp, new_time, now_ms, source)
        return RescheduleResult(
            organization_id=call.organization_id,
            call_id=call.call_id,
            previous_scheduled_timestamp=call.scheduled_timestamp,
            new_scheduled_timestamp=new_time,
            call=moved,
            events=[event],
        )

    def cancel(
        self,
        organization_id: str,
        call_id: str,
        *,
        reason: str | None = None,
        source: Source = Source.LIBRARY,
    ) -> Call:
        """Cancel a pending call and log it; it will never run.

        :raises CallNotFound: no such call in this organization.
        :raises CallNotReschedulable: the call is not pending (already running or finished).
        :raises Conflict: the call changed since it was read.
        """
        return self._change(
            lambda: self._cancel(organization_id, call_id, reason, source),
            lambda: self._cancel_on_loop(organization_id, call_id, reason, source),
        )

    async def _cancel_on_loop(
        self, organization_id: str, call_id: str, reason: str | None, source: Source
    ) -> tuple[Call, _Committed]:
        cancelled, event = self._plan_cancel(organization_id, call_id, reason, source)
        stored = await self.store.update_call_async(cancelled, cancelled.version - 1, [event])
        return stored, (stored, [event])

    def _cancel(self, organization_id: str, call_id: str, reason: str | None, source: Source) -> Call:
        cancelled, event = self._plan_cancel(organization_id, call_id, reason, source)
        return self._commit(cancelled, cancelled.version - 1, [event])

    async def cancel_async(
        self,
        organization_id: str,
        call_id: str,
        *,
        reason: str | None = None,
        source: Source = Source.LIBRARY,
    ) -> Call:
        """:meth:`cancel` for ``async`` code (see :meth:`reschedule_async`)."""
        if not self.serves_event_loop:
            return await asyncio.to_thread(
                functools.partial(self.cancel, organization_id, call_id, reason=reason, source=source)
            )
        cancelled, committed = await self._cancel_on_loop(organization_id, call_id, reason, source)
        self._after(committed)
        return cancelled

    def _plan_cancel(
        self, organization_id: str, call_id: str, reason: str | None, source: Source
    ) -> tuple[Call, Event]:
        """Read the call and check it may be cancelled; the cancelled call and its event."""
        call = self._get(organization_id, call_id)
        if reason is not None:
            _validation.text("reason", reason)
        source = _source(source)
        _rules.check_status(call)
        now_ms = self.clock.now_ms()
        cancelled = attrs.evolve(
            call,
            execution_status=ExecutionStatus.CANCELLED,
            version=call.version + 1,
            updated_at=now_ms,
        )
        return cancelled, _events.cancelled(cancelled, now_ms, source, reason)

    def get_call(self, organization_id: str, call_id: str) -> Call:
        """The call, as stored now.

        :raises CallNotFound: no such call in this organization.
        """
        return self._get(organization_id, call_id)

    def list_calls(
        self,
        organization_id: str,
        status: ExecutionStatus | str | Sequence[ExecutionStatus | str] | None = None,
        *,
        scheduled_from: int | None = None,
        scheduled_to: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> CallPage:
        """The organization's calls by scheduled time, a page at a time.

        :param status: one status or several (default: all).
        :param scheduled_from: earliest ``scheduled_timestamp``, inclusive.
        :param scheduled_to: latest ``scheduled_timestamp``, inclusive.
        :param cursor: ``next_cursor`` of the previous page.
        :param limit: calls per page, 1..1000.
        """
        organization_id = _validation.identifier("organization_id", organization_id)
        statuses = _statuses(status)
        if scheduled_from is not None:
            _validation.timestamp("scheduled_from", scheduled_from)
        if scheduled_to is not None:
            _validation.timestamp("scheduled_to", scheduled_to)
        limit = _validation.positive_int("limit", limit, maximum=1000)
        calls = self.store.list_calls(
            organization_id,
            statuses=statuses,
            scheduled_from=scheduled_from,
            scheduled_to=scheduled_to,
            after=_decode_cursor(cursor),
            limit=limit + 1,
        )
        page, more = calls[:limit], len(calls) > limit
        next_cursor = _encode_cursor(page[-1]) if more else None
        return CallPage(calls=page, next_cursor=next_cursor)

    def events(self, organization_id: str, call_id: str) -> list[Event]:
        """The call's full event log, oldest first.

        :raises CallNotFound: no such call in this organization.
        """
        self._get(organization_id, call_id)
        return self.store.events(organization_id, call_id)

    # -- API keys -------------------------------------------------------------------------------

    def create_api_key(self, organization_id: str) -> tuple[str, str]:
        """Make an API key for the organization; returns ``(api_key, api_secret)``.

        The secret is shown only here: the store keeps its hash.
        """
        organization_id = _validation.identifier("organization_id", organization_id)
        api_key, api_secret = auth.new_key_pair()
        self.store.save_api_key(
            ApiKey(
                api_key=api_key,
                organization_id=organization_id,
                secret_hash=auth.hash_secret(api_secret),
                created_at=self.clock.now_ms(),
            )
        )
        return api_key, api_secret

    def revoke_api_key(self, api_key: str) -> bool:
        """Revoke a key; requests with it are refused from now on. ``False`` if unknown."""
        api_key = _validation.identifier("api_key", api_key)
        return self.store.revoke_api_key(api_key, self.clock.now_ms())

    def authenticate(self, api_key: str | None, api_secret: str | None) -> str:
        """The organization these credentials belong to, through the authentication hook.

        :raises Unauthorized: missing, unknown, revoked or wrong (not told apart).
        """
        if not api_key or not api_secret:
            raise Unauthorized()
        organization_id: str | None = self.plugin_manager.hook.callschedule_authenticate(
            scheduler=self, api_key=api_key, api_secret=api_secret
        )
        if organization_id is None:
            raise Unauthorized()
        return organization_id

    # -- execution --------------------------------------------------------------------------------

    def worker(
        self,
        executor: Executor | str = "log",
        *,
        concurrency: int = 8,
        executor_options: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 60.0,
        lease_expiry: LeaseExpiryPolicy = "retry",
        misfire: MisfirePolicy = "run",
        misfire_grace_seconds: float = 60.0,
        organization_limit: int | None = None,
        poll_interval: float = 1.0,
        stop_grace_seconds: float = 30.0,
        worker_id: str | None = None,
    ) -> Worker:
        """A worker that hands each due call of this scheduler's store to ``executor``.

        :param executor: a callable ``executor(call, attempt)``, plain or ``async``, or the name
            of an executor plugin (built in: ``log``, ``webhook``).
        :param concurrency: how many calls this worker executes at once.
        :param executor_options: settings for an executor given by name (``url``, ``secret``...).
        :param retry: how failed attempts are retried (default :class:`RetryPolicy()`).
        :param lease_seconds: how long a claim holds without renewal; running executions renew
            it, so only a dead worker's calls expire.
        :param lease_expiry: what happens to a call whose lease expired: ``retry`` (a new
            attempt, within ``retry.max_attempts``) or ``fail``.
        :param misfire: what happens to a call found more than ``misfire_grace_seconds``
            overdue: ``run`` it, ``skip`` it (failed, with an event) or ``move`` it to the next
            time the calling window allows.
        :param organization_limit: at most this many calls of one organization in progress at
            once, across all workers of the store.
        :param poll_interval: the longest sleep, which bounds how late a change made by another
            process is seen (changes in this process wake the worker at once).
        :param stop_grace_seconds: how long a stop waits for running executions.
        :param worker_id: the lease owner written on claimed calls (default: host:pid:random).
        """
        from callschedule._worker import RetryPolicy, Worker, resolve_executor

        resolved, owned = resolve_executor(self, executor, executor_options)
        extra: dict[str, Any] = {} if worker_id is None else {"worker_id": worker_id}
        return Worker(
            scheduler=self,
            executor=resolved,
            concurrency=concurrency,
            retry=retry if retry is not None else RetryPolicy(),
            lease_seconds=lease_seconds,
            lease_expiry=lease_expiry,
            misfire=misfire,
            misfire_grace_seconds=misfire_grace_seconds,
            organization_limit=organization_limit,
            poll_interval=poll_interval,
            stop_grace_seconds=stop_grace_seconds,
            close_executor=owned,
            **extra,
        )

    def complete(
        self,
        organization_id: str,
        call_id: str,
        outcome: Any = None,
        *,
        attempt: int | None = None,
        retry: RetryPolicy | None = None,
        source: Source = Source.LIBRARY,
    ) -> Call:
        """Record the result of an in-progress call, for dialers that report it later.

        ``outcome`` is read as an executor's result: a JSON-able value completes the call;
        :class:`~callschedule.executors.PermanentFailure` fails it; an exception counts as a
        failed attempt and :class:`~callschedule.executors.RetryLater` asks for a retry (both
        under ``retry`` and the calling window).

        :param attempt: the attempt being reported (``Attempt.number``); a report for an
            attempt that is over is refused with :class:`Conflict`.
        :raises CallNotFound: no such call in this organization.
        :raises CallNotInProgress: the call is not in progress (already completed, say).
        :raises Conflict: ``attempt`` is not the call's current attempt.
        """
        from callschedule._worker import RetryPolicy, settle

        if attempt is not None:
            attempt = _validation.positive_int("attempt", attempt, maximum=1_000_000)
        source = _source(source)
        for _ in range(10):
            call = self._get(organization_id, call_id)
            if call.execution_status is not ExecutionStatus.IN_PROGRESS:
                raise CallNotInProgress(call.call_id, call.execution_status.value)
            if attempt is not None and attempt != call.attempts:
                raise Conflict(
                    call.call_id,
                    f"attempt {attempt} is over; the call is at attempt {call.attempts}",
                )
            new, events = settle(
                call,
                outcome,
                now_ms=self.clock.now_ms(),
                retry=retry if retry is not None else RetryPolicy(),
                window=self.policy.calling_window,
                source=source,
            )
            try:
                return self._commit(new, call.version, events)
            except Conflict:
                continue  # a worker renewed the lease meanwhile: read it again
        raise Conflict(call_id)

    # -- for the worker and other in-process listeners ------------------------------------------

    def add_due_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(scheduled_timestamp)`` whenever a call becomes pending at that time in
        this process (created, moved, retried), so a sleeping worker can wake early.

        It is called in the thread that made the change, an event loop's included (the
        ``*_async`` methods, the HTTP adapter): it must return at once and never block."""
        with self._listeners_lock:
            self._due_listeners.append(listener)

    def remove_due_listener(self, listener: Callable[[int], None]) -> None:
        """Undo :meth:`add_due_listener`."""
        with self._listeners_lock:
            if listener in self._due_listeners:
                self._due_listeners.remove(listener)

    def commit_change(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        """Write a changed call and its events in one transaction, then notify listeners.

        For the worker and extensions; ``call.version`` must be ``expected_version + 1``.
        :raises Conflict: the stored call is not at ``expected_version``.
        """
        return self._commit(call, expected_version, events)

    def claim_due(
        self, *, limit: int, lease_owner: str, lease_seconds: float, organization_limit: int | None = None
    ) -> list[Call]:
        """Claim up to ``limit`` calls due now for ``lease_owner`` (see :meth:`Store.claim_due`),
        then tell the ``callschedule_event`` listeners of each ``claimed`` event. For workers."""
        now_ms = self.clock.now_ms()
        claimed = self.store.claim_due(
            **_claim_arguments(now_ms, limit, lease_owner, lease_seconds, organization_limit)
        )
        self._after_claim(claimed, now_ms)
        return claimed

    def _after_claim(self, claimed: Sequence[Call], now_ms: int) -> None:
        """Tell listeners of the ``claimed`` events the store wrote in the claim's transaction."""
        if not claimed or not self.plugin_manager.hook.callschedule_event.get_hookimpls():
            return  # a claimed call is in progress, so no due listener needs it either
        for call in claimed:
            # The store wrote exactly this event (same call, same time) in the claim's transaction.
            self._after_commit(call, [_events.claimed(call, now_ms)])

    def commit_changes(
        self, changes: Sequence[tuple[Call, int, Sequence[Event]]]
    ) -> list[Call | CallScheduleError]:
        """Write several independent changes, each ``(call, expected_version, events)`` as
        :meth:`commit_change` would, then notify listeners of those that were written.

        Returns, in order, each stored call or the :class:`Conflict` / :class:`CallNotFound` that
        refused it. Stores that can (SQLite) write the batch with one commit.
        """
        if not changes:
            return []
        results = self.store.update_calls(changes)
        for (_, _, events), result in zip(changes, results, strict=True):
            if isinstance(result, Call):
                self._after_commit(result, events)
        return results

    def commit_changes_and_claim_due(
        self,
        changes: Sequence[tuple[Call, int, Sequence[Event]]],
        *,
        limit: int,
        lease_owner: str,
        lease_seconds: float,
        organization_limit: int | None = None,
    ) -> tuple[list[Call | CallScheduleError], list[Call]]:
        """:meth:`commit_changes` and then :meth:`claim_due` in one round of the store (one
        transaction where the store can: see :meth:`Store.update_calls_and_claim_due`), then
        tell listeners of what was written. For workers: the outcomes of finished calls and the
        claim of the next ones share one commit."""
        now_ms = self.clock.now_ms()
        results, claimed = self.store.update_calls_and_claim_due(
            changes, **_claim_arguments(now_ms, limit, lease_owner, lease_seconds, organization_limit)
        )
        for (_, _, events), result in zip(changes, results, strict=True):
            if isinstance(result, Call):
                self._after_commit(result, events)
        self._after_claim(claimed, now_ms)
        return results, claimed

    def _check_schedule(self, call: Call, timestamp: int, now: int) -> None:
        """The rules plugins add (``callschedule_check_schedule``), on ``call`` at ``timestamp``."""
        check = self.plugin_manager.hook.callschedule_check_schedule
        if check.get_hookimpls():  # a hot path: no rule plugin, no call
            check(call=call, requested_timestamp=timestamp, now=now)

    def _commit(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        stored = self.store.update_call(call, expected_version, events)
        self._after_commit(stored, events)
        return stored

    def _after_commit(self, call: Call, events: Sequence[Event]) -> None:
        hook = self.plugin_manager.hook.callschedule_event
        if hook.get_hookimpls():  # a hot path: no listener, no call
            for event in events:
                try:
                    hook(call=call, event=event)
                except Exception:
                    logger.exception("callschedule_event listener failed for %s", call.call_id)
        if call.execution_status is ExecutionStatus.PENDING:
            with self._listeners_lock:
                listeners = list(self._due_listeners)
            for listener in listeners:
                listener(call.scheduled_timestamp)

    def _get(self, organization_id: str, call_id: str) -> Call:
        organization_id = _validation.identifier("organization_id", organization_id)
        call_id = _validation.identifier("call_id", call_id)
        call = self.store.get_call(organization_id, call_id)
        if call is None:
            raise CallNotFound(call_id)
        return call


def _claim_arguments(
    now_ms: int, limit: int, lease_owner: str, lease_seconds: float, organization_limit: int | None
) -> dict[str, Any]:
    """The keyword arguments of :meth:`Store.claim_due` for a claim made now (``organization_limit``
    only when set, so a store written before it existed still accepts the call)."""
    arguments: dict[str, Any] = {
        "now": now_ms // 1000,
        "now_ms": now_ms,
        "limit": limit,
        "lease_owner": lease_owner,
        "lease_expires_at": now_ms + math.ceil(lease_seconds * 1000),
    }
    if organization_limit is not None:
        arguments["organization_limit"] = organization_limit
    return arguments


@functools.cache
def _builtin_plugins() -> frozenset[object]:
    """The modules of the built-in plugins (what they are, not the names they were registered by)."""
    return frozenset(importlib.import_module(name) for name in DEFAULT_PLUGINS)


def _source(value: object) -> Source:
    if value.__class__ is Source:
        return value
    try:
        return Source(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Source)
        raise InvalidInput("source", f"expected one of {allowed}, got {value!r}") from None


def _statuses(
    status: ExecutionStatus | str | Sequence[ExecutionStatus | str] | None,
) -> list[ExecutionStatus]:
    if status is None:
        return []
    values = [status] if isinstance(status, str | ExecutionStatus) else list(status)
    try:
        return [ExecutionStatus(s) for s in values]
    except ValueError:
        allowed = ", ".join(s.value for s in ExecutionStatus)
        raise InvalidInput("status", f"expected one of {allowed}, got {status!r}") from None


def _encode_cursor(call: Call) -> str:
    raw = json.dumps([call.scheduled_timestamp, call.call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        timestamp, call_id = json.loads(raw)
        if (
            isinstance(timestamp, int)
            and not isinstance(timestamp, bool)
            and 0 <= timestamp <= _validation.MAX_TIMESTAMP  # a store's integers are 64-bit
            and isinstance(call_id, str)
        ):
            return timestamp, call_id
    except (ValueError, TypeError, binascii.Error, RecursionError):
        pass
    raise InvalidInput("cursor", "not a cursor returned by list_calls")
