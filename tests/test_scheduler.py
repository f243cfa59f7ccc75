"""The public API of CallScheduler, on every built-in store, with the clock frozen at the seed's moment."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from typing import Any

import attrs
import pytest
from tests.conftest import SEED_NOW, at

from callschedule import (
    CallingWindow,
    CallNotFound,
    CallNotReschedulable,
    CallScheduler,
    Conflict,
    EventType,
    ExecutionStatus,
    InvalidInput,
    ScheduleRejected,
    SchedulingPolicy,
    StoreNotFound,
    Unauthorized,
    _events,
    hookimpl,
)
from callschedule._model import Call, Source
from callschedule._plugins import make_plugin_manager
from callschedule.plugins.sqlite import SQLiteStore

ORG = "org-789"


def snapshot(scheduler: CallScheduler, org: str, call_id: str) -> tuple[Any, Any]:
    return scheduler.store.get_call(org, call_id), scheduler.store.events(org, call_id)


def test_the_seed_example_through_the_library(scheduler: CallScheduler) -> None:
    call = scheduler.create_call(
        organization_id=ORG,
        scheduled_timestamp=1748454000,
        call_id=None,
        timezone="America/New_York",
        payload={"to": "+15551234567"},
    )
    assert call.call_id.startswith("call_")
    result = scheduler.reschedule(organization_id=ORG, call_id=call.call_id, scheduled_timestamp=1748460000)
    assert result.previous_scheduled_timestamp == 1748454000
    assert result.new_scheduled_timestamp == 1748460000
    assert result.scheduled_for_human == "2025-05-28T19:20:00Z"
    assert result.call.scheduled_timestamp == 1748460000 and result.call.is_scheduled
    assert [e.type for e in result.events] == [EventType.RESCHEDULED]
    assert result.events[0].timestamp == SEED_NOW * 1000

    cancelled = scheduler.cancel(organization_id=ORG, call_id=call.call_id)
    assert cancelled.execution_status is ExecutionStatus.CANCELLED and not cancelled.is_scheduled
    assert scheduler.get_call(organization_id=ORG, call_id=call.call_id) == cancelled
    log = scheduler.events(organization_id=ORG, call_id=call.call_id)
    assert [e.type for e in log] == [EventType.CREATED, EventType.RESCHEDULED, EventType.CANCELLED]
    assert log[1].data == {
        "previous_scheduled_timestamp": 1748454000,
        "new_scheduled_timestamp": 1748460000,
        "updated_at": SEED_NOW * 1000,
        "source": "library",
    }


def test_made_ids_are_uuid7_in_the_order_they_were_made(scheduler: CallScheduler, frozen: Any) -> None:
    made, millis = [], []
    for step in range(3):
        frozen.move_to(at(SEED_NOW) + dt.timedelta(milliseconds=10 * step))
        millis += [time.time_ns() // 1_000_000] * 2
        made += [
            scheduler.create_call(organization_id=ORG, scheduled_timestamp=SEED_NOW + 60) for _ in range(2)
        ]
    ids = [uuid.UUID(call.call_id.removeprefix("call_")) for call in made]
    assert len(set(ids)) == 6
    assert all(made_id.version == 7 for made_id in ids)
    assert [made_id.int >> 80 for made_id in ids] == millis  # the 48-bit millisecond it was made in
    assert sorted(ids[0:2]) < sorted(ids[2:4]) < sorted(ids[4:6])


def test_every_change_raises_version_and_appends_one_event(scheduler: CallScheduler) -> None:
    call = scheduler.create_call(ORG, SEED_NOW + 60)
    for n in range(1, 4):
        scheduler.reschedule(ORG, call.call_id, SEED_NOW + 60 + n)
    stored = scheduler.get_call(ORG, call.call_id)
    assert stored.version == 4 and stored.reschedule_count == 3
    assert len(scheduler.events(ORG, call.call_id)) == 4


def test_client_chosen_id_makes_create_idempotent(scheduler: CallScheduler) -> None:
    first = scheduler.create_call(ORG, SEED_NOW + 60, call_id="call-x", payload={"to": "1"})
    again = scheduler.create_call(ORG, SEED_NOW + 60, call_id="call-x", payload={"to": "1"})
    assert again == first
    assert len(scheduler.events(ORG, "call-x")) == 1
    with pytest.raises(Conflict):
        scheduler.create_call(ORG, SEED_NOW + 60, call_id="call-x", payload={"to": "2"})
    assert scheduler.get_call(ORG, "call-x") == first


def test_create_applies_the_rules(store_url: str, frozen: object) -> None:
    policy = SchedulingPolicy(
        min_lead_seconds=60,
        calling_window=CallingWindow(dt.time(8), dt.time(21), mode="shift"),
    )
    with CallScheduler.open(store_url, policy=policy) as scheduler:
        with pytest.raises(ScheduleRejected) as info:
            scheduler.create_call(ORG, SEED_NOW + 30)
        assert info.value.rule == "not_in_past"
        # 1748487600 is 23:00 in New York: shifted to 08:00 the next morning (12:00 UTC).
        call = scheduler.create_call(ORG, 1748487600, timezone="America/New_York")
        assert call.scheduled_timestamp == 1748520000
        assert scheduler.list_calls(ORG).calls == [call]


def test_reschedule_and_cancel_refuse_calls_that_are_not_pending(scheduler: CallScheduler) -> None:
    call = scheduler.create_call(ORG, SEED_NOW + 60)
    scheduler.cancel(ORG, call.call_id)
    before = snapshot(scheduler, ORG, call.call_id)
    with pytest.raises(CallNotReschedulable, match="cancelled"):
        scheduler.reschedule(ORG, call.call_id, SEED_NOW + 120)
    with pytest.raises(CallNotReschedulable):
        scheduler.cancel(ORG, call.call_id)
    assert snapshot(scheduler, ORG, call.call_id) == before


def test_reschedule_with_a_stale_expected_version_conflicts(scheduler: CallScheduler) -> None:
    call = scheduler.create_call(ORG, SEED_NOW + 60)
    scheduler.reschedule(ORG, call.call_id, SEED_NOW + 90)
    before = snapshot(scheduler, ORG, call.call_id)
    with pytest.raises(Conflict):
        scheduler.reschedule(ORG, call.call_id, SEED_NOW + 120, expected_version=call.version)
    assert snapshot(scheduler, ORG, call.call_id) == before


def test_reschedule_cap_is_enforced(store_url: str, frozen: object) -> None:
    with CallScheduler.open(store_url, policy=SchedulingPolicy(max_reschedules=1)) as scheduler:
        call = scheduler.create_call(ORG, SEED_NOW + 60)
        scheduler.reschedule(ORG, call.call_id, SEED_NOW + 61)
        with pytest.raises(ScheduleRejected) as info:
            scheduler.reschedule(ORG, call.call_id, SEED_NOW + 62)
        assert info.value.rule == "max_reschedules"


def test_list_calls_filters_and_pages(scheduler: CallScheduler) -> None:
    ids = [scheduler.create_call(ORG, SEED_NOW + n, call_id=f"c{n}").call_id for n in range(1, 6)]
    scheduler.create_call("org-other", SEED_NOW + 1)
    scheduler.cancel(ORG, "c3")
    page = scheduler.list_calls(ORG, limit=2)
    seen = [c.call_id for c in page.calls]
    while page.next_cursor:
        page = scheduler.list_calls(ORG, limit=2, cursor=page.next_cursor)
        seen += [c.call_id for c in page.calls]
    assert seen == ids
    assert [c.call_id for c in scheduler.list_calls(ORG, status="cancelled").calls] == ["c3"]
    pending = scheduler.list_calls(
        ORG, status=["pending"], scheduled_from=SEED_NOW + 2, scheduled_to=SEED_NOW + 4
    )
    assert [c.call_id for c in pending.calls] == ["c2", "c4"]


def test_api_keys_authenticate_their_organization_until_revoked(scheduler: CallScheduler) -> None:
    key, secret = scheduler.create_api_key(organization_id=ORG)
    assert scheduler.authenticate(key, secret) == ORG
    stored = scheduler.store.get_api_key(key)
    assert stored is not None and secret not in stored.secret_hash
    for wrong in [(key, secret + "x"), ("csk_unknown", secret), (key, ""), (None, None)]:
        with pytest.raises(Unauthorized):
            scheduler.authenticate(*wrong)
    assert scheduler.revoke_api_key(key)
    with pytest.raises(Unauthorized):
        scheduler.authenticate(key, secret)


def test_an_unknown_store_url_is_a_clear_error() -> None:
    with pytest.raises(StoreNotFound, match="redis://x"):
        CallScheduler.open("redis://x")


# -- plugins ----------------------------------------------------------------------------------


class NoCallsOnTheHour:
    """A plugin rule and an event listener."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, EventType]] = []

    @hookimpl
    def callschedule_check_schedule(self, call: Call, requested_timestamp: int, now: int) -> None:
        if requested_timestamp % 3600 == 0:
            raise ScheduleRejected("not_on_the_hour", "no calls on the hour", requested_timestamp + 60)

    @hookimpl
    def callschedule_event(self, call: Call, event: Any) -> None:
        self.seen.append((call.call_id, event.type))


