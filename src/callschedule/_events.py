"""Every event the library writes is built here, so its text and data have one source."""

from __future__ import annotations

from typing import Any

from callschedule._model import Call, Event, EventType, Source

#: The wording of the documented endpoint's reschedule event (``CONTRACT.md``).
API_RESCHEDULE_TEXT = "Scheduled call time updated via dedicated endpoint"


def _event(call: Call, type_: EventType, at_ms: int, text: str, who: Source, **data: Any) -> Event:
    return Event(
        call_id=call.call_id,
        organization_id=call.organization_id,
        type=type_,
        timestamp=at_ms,
        event=text,
        data=data,
        source=who,
    )


def created(call: Call, at_ms: int, source: Source) -> Event:
    """The call was created for its first time."""
    return _event(
        call,
        EventType.CREATED,
        at_ms,
        f"Call scheduled via {source.value}",
        source,
        scheduled_timestamp=call.scheduled_timestamp,
        created_at=at_ms,
        source=source.value,
    )


def rescheduled(call: Call, previous: int, new: int, at_ms: int, source: Source) -> Event:
    """The call moved from ``previous`` to ``new``; the API's wording is the documented one."""
    if source is Source.API:
        return _event(
            call,
            EventType.RESCHEDULED,
            at_ms,
            API_RESCHEDULE_TEXT,
            source,
            previous_scheduled_timestamp=previous,
            new_scheduled_timestamp=new,
            updated_at=at_ms,
            endpoint_used="/schedule",
        )
    return _event(
        call,
        EventType.RESCHEDULED,
        at_ms,
        f"Scheduled call time updated via {source.value}",
        source,
        previous_scheduled_timestamp=previous,
        new_scheduled_timestamp=new,
        updated_at=at_ms,
        source=source.value,
    )


def cancelled(call: Call, at_ms: int, source: Source, reason: str | None) -> Event:
    """The call was cancelled before it ran."""
    return _event(
        call,
        EventType.CANCELLED,
        at_ms,
        f"Call cancelled via {source.value}",
        source,
        cancelled_at=at_ms,
        reason=reason,
        source=source.value,
    )


def claimed(call: Call, at_ms: int) -> Event:
    """A worker claimed the call (``call`` is the claimed state: attempt and lease set)."""
    return _event(
        call,
        EventType.CLAIMED,
        at_ms,
        "Call claimed by a worker",
        Source.WORKER,
        attempt=call.attempts,
        lease_owner=call.lease_owner,
        lease_expires_at=call.lease_expires_at,
        scheduled_timestamp=call.scheduled_timestamp,
    )


def completed(call: Call, at_ms: int, outcome: Any, source: Source) -> Event:
    """The call's attempt ended well."""
    return _event(
        call,
        EventType.COMPLETED,
        at_ms,
        "Call completed",
        source,
        attempt=call.attempts,
        outcome=outcome,
    )


def failed(call: Call, at_ms: int, error: str, source: Source) -> Event:
    """The call failed for good."""
    return _event(
        call,
        EventType.FAILED,
        at_ms,
        "Call failed",
        source,
        attempt=call.attempts,
        error=error,
    )


def retry_scheduled(call: Call, at_ms: int, retry_at: int, error: str | None, source: Source) -> Event:
    """The attempt failed or asked for a retry; the call waits again for ``retry_at``."""
    return _event(
        call,
        EventType.RETRY_SCHEDULED,
        at_ms,
        "Call retry scheduled",
        source,
        attempt=call.attempts,
        retry_at=retry_at,
        error=error,
    )


def lease_expired(call: Call, at_ms: int, action: str) -> Event:
    """The worker holding the call stopped renewing its lease (it died); ``action`` says what followed."""
    return _event(
        call,
        EventType.LEASE_EXPIRED,
        at_ms,
        "Call lease expired",
        Source.WORKER,
        attempt=call.attempts,
        lease_owner=call.lease_owner,
        lease_expires_at=call.lease_expires_at,
        action=action,
    )


def misfire_skipped(call: Call, at_ms: int, late_seconds: int) -> Event:
    """The call was found overdue and, under the ``skip`` misfire policy, was not placed."""
    return _event(
        call,
        EventType.MISFIRE_SKIPPED,
        at_ms,
        "Call skipped: found overdue",
        Source.WORKER,
        scheduled_timestamp=call.scheduled_timestamp,
        late_seconds=late_seconds,
        policy="skip",
    )


def misfire_moved(call: Call, at_ms: int, previous: int, late_seconds: int) -> Event:
    """The call was found overdue and, under the ``move`` misfire policy, moved to ``call``'s time."""
    return _event(
        call,
        EventType.MISFIRE_MOVED,
        at_ms,
        "Call moved: found overdue",
        Source.WORKER,
        previous_scheduled_timestamp=previous,
        new_scheduled_timestamp=call.scheduled_timestamp,
        late_seconds=late_seconds,
        policy="move",
    )


def window_deferred(call: Call, at_ms: int, previous: int) -> Event:
    """The call came due outside its calling window and waits for the window to open."""
    return _event(
        call,
        EventType.WINDOW_DEFERRED,
        at_ms,
        "Call deferred to its calling window",
        Source.WORKER,
        previous_scheduled_timestamp=previous,
        new_scheduled_timestamp=call.scheduled_timestamp,
    )


def released(call: Call, at_ms: int, attempt: int, reason: str) -> Event:
    """A stopping worker gave the call back before its attempt finished; it runs again."""
    return _event(
        call,
        EventType.RELEASED,
        at_ms,
        "Call released by a stopping worker",
        Source.WORKER,
        attempt=attempt,
        scheduled_timestamp=call.scheduled_timestamp,
        reason=reason,
    )


def awaiting_report(call: Call, at_ms: int) -> Event:
    """The executor placed the call; its dialer reports the outcome later."""
    return _event(
        call,
        EventType.AWAITING_REPORT,
        at_ms,
        "Call placed; awaiting the dialer's report",
        Source.WORKER,
        attempt=call.attempts,
        report_due_by=call.lease_expires_at,
    )
