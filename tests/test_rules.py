"""Each scheduling rule on its own, as pure functions, DST days included."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from callschedule import CallingWindow, InvalidInput, ScheduleRejected, SchedulingPolicy
from callschedule._model import Call, ExecutionStatus
from callschedule._rules import (
    apply_calling_window,
    check_horizon,
    check_not_in_past,
    check_reschedule_cap,
    check_status,
    decide,
    decide_reschedule,
)
from callschedule.exceptions import CallNotReschedulable

NOW = 1_748_452_000
NEW_YORK = ZoneInfo("America/New_York")
WINDOW = CallingWindow(start=dt.time(8), end=dt.time(21))


def ny(*args: int) -> int:
    """Unix seconds of a New York wall-clock time (fold=0)."""
    return int(dt.datetime(*args, tzinfo=NEW_YORK).timestamp())


def utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


def policy(**kwargs: object) -> SchedulingPolicy:
    return SchedulingPolicy(**kwargs)  # type: ignore[arg-type]


def call(**kwargs: object) -> Call:
    fields: dict[str, object] = {"call_id": "c", "organization_id": "o", "scheduled_timestamp": NOW + 60}
    fields.update(kwargs)
    return Call(**fields)  # type: ignore[arg-type]


# -- not in the past --------------------------------------------------------------------------


def test_now_and_later_are_allowed_without_a_lead() -> None:
    check_not_in_past(NOW, NOW, policy())
    check_not_in_past(NOW + 1, NOW, policy())


def test_a_second_ago_is_rejected_with_now_as_next_allowed() -> None:
    with pytest.raises(ScheduleRejected) as info:
        check_not_in_past(NOW - 1, NOW, policy())
    assert info.value.rule == "not_in_past"
    assert info.value.next_allowed_timestamp == NOW


def test_minimum_lead_moves_the_earliest_allowed_time() -> None:
    check_not_in_past(NOW + 300, NOW, policy(min_lead_seconds=300))
    with pytest.raises(ScheduleRejected) as info:
        check_not_in_past(NOW + 299, NOW, policy(min_lead_seconds=300))
    assert info.value.next_allowed_timestamp == NOW + 300


# -- horizon ----------------------------------------------------------------------------------


def test_horizon_allows_up_to_its_end_and_rejects_beyond() -> None:
    check_horizon(NOW + 3600, NOW, policy(max_horizon_seconds=3600))
    with pytest.raises(ScheduleRejected) as info:
        check_horizon(NOW + 3601, NOW, policy(max_horizon_seconds=3600))
    assert info.value.rule == "max_horizon"
    assert info.value.next_allowed_timestamp is None


def test_no_horizon_means_any_future_time() -> None:
    check_horizon(NOW + 100 * 365 * 86400, NOW, policy(max_horizon_seconds=None))


def test_default_horizon_admits_the_readme_example_of_2030() -> None:
    check_horizon(1_893_456_000, utc(2026, 11, 25), SchedulingPolicy())


# -- status and cap ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        ExecutionStatus.IN_PROGRESS,
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    ],
)
def test_only_pending_calls_move(status: ExecutionStatus) -> None:
    check_status(call())
    with pytest.raises(CallNotReschedulable) as info:
        check_status(call(execution_status=status))
    assert info.value.status == status.value
    assert status.value in str(info.value)


def test_reschedule_cap_counts_previous_moves() -> None:
    check_reschedule_cap(call(reschedule_count=2), policy(max_reschedules=3))
    with pytest.raises(ScheduleRejected) as info:
        check_reschedule_cap(call(reschedule_count=3), policy(max_reschedules=3))
    assert info.value.rule == "max_reschedules"
    check_reschedule_cap(call(reschedule_count=10_000), policy(max_reschedules=None))


# -- calling window, DST days included ---------------------------------------------------------


def test_window_is_opt_in() -> None:
    assert apply_calling_window(utc(2026, 1, 1, 3), "America/New_York", policy()) == utc(2026, 1, 1, 3)


def test_window_accepts_inside_and_rejects_outside_with_next_opening() -> None:
    p = policy(calling_window=WINDOW)
    assert apply_calling_window(ny(2026, 6, 1, 8), "America/New_York", p) == ny(2026, 6, 1, 8)
    assert apply_calling_window(ny(2026, 6, 1, 20, 59, 59), "America/New_York", p) == ny(
        2026, 6, 1, 20, 59, 59
    )
    with pytest.raises(ScheduleRejected) as info:
        apply_calling_window(ny(2026, 6, 1, 21), "America/New_York", p)
    assert info.value.rule == "calling_window"
    assert info.value.next_allowed_timestamp == ny(2026, 6, 2, 8)


def test_window_is_read_in_the_calls_own_zone() -> None:
    p = policy(calling_window=WINDOW)
    noon_utc = utc(2026, 6, 1, 12)  # 08:00 in New York, 21:00 in Tokyo
    assert apply_calling_window(noon_utc, "America/New_York", p) == noon_utc
    with pytest.raises(ScheduleRejected):
        apply_calling_window(noon_utc, "Asia/Tokyo", p)


def test_calls_without_a_zone_use_the_windows_default_zone() -> None:
    p = policy(calling_window=CallingWindow(dt.time(8), dt.time(21), default_timezone="Europe/Paris"))
    with pytest.raises(ScheduleRejected) as info:
        apply_calling_window(utc(2026, 6, 1, 5, 30), None, p)  # 07:30 in Paris (UTC+2)
    assert info.value.next_allowed_timestamp == utc(2026, 6, 1, 6)


class TestSpringForward:
    """2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT; 08:00 is 12:00 UTC that day."""

    p = policy(calling_window=WINDOW)

    def test_opening_is_eight_local_which_is_twelve_utc(self) -> None:
        assert apply_calling_window(utc(2026, 3, 8, 12), "America/New_York", self.p) == utc(2026, 3, 8, 12)
        with pytest.raises(ScheduleRejected) as info:
            apply_calling_window(utc(2026, 3, 8, 11, 59), "America/New_York", self.p)
        assert info.value.next_allowed_timestamp == utc(2026, 3, 8, 12)

    def test_the_night_before_opens_at_eight_edt_not_eight_est(self) -> None:
        with pytest.raises(ScheduleRejected) as info:
            apply_calling_window(ny(2026, 3, 7, 22), "America/New_York", self.p)
        assert info.value.next_allowed_timestamp == utc(2026, 3, 8, 12)

    def test_closing_is_twenty_one_edt(self) -> None:
        assert apply_calling_window(utc(2026, 3, 9, 0, 59), "America/New_York", self.p) == utc(
            2026, 3, 9, 0, 59
        )
        with pytest.raises(ScheduleRejected) as info:
            apply_calling_window(utc(2026, 3, 9, 1), "America/New_York", self.p)
        assert info.value.next_allowed_timestamp == utc(2026, 3, 9, 12)

    def test_a_window_opening_inside_the_gap_opens_when_the_gap_ends(self) -> None:
        p = policy(calling_window=CallingWindow(dt.time(2, 30), dt.time(5)))
        with pytest.raises(ScheduleRejected) as info:
            apply_calling_window(ny(2026, 3, 8, 1, 0), "America/New_York", p)
        assert info.value.next_allowed_timestamp == utc(2026, 3, 8, 7, 30)  # 03:30 EDT


class TestFallBack:
    """2026-11-01 in New York: 02:00 EDT falls back to 01:00 EST; 08:00 is 13:00 UTC that day."""

    p = policy(calling_window=WINDOW)

    def test_opening_is_eight_local_which_is_thirteen_utc(self) -> None:
        assert apply_calling_window(utc(2026, 11, 1, 13), "America/New_York", self.p) == utc(2026, 11, 1, 13)
        with pytest.raises(ScheduleRejected) as info:
            apply_calling_window(utc(2026, 11, 1, 12, 30), "America/New_York", self.p)  # 07:30 EST
        assert info.value.next_allowed_timestamp == utc(2026, 11, 1, 13)

    def test_both_one_thirties_of_the_repeated_hour_are_outside(self) -> None:
        for first_or_second in (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)):
            with pytest.raises(ScheduleRejected) as info:
                apply_calling_window(first_or_second, "America/New_York", self.p)
            assert info.value.next_allowed_timestamp == utc(2026, 11, 1, 13)

    def test_closing_is_twenty_one_est(self) -> None:
        assert apply_calling_window(utc(2026, 11, 2, 1, 59), "America/New_York", self.p) == utc(
            2026, 11, 2, 1, 59
        )
        with pytest.raises(ScheduleRejected) as info:
            apply_calling_window(utc(2026, 11, 2, 2), "America/New_York", self.p)
        assert info.value.next_allowed_timestamp == utc(2026, 11, 2, 13)


def test_shift_mode_moves_the_time_to_the_next_opening() -> None:
    p = policy(calling_window=CallingWindow(dt.time(8), dt.time(21), mode="shift"))
    assert apply_calling_window(ny(2026, 3, 8, 6), "America/New_York", p) == utc(2026, 3, 8, 12)


def test_weekdays_skip_to_the_next_allowed_day() -> None:
    weekdays_only = CallingWindow(dt.time(9), dt.time(17), weekdays=frozenset(range(5)))
    with pytest.raises(ScheduleRejected) as info:  # Saturday 2026-06-06 at 10:00
        apply_calling_window(ny(2026, 6, 6, 10), "America/New_York", policy(calling_window=weekdays_only))
    assert info.value.next_allowed_timestamp == ny(2026, 6, 8, 9)


def test_a_window_must_open_before_it_closes() -> None:
    with pytest.raises(InvalidInput):
        CallingWindow(dt.time(21), dt.time(8))


# -- the rules together -------------------------------------------------------------------------


def test_shifted_time_still_obeys_the_horizon() -> None:
    p = policy(
        calling_window=CallingWindow(dt.time(8), dt.time(21), mode="shift"),
        max_horizon_seconds=3600,
    )
    late_evening = ny(2026, 6, 1, 20, 30)
    with pytest.raises(ScheduleRejected) as info:
        decide(ny(2026, 6, 1, 21, 10), "America/New_York", late_evening, p)
    assert info.value.rule == "max_horizon"


def test_reschedule_checks_status_before_time() -> None:
    with pytest.raises(CallNotReschedulable):
        decide_reschedule(call(execution_status=ExecutionStatus.CANCELLED), NOW - 100, NOW, policy())


@pytest.mark.parametrize("mode", ["reject", "shift"])
@pytest.mark.parametrize("zone", [None, "Pacific/Kiritimati"])
def test_a_window_that_would_next_open_after_year_9999_refuses_the_time(zone: str | None, mode: str) -> None:
    p = policy(
        calling_window=CallingWindow(dt.time(8), dt.time(21), mode=mode),  # type: ignore[arg-type]
        max_horizon_seconds=None,
    )
    last = 253402300799  # 9999-12-31T23:59:59Z: 23:59 in UTC, and already year 10000 at UTC+14
    with pytest.raises(ScheduleRejected) as info:
        decide(last, zone, NOW, p)
    assert info.value.rule == "calling_window"
    assert info.value.next_allowed_timestamp is None