def test_plugin_rules_refuse_and_listeners_hear_every_event(store_url: str, frozen: object) -> None:
    plugin = NoCallsOnTheHour()
    with CallScheduler.open(store_url, plugins=[plugin]) as scheduler:
        call = scheduler.create_call(ORG, 1748455200 + 5, call_id="c")
        with pytest.raises(ScheduleRejected) as info:
            scheduler.reschedule(ORG, "c", 1748455200)
        assert info.value.rule == "not_on_the_hour" and info.value.next_allowed_timestamp == 1748455260
        scheduler.cancel(ORG, call.call_id)
    assert plugin.seen == [("c", EventType.CREATED), ("c", EventType.CANCELLED)]
    with CallScheduler.open("memory://") as other:
        other.create_call(ORG, SEED_NOW + 1)
    assert len(plugin.seen) == 2, "plugins belong to one scheduler, not the process"


def test_commit_changes_writes_a_batch_and_tells_listeners_of_what_was_written(
    store_url: str, frozen: object
) -> None:
    plugin = NoCallsOnTheHour()
    with CallScheduler.open(store_url, plugins=[plugin]) as scheduler:
        a = scheduler.create_call(ORG, SEED_NOW + 60, call_id="a")
        b = scheduler.create_call(ORG, SEED_NOW + 60, call_id="b")
        scheduler.cancel(ORG, "b")  # b moves on: a change made at b's old version conflicts
        plugin.seen.clear()
        changes = []
        for call in (a, b):
            new = attrs.evolve(call, execution_status=ExecutionStatus.CANCELLED, version=call.version + 1)
            event = _events.cancelled(new, SEED_NOW * 1000, Source.WORKER, "batch")
            changes.append((new, call.version, [event]))
        results = scheduler.commit_changes(changes)
        assert results[0] == changes[0][0] and isinstance(results[1], Conflict)
        assert scheduler.get_call(ORG, "a").execution_status is ExecutionStatus.CANCELLED
        assert [e.type for e in scheduler.events(ORG, "b")] == [EventType.CREATED, EventType.CANCELLED]
        assert plugin.seen == [("a", EventType.CANCELLED)]


