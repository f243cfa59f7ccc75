"""The scheduling rules: pure functions of (call, requested time, now, policy).

Each rule either returns (the time, possibly shifted) or raises a typed error naming itself.
:func:`decide` runs them in order; plugins add rules through the ``callschedule_check_schedule`` hook.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import attrs

from callschedule import _validation
from callschedule._model import Call, ExecutionStatus
from callschedule.exceptions import CallNotReschedulable, InvalidInput, ScheduleRejected

DAY = 86_400
ALL_WEEKDAYS = frozenset(range(7))


def _check_window_times(instance: CallingWindow, attribute: attrs.Attribute[dt.time], _: dt.time) -> None:
    if not instance.start < instance.end:
        raise InvalidInput("calling_window", "start must be earlier than end on the same day")


@attrs.frozen
class CallingWindow:
    """A daily window of local wall-clock time in which calls may be placed, ``[start, end)``.

    It is read in the call's own IANA time zone (``default_timezone`` for calls without one), so
    08:00-21:00 means 08:00-21:00 on the callee's clock on every day of the year, DST days included.
    ``mode="reject"`` refuses a time outside the window and names the next allowed time;
    ``mode="shift"`` moves the time to that next allowed time instead. ``weekdays`` uses
    Monday = 0 ... Sunday = 6.
    """

    start: dt.time = attrs.field(validator=_check_window_times)
    end: dt.time
    mode: Literal["reject", "shift"] = "reject"
    default_timezone: str = "UTC"
    weekdays: frozenset[int] = ALL_WEEKDAYS

    def contains(self, timestamp: int, timezone: str | None) -> bool:
        """Whether ``timestamp`` falls inside the window in ``timezone``."""
        try:
            local = dt.datetime.fromtimestamp(timestamp, self._zone(timezone))
        except (OverflowError, ValueError):  # its local date is past 9999-12-31: no window there
            return False
        return local.weekday() in self.weekdays and self.start <= local.time() < self.end

    def next_allowed(self, timestamp: int, timezone: str | None) -> int:
        """``timestamp`` itself if it is inside the window, else the next window opening after it.

        :raises ScheduleRejected: (rule ``calling_window``) the next opening would be after the
            last second of year 9999.
        """
        if self.contains(timestamp, timezone):
            return timestamp
        if not self.weekdays:
            raise InvalidInput("calling_window", "weekdays is empty: no time is ever allowed")
        zone = self._zone(timezone)
        try:
            day = dt.datetime.fromtimestamp(timestamp, zone).date()
            for offset in range(8):
                candidate_day = day + dt.timedelta(days=offset)
                if candidate_day.weekday() not in self.weekdays:
                    continue
                # A start inside a DST gap (02:30 on spring-forward day) resolves, with fold=0, to
                # the first real instant after the gap, which is what "open at 02:30" can only mean.
                opening = int(dt.datetime.combine(candidate_day, self.start, tzinfo=zone).timestamp())
                if timestamp < opening <= _validation.MAX_TIMESTAMP:
                    return opening
        except (OverflowError, ValueError):
            pass  # the calendar ends (9999-12-31) before the window opens again
        raise ScheduleRejected(
            "calling_window",
            f"timestamp {timestamp} is outside the calling window "
            f"{self.start:%H:%M}-{self.end:%H:%M} in {timezone or self.default_timezone}, "
            "and it does not open again before the end of year 9999",
        )

    def _zone(self, timezone: str | None) -> dt.tzinfo:
        return _validation.zone(timezone or self.default_timezone)


@attrs.frozen
class SchedulingPolicy:
    """The limits every schedule and reschedule obeys.

    - ``min_lead_seconds``: how far ahead of now a call must be (0: now or later).
    - ``max_horizon_seconds``: how far ahead it may be (``None``: no limit).
    - ``max_reschedules``: how many times one call may move (``None``: no limit).
    - ``calling_window``: an opt-in daily window in the call's time zone.
    """

    min_lead_seconds: int = 0
    max_horizon_seconds: int | None = 5 * 365 * DAY
    max_reschedules: int | None = None
    calling_window: CallingWindow | None = None


def check_status(call: Call) -> None:
    """Only pending calls move or cancel."""
    if call.execution_status is not ExecutionStatus.PENDING:
        raise CallNotReschedulable(call.call_id, call.execution_status.value)


def check_reschedule_cap(call: Call, policy: SchedulingPolicy) -> None:
    """A call moves at most ``max_reschedules`` times."""
    if policy.max_reschedules is not None and call.reschedule_count >= policy.max_reschedules:
        raise ScheduleRejected(
            "max_reschedules",
            f"Call {call.call_id!r} was already rescheduled {call.reschedule_count} times "
            f"(the limit is {policy.max_reschedules})",
        )


def check_not_in_past(requested: int, now: int, policy: SchedulingPolicy) -> None:
    """The time is at least ``min_lead_seconds`` after now."""
    earliest = now + policy.min_lead_seconds
    if requested < earliest:
        raise ScheduleRejected(
            "not_in_past",
            f"scheduled_timestamp {requested} is before the earliest allowed time {earliest} "
            f"(now is {now}, minimum lead {policy.min_lead_seconds}s)",
            next_allowed_timestamp=earliest,
        )


def check_horizon(requested: int, now: int, policy: SchedulingPolicy) -> None:
    """The time is at most ``max_horizon_seconds`` after now."""
    if policy.max_horizon_seconds is not None and requested > now + policy.max_horizon_seconds:
        raise ScheduleRejected(
            "max_horizon",
            f"scheduled_timestamp {requested} is more than {policy.max_horizon_seconds}s after now ({now})",
        )


def apply_calling_window(requested: int, timezone: str | None, policy: SchedulingPolicy) -> int:
    """The time, shifted into the calling window (``shift``) or refused outside it (``reject``)."""
    window = policy.calling_window
    if window is None:
        return requested
    allowed = window.next_allowed(requested, timezone)
    if allowed == requested or window.mode == "shift":
        return allowed
    zone_name = timezone or window.default_timezone
    raise ScheduleRejected(
        "calling_window",
        f"scheduled_timestamp {requested} is outside the calling window "
        f"{window.start:%H:%M}-{window.end:%H:%M} in {zone_name}; next allowed {allowed}",
        next_allowed_timestamp=allowed,
    )


def decide(requested: int, timezone: str | None, now: int, policy: SchedulingPolicy) -> int:
    """Run the time rules in order and return the time to store (shifted into the window if so set)."""
    check_not_in_past(requested, now, policy)
    allowed = apply_calling_window(requested, timezone, policy)
    check_horizon(allowed, now, policy)
    return allowed


def decide_reschedule(call: Call, requested: int, now: int, policy: SchedulingPolicy) -> int:
    """All rules for moving ``call`` to ``requested``: status, reschedule cap, then the time rules."""
    check_status(call)
    check_reschedule_cap(call, policy)
    return decide(requested, call.timezone, now, policy)
