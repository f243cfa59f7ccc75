"""The values callschedule deals in: a call, an event of its log, its status."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from callschedule import _validation


class ExecutionStatus(str, enum.Enum):
    """Where a call is in its life.

    ``pending`` → ``in_progress`` (claimed by a worker) → ``completed`` or ``failed``, or back to
    ``pending`` for a retry; ``pending`` → ``cancelled``. Only pending calls move or cancel.
    """

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for the statuses a call never leaves."""
        return self in _FINAL


_FINAL = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})


class EventType(str, enum.Enum):
    """The machine-readable kind of an event, kept beside its human text."""

    CREATED = "created"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    LEASE_EXPIRED = "lease_expired"
    RELEASED = "released"
    MISFIRE_SKIPPED = "misfire_skipped"
    MISFIRE_MOVED = "misfire_moved"
    WINDOW_DEFERRED = "window_deferred"
    AWAITING_REPORT = "awaiting_report"


class Source(str, enum.Enum):
    """Who made a change: the HTTP API, the Python library, the worker or the command line."""

    API = "api"
    LIBRARY = "library"
    WORKER = "worker"
    CLI = "cli"


@attrs.frozen
class Event:
    """One entry of a call's append-only log.

    ``timestamp`` is Unix milliseconds; ``event`` is the human sentence and ``data`` the details
    shown on the wire; ``type`` and ``source`` are kept for filtering and are not part of the wire shape.
    """

    call_id: str
    organization_id: str
    type: EventType
    timestamp: int
    event: str
    data: dict[str, Any] = attrs.field(factory=dict)
    source: Source = Source.LIBRARY


@attrs.frozen
class Call:
    """A scheduled call, as stored.

    ``scheduled_timestamp`` is Unix seconds; ``created_at``/``updated_at`` and
    ``lease_expires_at`` are Unix milliseconds. ``version`` rises by one on every change, which
    is what makes concurrent writers detectable.
    """

    call_id: str
    organization_id: str
    scheduled_timestamp: int
    execution_status: ExecutionStatus = ExecutionStatus.PENDING
    timezone: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict)
    attempts: int = 0
    reschedule_count: int = 0
    version: int = 1
    created_at: int = 0
    updated_at: int = 0
    lease_owner: str | None = None
    lease_expires_at: int | None = None
    outcome: Any = None

    @property
    def is_scheduled(self) -> bool:
        """True while the call waits for its time (the wire's ``metadata.is_scheduled``)."""
        return self.execution_status is ExecutionStatus.PENDING


@attrs.frozen
class ApiKey:
    """An API key as stored: the secret only as a hash."""

    api_key: str
    organization_id: str
    secret_hash: str
    created_at: int
    revoked_at: int | None = None


@attrs.frozen
class CallPage:
    """One page of :meth:`CallScheduler.list_calls`; pass ``next_cursor`` back for the next one."""

    calls: list[Call]
    next_cursor: str | None


@attrs.frozen
class RescheduleResult:
    """Everything the documented endpoint answers about one reschedule."""

    organization_id: str
    call_id: str
    previous_scheduled_timestamp: int
    new_scheduled_timestamp: int
    call: Call
    events: list[Event]
    operation: str = "schedule_update"

    @property
    def scheduled_for_human(self) -> str:
        """The new time in RFC 3339 UTC with a ``Z``."""
        return _validation.rfc3339(self.new_scheduled_timestamp)