# -- bad input: a typed error, and nothing changes ---------------------------------------------

BAD_TIMESTAMPS = [True, 1748460000.0, 1748460000.5, "1748460000", None, -1, 253402300800, 10**20]


@pytest.mark.parametrize("bad", BAD_TIMESTAMPS, ids=repr)
def test_bad_timestamps_are_refused_everywhere(scheduler: CallScheduler, bad: Any) -> None:
    call = scheduler.create_call(ORG, SEED_NOW + 60, call_id="c")
    before = snapshot(scheduler, ORG, "c")
    with pytest.raises(InvalidInput, match="scheduled_timestamp"):
        scheduler.create_call(ORG, bad, call_id="c2")
    with pytest.raises(InvalidInput, match="scheduled_timestamp"):
        scheduler.reschedule(ORG, call.call_id, bad)
    assert scheduler.store.get_call(ORG, "c2") is None
    assert snapshot(scheduler, ORG, "c") == before


def test_bad_arguments_are_refused_with_the_field_named(scheduler: CallScheduler) -> None:
    scheduler.create_call(ORG, SEED_NOW + 60, call_id="c")
    before = snapshot(scheduler, ORG, "c")
    cases: list[tuple[str, Any]] = [
        ("timezone", lambda: scheduler.create_call(ORG, SEED_NOW + 60, timezone="Mars/Olympus")),
        ("timezone", lambda: scheduler.create_call(ORG, SEED_NOW + 60, timezone=5)),
        ("payload", lambda: scheduler.create_call(ORG, SEED_NOW + 60, payload=["to"])),
        ("payload", lambda: scheduler.create_call(ORG, SEED_NOW + 60, payload={"x": float("nan")})),
        ("payload", lambda: scheduler.create_call(ORG, SEED_NOW + 60, payload={"x": object()})),
        ("call_id", lambda: scheduler.create_call(ORG, SEED_NOW + 60, call_id="")),
        ("call_id", lambda: scheduler.create_call(ORG, SEED_NOW + 60, call_id="x" * 201)),
        ("call_id", lambda: scheduler.create_call(ORG, SEED_NOW + 60, call_id=7)),
        ("organization_id", lambda: scheduler.create_call("", SEED_NOW + 60)),
        ("organization_id", lambda: scheduler.reschedule(None, "c", SEED_NOW + 60)),
        ("call_id", lambda: scheduler.get_call(ORG, 12)),
        ("status", lambda: scheduler.list_calls(ORG, status="done")),
        ("limit", lambda: scheduler.list_calls(ORG, limit=0)),
        ("limit", lambda: scheduler.list_calls(ORG, limit=True)),
        ("cursor", lambda: scheduler.list_calls(ORG, cursor="not-a-cursor")),
        ("scheduled_from", lambda: scheduler.list_calls(ORG, scheduled_from="today")),
        ("reason", lambda: scheduler.cancel(ORG, "c", reason=5)),
        ("organization_id", lambda: scheduler.create_api_key(organization_id=None)),
        ("source", lambda: scheduler.create_call(ORG, SEED_NOW + 60, source="email")),  # type: ignore[arg-type]
        ("source", lambda: scheduler.reschedule(ORG, "c", SEED_NOW + 90, source="email")),  # type: ignore[arg-type]
        ("source", lambda: scheduler.cancel(ORG, "c", source="email")),  # type: ignore[arg-type]
        ("expected_version", lambda: scheduler.reschedule(ORG, "c", SEED_NOW + 90, expected_version="1")),
        # a folder of the time zone database, and a name longer than a file name may be
        ("timezone", lambda: scheduler.create_call(ORG, SEED_NOW + 60, timezone="America")),
        ("timezone", lambda: scheduler.create_call(ORG, SEED_NOW + 60, timezone="Europe/" + "x" * 300)),
        # text that cannot be written as UTF-8, and nesting deeper than any dialer needs
        ("payload", lambda: scheduler.create_call(ORG, SEED_NOW + 60, payload={"to": "\ud800"})),
        ("payload", lambda: scheduler.create_call(ORG, SEED_NOW + 60, payload=_nested(500))),
        ("reason", lambda: scheduler.cancel(ORG, "c", reason="\udcff")),
        ("cursor", lambda: scheduler.list_calls(ORG, cursor=_cursor([10**30, "c"]))),
        ("cursor", lambda: scheduler.list_calls(ORG, cursor=_cursor([-(2**70), "c"]))),
    ]
    for field, action in cases:
        with pytest.raises(InvalidInput) as info:
            action()
        assert info.value.field == field
    assert snapshot(scheduler, ORG, "c") == before
    assert [c.call_id for c in scheduler.list_calls(ORG).calls] == ["c"]


