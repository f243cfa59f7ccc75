"""The ``memory://`` store: dictionaries under one lock, for tests and notebooks."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Sequence

import attrs

from callschedule import _events
from callschedule._model import ApiKey, Call, Event, ExecutionStatus
from callschedule.abc import Store
from callschedule.exceptions import CallNotFound, Conflict
from callschedule.hookspecs import hookimpl


@attrs.define
class MemoryStore(Store):
    """A thread-safe store that keeps everything in this process and loses it on exit."""

    serves_event_loop = True

    _calls: dict[tuple[str, str], Call] = attrs.field(factory=dict, init=False)
    _events: defaultdict[tuple[str, str], list[Event]] = attrs.field(
        factory=lambda: defaultdict(list), init=False
    )
    _keys: dict[str, ApiKey] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def insert_call(self, call: Call, event: Event) -> Call | None:
        key = (call.organization_id, call.call_id)
        with self._lock:
            if key in self._calls:
                return None
            self._calls[key] = call
            self._events[key].append(event)
        return call

    def get_call(self, organization_id: str, call_id: str) -> Call | None:
        return self._calls.get((organization_id, call_id))

    def update_call(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        key = (call.organization_id, call.call_id)
        with self._lock:
            stored = self._calls.get(key)
            if stored is None:
                raise CallNotFound(call.call_id)
            if stored.version != expected_version or call.version != expected_version + 1:
                raise Conflict(call.call_id)
            self._calls[key] = call
            self._events[key].extend(events)
        return call

    async def insert_call_async(self, call: Call, event: Event) -> Call | None:
        """:meth:`insert_call` at once: nothing here waits."""
        return self.insert_call(call, event)

    async def update_call_async(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        """:meth:`update_call` at once: nothing here waits."""
        return self.update_call(call, expected_version, events)

    def list_calls(
        self,
        organization_id: str,
        *,
        statuses: Sequence[ExecutionStatus] = (),
        scheduled_from: int | None = None,
        scheduled_to: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[Call]:
        with self._lock:
            calls = [c for (org, _), c in self._calls.items() if org == organization_id]
        selected = sorted(
            (
                c
                for c in calls
                if (not statuses or c.execution_status in statuses)
                and (scheduled_from is None or c.scheduled_timestamp >= scheduled_from)
                and (scheduled_to is None or c.scheduled_timestamp <= scheduled_to)
                and (after is None or (c.scheduled_timestamp, c.call_id) > after)
            ),
            key=lambda c: (c.scheduled_timestamp, c.call_id),
        )
        return selected[:limit]

    def events(self, organization_id: str, call_id: str) -> list[Event]:
        with self._lock:
            return list(self._events.get((organization_id, call_id), ()))

    def claim_due(
        self,
        *,
        now: int,
        now_ms: int,
        limit: int,
        lease_owner: str,
        lease_expires_at: int,
        organization_limit: int | None = None,
    ) -> list[Call]:
        with self._lock:
            due = sorted(
                (
                    c
                    for c in self._calls.values()
                    if c.execution_status is ExecutionStatus.PENDING and c.scheduled_timestamp <= now
                ),
                key=lambda c: (c.scheduled_timestamp, c.call_id),
            )
            if organization_limit is not None:
                busy = Counter(
                    c.organization_id
                    for c in self._calls.values()
                    if c.execution_status is ExecutionStatus.IN_PROGRESS
                )
                allowed = []
                for call in due:
                    if busy[call.organization_id] < organization_limit:
                        busy[call.organization_id] += 1
                        allowed.append(call)
                due = allowed
            due = due[:limit]
            claimed = []
            for call in due:
                new = attrs.evolve(
                    call,
                    execution_status=ExecutionStatus.IN_PROGRESS,
                    attempts=call.attempts + 1,
                    version=call.version + 1,
                    lease_owner=lease_owner,
                    lease_expires_at=lease_expires_at,
                    updated_at=now_ms,
                )
                key = (call.organization_id, call.call_id)
                self._calls[key] = new
                self._events[key].append(_events.claimed(new, now_ms))
                claimed.append(new)
        return claimed

    def expired_leases(self, *, now_ms: int, limit: int) -> list[Call]:
        with self._lock:
            expired = [
                c
                for c in self._calls.values()
                if c.execution_status is ExecutionStatus.IN_PROGRESS
                and c.lease_expires_at is not None
                and c.lease_expires_at < now_ms
            ]
        return sorted(expired, key=lambda c: c.lease_expires_at or 0)[:limit]

    def next_due_timestamp(self) -> int | None:
        with self._lock:
            return min(
                (
                    c.scheduled_timestamp
                    for c in self._calls.values()
                    if c.execution_status is ExecutionStatus.PENDING
                ),
                default=None,
            )

    def save_api_key(self, key: ApiKey) -> None:
        with self._lock:
            self._keys[key.api_key] = key

    def get_api_key(self, api_key: str) -> ApiKey | None:
        return self._keys.get(api_key)

    def revoke_api_key(self, api_key: str, at_ms: int) -> bool:
        with self._lock:
            key = self._keys.get(api_key)
            if key is None:
                return False
            self._keys[api_key] = attrs.evolve(key, revoked_at=at_ms)
        return True


@hookimpl(trylast=True)
def callschedule_store(url: str) -> Store | None:
    """``memory://`` (anything after the scheme is ignored)."""
    if url.startswith("memory://") or url == "memory":
        return MemoryStore()
    return None