def test_payload_nesting_limit_counts_levels_not_brackets(scheduler: CallScheduler) -> None:
    from callschedule._validation import MAX_PAYLOAD_DEPTH

    # brackets inside strings are text, however many; the limit is on levels of nesting
    shallow = {"note": "{[" * 500, "list": [[1], [2], {"x": [3]}] * 40}
    assert scheduler.create_call(ORG, SEED_NOW + 60, payload=shallow).payload == shallow
    assert scheduler.create_call(ORG, SEED_NOW + 60, payload=_nested(MAX_PAYLOAD_DEPTH - 1)).payload
    with pytest.raises(InvalidInput, match=f"nested more than {MAX_PAYLOAD_DEPTH} levels deep"):
        scheduler.create_call(ORG, SEED_NOW + 60, payload=_nested(MAX_PAYLOAD_DEPTH))
    # too deep and not JSON besides: the depth is what the error names
    too_deep = _nested(MAX_PAYLOAD_DEPTH + 5)
    too_deep["bad"] = float("nan")
    with pytest.raises(InvalidInput, match="levels deep") as info:
        scheduler.create_call(ORG, SEED_NOW + 60, payload=too_deep)
    assert info.value.__context__ is None  # no encoder traceback chained to it

    # the depth counted is that of what would be stored, however a mapping reports its values
    class Opaque(dict):  # type: ignore[type-arg]
        def values(self) -> Any:
            return []

    with pytest.raises(InvalidInput, match="levels deep"):
        scheduler.create_call(ORG, SEED_NOW + 60, payload=Opaque(deep=_nested(MAX_PAYLOAD_DEPTH)))


def test_a_refused_payload_is_not_repeated_in_the_error(scheduler: CallScheduler) -> None:
    # a payload is the callee's personal data: errors name what is wrong, not what it holds
    for bad in (
        [{"to": "+15551234567"}],
        {1: "+15551234567"},
        {"to": "+15551234567", "x": float("inf")},
        {"to": "+15551234567", "n": 10**5000},  # beyond the interpreter's int-to-text limit
    ):
        with pytest.raises(InvalidInput) as info:
            scheduler.create_call(ORG, SEED_NOW + 60, payload=bad)  # type: ignore[arg-type]
        assert info.value.field == "payload"
        assert "5551234567" not in str(info.value)
        assert "sys." not in str(info.value)  # no advice meant for the interpreter's own settings


def _nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for _ in range(depth):
        payload = {"a": payload}
    return payload


def _cursor(value: Any) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_payload_is_stored_as_the_json_it_reads_back_as(scheduler: CallScheduler) -> None:
    # tuples and non-string keys of nested objects have no JSON form of their own: the call
    # returned is the call stored, so repeating the create is idempotent.
    payload = {"to": ("+1555", "+1556"), "retry": {1: "soon"}}
    first = scheduler.create_call(ORG, SEED_NOW + 60, call_id="c", payload=payload)
    assert first.payload == {"to": ["+1555", "+1556"], "retry": {"1": "soon"}}
    assert scheduler.get_call(ORG, "c") == first
    assert scheduler.create_call(ORG, SEED_NOW + 60, call_id="c", payload=payload) == first


@pytest.mark.parametrize("who", ["unknown call", "another organization's call"])
def test_unknown_and_foreign_calls_are_not_found_everywhere(scheduler: CallScheduler, who: str) -> None:
    scheduler.create_call("org-a", SEED_NOW + 60, call_id="theirs")
    before = snapshot(scheduler, "org-a", "theirs")
    org, call_id = ("org-a", "nope") if who == "unknown call" else ("org-b", "theirs")
    for action in (
        lambda: scheduler.get_call(org, call_id),
        lambda: scheduler.reschedule(org, call_id, SEED_NOW + 120),
        lambda: scheduler.cancel(org, call_id),
        lambda: scheduler.events(org, call_id),
    ):
        with pytest.raises(CallNotFound) as info:
            action()
        assert info.value.call_id == call_id
    assert snapshot(scheduler, "org-a", "theirs") == before
    assert scheduler.list_calls("org-b").calls == []


# -- from async code --------------------------------------------------------------------------


def test_the_async_methods_change_and_refuse_as_the_plain_ones_do(scheduler: CallScheduler) -> None:
    async def scenario() -> tuple[Call, Call, Any, Call]:
        call = await scheduler.create_call_async(ORG, SEED_NOW + 600, "c-async", payload={"to": "+1555"})
        again = await scheduler.create_call_async(ORG, SEED_NOW + 600, "c-async", payload={"to": "+1555"})
        with pytest.raises(Conflict):
            await scheduler.create_call_async(ORG, SEED_NOW + 600, "c-async", payload={"to": "+1666"})
        result = await scheduler.reschedule_async(ORG, "c-async", SEED_NOW + 1200)
        with pytest.raises(ScheduleRejected):
            await scheduler.reschedule_async(ORG, "c-async", SEED_NOW - 10)
        with pytest.raises(CallNotFound):
            await scheduler.reschedule_async("org-other", "c-async", SEED_NOW + 1800)
        with pytest.raises(Conflict):
            await scheduler.reschedule_async(ORG, "c-async", SEED_NOW + 1800, expected_version=1)
        with pytest.raises(InvalidInput):
            await scheduler.reschedule_async(ORG, "c-async", True)  # type: ignore[arg-type]
        cancelled = await scheduler.cancel_async(ORG, "c-async", reason="no longer needed")
        with pytest.raises(CallNotReschedulable):
            await scheduler.reschedule_async(ORG, "c-async", SEED_NOW + 1800)
        with pytest.raises(CallNotReschedulable):
            await scheduler.cancel_async(ORG, "c-async")
        return call, again, result, cancelled

    call, again, result, cancelled = asyncio.run(scenario())
    assert again == call
    assert result.previous_scheduled_timestamp == SEED_NOW + 600
    assert result.new_scheduled_timestamp == SEED_NOW + 1200 and result.call.version == 2
    assert cancelled.execution_status is ExecutionStatus.CANCELLED and cancelled.version == 3
    assert scheduler.get_call(ORG, "c-async") == cancelled
    log = scheduler.events(ORG, "c-async")
    assert [e.type for e in log] == [EventType.CREATED, EventType.RESCHEDULED, EventType.CANCELLED]
    assert log[1] == result.events[0]


def test_concurrent_async_reschedules_of_one_call_let_one_win(scheduler: CallScheduler) -> None:
    scheduler.create_call(ORG, SEED_NOW + 600, "c-race")

    async def race() -> list[Any]:
        moves = [scheduler.reschedule_async(ORG, "c-race", SEED_NOW + 1000 + n) for n in range(16)]
        return await asyncio.gather(*moves, return_exceptions=True)

    results = asyncio.run(race())
    won = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, Conflict) for r in results if r not in won)
    if isinstance(scheduler.store, SQLiteStore):  # one transaction for the turn: one read won
        assert len(won) == 1
    else:  # memory answers each at once, in turn; PostgreSQL's threads race for real
        assert len(won) >= 1
    stored = scheduler.get_call(ORG, "c-race")
    assert stored.version == 1 + len(won) and stored.reschedule_count == len(won)
    assert len(scheduler.events(ORG, "c-race")) == 1 + len(won)


def test_the_event_loop_serves_only_where_nothing_can_block(store_url: str, frozen: object) -> None:
    builtin_only = CallScheduler.open(store_url, load_entry_points=False)
    with_a_listener = CallScheduler.open(store_url, load_entry_points=False, plugins=[NoCallsOnTheHour()])
    try:
        expected = not store_url.startswith("postgresql")  # PostgreSQL reads cross the network
        assert builtin_only.serves_event_loop is expected
        assert with_a_listener.serves_event_loop is False
    finally:
        builtin_only.close()
        with_a_listener.close()


def test_plugins_that_may_block_run_off_the_event_loop(store_url: str, frozen: object) -> None:
    threads: list[int] = []

    class Listener:
        @hookimpl
        def callschedule_event(self, call: Call, event: Any) -> None:
            threads.append(threading.get_ident())

    async def scenario(scheduler: CallScheduler) -> int:
        await scheduler.create_call_async(ORG, SEED_NOW + 600, "c-heard")
        await scheduler.reschedule_async(ORG, "c-heard", SEED_NOW + 900)
        await scheduler.cancel_async(ORG, "c-heard")
        return threading.get_ident()

    with CallScheduler.open(store_url, load_entry_points=False, plugins=[Listener()]) as scheduler:
        loop_thread = asyncio.run(scenario(scheduler))
    assert len(threads) == 3 and loop_thread not in threads


def test_a_plugin_registered_under_a_builtin_name_still_counts_as_a_plugin(tmp_path: Any) -> None:
    class VaultAuth:  # replaces the built-in authentication, and may block on its vault
        @hookimpl
        def callschedule_authenticate(self, scheduler: Any, api_key: str, api_secret: str) -> str | None:
            return None

    manager = make_plugin_manager(load_entry_points=False)
    manager.unregister(name="callschedule.plugins.auth")
    manager.register(VaultAuth(), name="callschedule.plugins.auth")
    store = SQLiteStore(str(tmp_path / "calls.db"))
    scheduler = CallScheduler(store=store, plugin_manager=manager)
    assert scheduler.serves_event_loop is False
    scheduler.close()


def test_a_cancelled_async_change_is_committed_all_the_same(scheduler: CallScheduler) -> None:
    scheduler.create_call(ORG, SEED_NOW + 600, "c-cancelled")

    async def move_then_cancel() -> bool:
        move = asyncio.ensure_future(scheduler.reschedule_async(ORG, "c-cancelled", SEED_NOW + 900))
        await asyncio.sleep(0)  # the change reaches the store (memory: and is done with)
        move.cancel()
        await asyncio.gather(move, return_exceptions=True)
        for _ in range(200):  # the commit in flight lands (bounded; a thread's, on PostgreSQL)
            if scheduler.get_call(ORG, "c-cancelled").version == 2:
                break
            await asyncio.to_thread(time.sleep, 0.02)
        return move.cancelled()

    cancelled = asyncio.run(move_then_cancel())
    if isinstance(scheduler.store, SQLiteStore):
        assert cancelled  # the caller was cancelled while its change waited for the commit
    stored = scheduler.get_call(ORG, "c-cancelled")
    assert stored.scheduled_timestamp == SEED_NOW + 900
    assert [e.type for e in scheduler.events(ORG, "c-cancelled")] == [
        EventType.CREATED,
        EventType.RESCHEDULED,
    ]
