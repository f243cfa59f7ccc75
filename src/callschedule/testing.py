"""Test helpers for plugin authors, above all the store conformance suite.

Every built-in store runs it, and a third-party store can too::

    import pytest
    from callschedule.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self):
            store = MyStore(...)      # fresh and empty
            yield store
            store.close()

This module needs pytest (the ``test`` extra); the library itself does not import it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pytest

from callschedule import _events
from callschedule._model import ApiKey, Call, Event, EventType, ExecutionStatus, Source
from callschedule.abc import Store
from callschedule.exceptions import CallNotFound, Conflict

NOW = 1_748_452_000
NOW_MS = NOW * 1000


def make_call(call_id: str = "call-1", organization_id: str = "org-a", **changes: Any) -> Call:
    """A pending call at ``NOW + 600`` with a payload; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "call_id": call_id,
        "organization_id": organization_id,
        "scheduled_timestamp": NOW + 600,
        "timezone": "America/New_York",
        "payload": {"to": "+15551234567", "agent": "ünïcode ✓", "nested": {"n": [1, 2]}},
        "created_at": NOW_MS,
        "updated_at": NOW_MS,
    }
    fields.update(changes)
    return Call(**fields)


def created_event(call: Call) -> Event:
    """The creation event a scheduler would write for ``call``."""
    return _events.created(call, call.created_at, Source.LIBRARY)


def moved(call: Call, to: int) -> tuple[Call, Event]:
    """``call`` moved to ``to`` (next version) and the event saying so."""
    new = attrs.evolve(
        call, scheduled_timestamp=to, version=call.version + 1, reschedule_count=call.reschedule_count + 1
    )
    return new, _events.rescheduled(new, call.scheduled_timestamp, to, NOW_MS, Source.LIBRARY)


def _moved_at_version(call: Call, to: int) -> tuple[Call, int, list[Event]]:
    new, event = moved(call, to)
    return new, call.version, [event]


class StoreConformance:
    """The behaviour every :class:`~callschedule.abc.Store` must have. Subclass it and provide a
    ``store`` fixture that yields a fresh, empty store."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("provide a `store` fixture that yields a fresh, empty store")

    def add(self, store: Store, call: Call) -> Call:
        assert store.insert_call(call, created_event(call)) == call
        return call

    # -- insert and read ------------------------------------------------------------------------

    def test_inserted_call_reads_back_equal(self, store: Store) -> None:
        call = self.add(store, make_call(outcome={"answered": True}))
        assert store.get_call("org-a", "call-1") == call

    def test_insert_writes_the_creation_event(self, store: Store) -> None:
        call = self.add(store, make_call())
        assert store.events("org-a", "call-1") == [created_event(call)]

    def test_duplicate_insert_returns_none_and_writes_nothing(self, store: Store) -> None:
        original = self.add(store, make_call())
        other = make_call(scheduled_timestamp=NOW + 9000, payload={"other": 1})
        assert store.insert_call(other, created_event(other)) is None
        assert store.get_call("org-a", "call-1") == original
        assert len(store.events("org-a", "call-1")) == 1

    def test_same_call_id_in_two_organizations_are_two_calls(self, store: Store) -> None:
        a = self.add(store, make_call(organization_id="org-a"))
        b = self.add(store, make_call(organization_id="org-b", scheduled_timestamp=NOW + 5))
        assert store.get_call("org-a", "call-1") == a
        assert store.get_call("org-b", "call-1") == b

    def test_unknown_call_reads_as_none_with_no_events(self, store: Store) -> None:
        self.add(store, make_call(organization_id="org-a"))
        assert store.get_call("org-a", "nope") is None
        assert store.get_call("org-b", "call-1") is None
        assert store.events("org-b", "call-1") == []

    # -- conditional update -----------------------------------------------------------------------

    def test_update_at_the_expected_version_replaces_the_call_and_appends_events(self, store: Store) -> None:
        call = self.add(store, make_call())
        new, event = moved(call, NOW + 1200)
        assert store.update_call(new, call.version, [event]) == new
        assert store.get_call("org-a", "call-1") == new
        assert store.events("org-a", "call-1") == [created_event(call), event]

    def test_update_appends_several_events_in_order(self, store: Store) -> None:
        call = self.add(store, make_call())
        new, first = moved(call, NOW + 1200)
        second = attrs.evolve(first, event="second", type=EventType.RETRY_SCHEDULED)
        store.update_call(new, call.version, [first, second])
        assert store.events("org-a", "call-1")[1:] == [first, second]

    def test_update_at_a_stale_version_conflicts_and_changes_nothing(self, store: Store) -> None:
        call = self.add(store, make_call())
        first, event = moved(call, NOW + 1200)
        store.update_call(first, call.version, [event])
        stale, stale_event = moved(call, NOW + 3600)
        with pytest.raises(Conflict):
            store.update_call(stale, call.version, [stale_event])
        assert store.get_call("org-a", "call-1") == first
        assert len(store.events("org-a", "call-1")) == 2

    def test_update_must_raise_the_version_by_one(self, store: Store) -> None:
        call = self.add(store, make_call())
        jump = attrs.evolve(call, version=call.version + 2, scheduled_timestamp=NOW + 1)
        with pytest.raises(Conflict):
            store.update_call(jump, call.version, [])
        assert store.get_call("org-a", "call-1") == call

    def test_update_of_unknown_call_is_not_found(self, store: Store) -> None:
        ghost, event = moved(make_call(call_id="ghost"), NOW + 1)
        with pytest.raises(CallNotFound):
            store.update_call(ghost, 1, [event])
        assert store.events("org-a", "ghost") == []

    def test_update_never_reaches_another_organizations_call(self, store: Store) -> None:
        theirs = self.add(store, make_call(organization_id="org-b"))
        mine, event = moved(make_call(organization_id="org-a"), NOW + 1)
        with pytest.raises(CallNotFound):
            store.update_call(mine, 1, [event])
        assert store.get_call("org-b", "call-1") == theirs

    def test_a_batch_of_updates_applies_each_and_refuses_each_on_its_own(self, store: Store) -> None:
        one = self.add(store, make_call("call-1"))
        two = self.add(store, make_call("call-2"))
        three = self.add(store, make_call("call-3"))
        one_moved, one_event = moved(one, NOW + 1200)
        stale, stale_event = moved(two, NOW + 1300)
        first_move, first_event = moved(two, NOW + 1250)
        store.update_call(first_move, two.version, [first_event])
        two_now = store.get_call("org-a", "call-2")
        three_moved, three_event = moved(three, NOW + 1400)
        ghost, ghost_event = moved(make_call("ghost"), NOW + 1)
        results = store.update_calls(
            [
                (one_moved, one.version, [one_event]),
                (stale, two.version, [stale_event]),
                (ghost, 1, [ghost_event]),
                (three_moved, three.version, [three_event]),
            ]
        )
        assert results[0] == one_moved and results[3] == three_moved
        assert isinstance(results[1], Conflict) and isinstance(results[2], CallNotFound)
        assert store.get_call("org-a", "call-1") == one_moved
        assert store.get_call("org-a", "call-2") == two_now  # the refused change left no trace
        assert store.get_call("org-a", "call-3") == three_moved
        assert store.events("org-a", "call-1") == [created_event(one), one_event]
        assert stale_event not in store.events("org-a", "call-2")
        assert store.events("org-a", "call-3") == [created_event(three), three_event]
        assert store.events("org-a", "ghost") == []

    def test_a_batch_may_change_one_call_twice_in_order(self, store: Store) -> None:
        call = self.add(store, make_call())
        first, first_event = moved(call, NOW + 1200)
        second, second_event = moved(first, NOW + 1800)
        assert store.update_calls(
            [(first, call.version, [first_event]), (second, first.version, [second_event])]
        ) == [
            first,
            second,
        ]
        assert store.get_call("org-a", "call-1") == second
        assert store.events("org-a", "call-1") == [created_event(call), first_event, second_event]

    def test_of_racing_updates_exactly_one_wins(self, store: Store) -> None:
        call = self.add(store, make_call())
        racers = 16
        barrier = threading.Barrier(racers)

        def race(n: int) -> str:
            new, event = moved(call, NOW + 1000 + n)
            barrier.wait()
            try:
                store.update_call(new, call.version, [event])
            except Conflict:
                return "conflict"
            return "won"

        with ThreadPoolExecutor(racers) as pool:
            results = list(pool.map(race, range(racers)))
        assert results.count("won") == 1
        assert results.count("conflict") == racers - 1
        stored = store.get_call("org-a", "call-1")
        assert stored is not None and stored.version == call.version + 1
        assert len(store.events("org-a", "call-1")) == 2

    # -- the same changes from an event loop --------------------------------------------------

    def test_async_insert_and_update_write_as_their_plain_forms_do(self, store: Store) -> None:
        call = make_call()
        new, event = moved(call, NOW + 1200)
        stale, stale_event = moved(call, NOW + 3600)
        ghost, ghost_event = moved(make_call(call_id="ghost"), NOW + 1)

        async def scenario() -> None:
            assert await store.insert_call_async(call, created_event(call)) == call
            assert await store.insert_call_async(call, created_event(call)) is None
            assert await store.update_call_async(new, call.version, [event]) == new
            with pytest.raises(Conflict):
                await store.update_call_async(stale, call.version, [stale_event])
            with pytest.raises(CallNotFound):
                await store.update_call_async(ghost, 1, [ghost_event])

        asyncio.run(scenario())
        assert store.get_call("org-a", "call-1") == new
        assert store.events("org-a", "call-1") == [created_event(call), event]
        assert store.events("org-a", "ghost") == []

    def test_concurrent_async_changes_each_commit_or_are_refused_alone(self, store: Store) -> None:
        calls = [self.add(store, make_call(f"call-{n}")) for n in range(12)]
        stale_of = calls[3]
        first, first_event = moved(stale_of, NOW + 10)
        store.update_call(first, stale_of.version, [first_event])

        async def scenario() -> list[Call | BaseException | None]:
            changes: list[Coroutine[Any, Any, Call | None]] = [
                store.update_call_async(*_moved_at_version(c, NOW + 1000 + n)) for n, c in enumerate(calls)
            ]
            changes.append(
                store.insert_call_async(make_call("call-new"), created_event(make_call("call-new")))
            )
            return await asyncio.gather(*changes, return_exceptions=True)

        results = asyncio.run(scenario())
        assert isinstance(results[3], Conflict)
        for n, call in enumerate(calls):
            if n == 3:
                continue
            assert results[n] == store.get_call("org-a", call.call_id)
            assert [e.type for e in store.events("org-a", call.call_id)] == [
                EventType.CREATED,
                EventType.RESCHEDULED,
            ]
        assert store.get_call("org-a", "call-3") == first  # the refused change left no trace
        assert results[-1] == make_call("call-new") == store.get_call("org-a", "call-new")

    def test_async_changes_racing_threads_on_one_call_let_exactly_one_win(self, store: Store) -> None:
        call = self.add(store, make_call())
        racers = 8
        barrier = threading.Barrier(racers + 1)

        def in_a_thread(n: int) -> str:
            new, event = moved(call, NOW + 2000 + n)
            barrier.wait()
            try:
                store.update_call(new, call.version, [event])
            except Conflict:
                return "conflict"
            return "won"

        async def on_the_loop() -> list[str]:
            async def one(n: int) -> str:
                new, event = moved(call, NOW + 1000 + n)
                try:
                    await store.update_call_async(new, call.version, [event])
                except Conflict:
                    return "conflict"
                return "won"

            await asyncio.to_thread(barrier.wait)
            return list(await asyncio.gather(*(one(n) for n in range(racers))))

        with ThreadPoolExecutor(racers) as pool:
            threads = [pool.submit(in_a_thread, n) for n in range(racers)]
            results = asyncio.run(on_the_loop()) + [t.result() for t in threads]
        assert results.count("won") == 1
        assert results.count("conflict") == 2 * racers - 1
        stored = store.get_call("org-a", "call-1")
        assert stored is not None and stored.version == call.version + 1
        assert len(store.events("org-a", "call-1")) == 2

    # -- listing ----------------------------------------------------------------------------------

    def test_list_is_scoped_ordered_filtered_and_paged(self, store: Store) -> None:
        for n in range(7):
            self.add(store, make_call(call_id=f"c{n}", scheduled_timestamp=NOW + 100 * (7 - n)))
        self.add(store, make_call(call_id="c-same-time", scheduled_timestamp=NOW + 100))
        self.add(store, make_call(call_id="theirs", organization_id="org-b"))
        cancelled = store.get_call("org-a", "c3")
        assert cancelled is not None
        store.update_call(
            attrs.evolve(cancelled, execution_status=ExecutionStatus.CANCELLED, version=2), 1, []
        )

        everything = store.list_calls("org-a")
        assert [c.call_id for c in everything] == ["c-same-time", "c6", "c5", "c4", "c3", "c2", "c1", "c0"]
        pending = store.list_calls("org-a", statuses=[ExecutionStatus.PENDING])
        assert "c3" not in [c.call_id for c in pending] and len(pending) == 7
        window = store.list_calls("org-a", scheduled_from=NOW + 200, scheduled_to=NOW + 400)
        assert [c.call_id for c in window] == ["c5", "c4", "c3"]

        pages, after = [], None
        while True:
            page = store.list_calls("org-a", after=after, limit=3)
            if not page:
                break
            pages.append([c.call_id for c in page])
            after = (page[-1].scheduled_timestamp, page[-1].call_id)
        assert [cid for p in pages for cid in p] == [c.call_id for c in everything]
        assert [len(p) for p in pages] == [3, 3, 2]

    # -- the worker's operations ------------------------------------------------------------------

    def claim(self, store: Store, now: int = NOW, limit: int = 100, owner: str = "w1") -> list[Call]:
        return store.claim_due(
            now=now, now_ms=now * 1000, limit=limit, lease_owner=owner, lease_expires_at=now * 1000 + 30_000
        )

    def test_claim_takes_due_pending_calls_earliest_first(self, store: Store) -> None:
        self.add(store, make_call(call_id="late", scheduled_timestamp=NOW - 10))
        self.add(store, make_call(call_id="early", scheduled_timestamp=NOW - 20))
        self.add(store, make_call(call_id="now", scheduled_timestamp=NOW))
        self.add(store, make_call(call_id="future", scheduled_timestamp=NOW + 1))
        claimed = self.claim(store, limit=2)
        assert [c.call_id for c in claimed] == ["early", "late"]
        assert [c.call_id for c in self.claim(store)] == ["now"]
        assert self.claim(store) == []

    def test_claim_sets_status_attempt_version_lease_and_writes_an_event(self, store: Store) -> None:
        call = self.add(store, make_call(scheduled_timestamp=NOW))
        [claimed] = self.claim(store, owner="worker-7")
        expected = attrs.evolve(
            call,
            execution_status=ExecutionStatus.IN_PROGRESS,
            attempts=1,
            version=2,
            lease_owner="worker-7",
            lease_expires_at=NOW_MS + 30_000,
            updated_at=NOW_MS,
        )
        assert claimed == expected
        assert store.get_call("org-a", "call-1") == expected
        events = store.events("org-a", "call-1")
        assert [e.type for e in events] == [EventType.CREATED, EventType.CLAIMED]
        assert events[1].data["attempt"] == 1 and events[1].data["lease_owner"] == "worker-7"

    def test_claim_skips_calls_that_are_not_pending(self, store: Store) -> None:
        call = self.add(store, make_call(scheduled_timestamp=NOW))
        store.update_call(attrs.evolve(call, execution_status=ExecutionStatus.CANCELLED, version=2), 1, [])
        assert self.claim(store) == []

    def test_racing_claims_never_claim_a_call_twice(self, store: Store) -> None:
        for n in range(200):
            self.add(store, make_call(call_id=f"c{n:03}", scheduled_timestamp=NOW - n))
        racers = 8
        barrier = threading.Barrier(racers)

        def race(n: int) -> list[str]:
            barrier.wait()
            got: list[str] = []
            while batch := self.claim(store, limit=7, owner=f"w{n}"):
                got.extend(c.call_id for c in batch)
            return got

        with ThreadPoolExecutor(racers) as pool:
            claimed = [cid for got in pool.map(race, range(racers)) for cid in got]
        assert sorted(claimed) == sorted(f"c{n:03}" for n in range(200))

    def test_claim_keeps_each_organization_within_its_limit(self, store: Store) -> None:
        for org in ("org-a", "org-b"):
            for n in range(4):
                self.add(store, make_call(call_id=f"c{n}", organization_id=org, scheduled_timestamp=NOW - n))
        self.add(store, make_call(call_id="c9", organization_id="org-c", scheduled_timestamp=NOW))
        busy = store.claim_due(
            now=NOW, now_ms=NOW_MS, limit=1, lease_owner="w0", lease_expires_at=NOW_MS + 30_000
        )
        assert [(c.organization_id, c.call_id) for c in busy] == [("org-a", "c3")]

        def limited(limit: int) -> list[tuple[str, str]]:
            claimed = store.claim_due(
                now=NOW,
                now_ms=NOW_MS,
                limit=limit,
                lease_owner="w1",
                lease_expires_at=NOW_MS + 30_000,
                organization_limit=2,
            )
            return [(c.organization_id, c.call_id) for c in claimed]

        # org-a already has one in progress, so only one more; each organization's earliest first.
        assert sorted(limited(100)) == [("org-a", "c2"), ("org-b", "c2"), ("org-b", "c3"), ("org-c", "c9")]
        assert limited(100) == []
        assert len(self.claim(store)) == 4  # without a limit the rest is claimable

    def test_a_claimed_call_moves_only_at_its_claimed_version(self, store: Store) -> None:
        call = self.add(store, make_call(scheduled_timestamp=NOW))
        self.claim(store)
        late_move, event = moved(call, NOW + 600)
        with pytest.raises(Conflict):
            store.update_call(late_move, call.version, [event])

    def finished(self, claimed: Call, *, retry_at: int | None = None) -> tuple[Call, int, list[Event]]:
        """The change a worker writes when ``claimed``'s attempt ended: completed, or (with
        ``retry_at``) pending again for a retry."""
        if retry_at is None:
            done = attrs.evolve(
                claimed,
                execution_status=ExecutionStatus.COMPLETED,
                version=claimed.version + 1,
                lease_owner=None,
                lease_expires_at=None,
            )
            return done, claimed.version, [_events.completed(done, NOW_MS, None, Source.WORKER)]
        again = attrs.evolve(
            claimed,
            execution_status=ExecutionStatus.PENDING,
            scheduled_timestamp=retry_at,
            version=claimed.version + 1,
            lease_owner=None,
            lease_expires_at=None,
        )
        return (
            again,
            claimed.version,
            [_events.retry_scheduled(again, NOW_MS, retry_at, "busy", Source.WORKER)],
        )

    def test_update_and_claim_writes_the_outcomes_then_claims_what_is_due(self, store: Store) -> None:
        self.add(store, make_call(call_id="ran", scheduled_timestamp=NOW - 30))
        self.add(store, make_call(call_id="retried", scheduled_timestamp=NOW - 20))
        ran, retried = self.claim(store, limit=2)
        self.add(store, make_call(call_id="next", scheduled_timestamp=NOW - 10))
        self.add(store, make_call(call_id="later", scheduled_timestamp=NOW + 60))
        completed, retry = self.finished(ran), self.finished(retried, retry_at=NOW)
        results, claimed = store.update_calls_and_claim_due(
            [completed, retry],
            now=NOW,
            now_ms=NOW_MS,
            limit=10,
            lease_owner="w2",
            lease_expires_at=NOW_MS + 30_000,
        )
        assert results == [completed[0], retry[0]]
        # The claim sees the outcomes: the retry due now is claimed again, the completed call not.
        assert [c.call_id for c in claimed] == ["next", "retried"]
        assert all(
            c.lease_owner == "w2" and c.execution_status is ExecutionStatus.IN_PROGRESS for c in claimed
        )
        assert store.get_call("org-a", "ran") == completed[0]
        assert store.get_call("org-a", "retried") == claimed[1]
        assert claimed[1].attempts == 2
        assert [e.type for e in store.events("org-a", "retried")] == [
            EventType.CREATED,
            EventType.CLAIMED,
            EventType.RETRY_SCHEDULED,
            EventType.CLAIMED,
        ]
        assert store.get_call("org-a", "later") is not None
        assert store.get_call("org-a", "later").execution_status is ExecutionStatus.PENDING  # type: ignore[union-attr]

    def test_update_and_claim_refuses_a_stale_outcome_alone(self, store: Store) -> None:
        self.add(store, make_call(call_id="a", scheduled_timestamp=NOW - 2))
        self.add(store, make_call(call_id="b", scheduled_timestamp=NOW - 1))
        a, b = self.claim(store)
        lease_lost, _, events = self.finished(a)
        self.add(store, make_call(call_id="c", scheduled_timestamp=NOW))
        results, claimed = store.update_calls_and_claim_due(
            [(lease_lost, a.version - 1, events), self.finished(b)],
            now=NOW,
            now_ms=NOW_MS,
            limit=10,
            lease_owner="w2",
            lease_expires_at=NOW_MS + 30_000,
        )
        assert isinstance(results[0], Conflict) and results[1] == self.finished(b)[0]
        assert [c.call_id for c in claimed] == ["c"]
        assert store.get_call("org-a", "a") == a  # the refused outcome left no trace
        assert [e.type for e in store.events("org-a", "a")] == [EventType.CREATED, EventType.CLAIMED]

    def test_update_and_claim_with_no_room_claims_nothing(self, store: Store) -> None:
        self.add(store, make_call(call_id="a", scheduled_timestamp=NOW - 1))
        [a] = self.claim(store)
        self.add(store, make_call(call_id="b", scheduled_timestamp=NOW))
        results, claimed = store.update_calls_and_claim_due(
            [self.finished(a)],
            now=NOW,
            now_ms=NOW_MS,
            limit=0,
            lease_owner="w1",
            lease_expires_at=NOW_MS + 30_000,
        )
        assert results == [self.finished(a)[0]] and claimed == []
        assert store.get_call("org-a", "b").execution_status is ExecutionStatus.PENDING  # type: ignore[union-attr]

    def test_expired_leases_lists_in_progress_calls_past_their_lease(self, store: Store) -> None:
        self.add(store, make_call(call_id="a", scheduled_timestamp=NOW))
        self.add(store, make_call(call_id="b", scheduled_timestamp=NOW + 5))
        self.claim(store)  # a: lease until NOW_MS + 30_000
        assert store.expired_leases(now_ms=NOW_MS + 30_000, limit=10) == []
        expired = store.expired_leases(now_ms=NOW_MS + 30_001, limit=10)
        assert [c.call_id for c in expired] == ["a"]

    def test_next_due_is_the_earliest_pending_time(self, store: Store) -> None:
        assert store.next_due_timestamp() is None
        self.add(store, make_call(call_id="a", scheduled_timestamp=NOW + 50))
        self.add(store, make_call(call_id="b", scheduled_timestamp=NOW + 20))
        self.add(store, make_call(call_id="c", scheduled_timestamp=NOW - 5))
        assert store.next_due_timestamp() == NOW - 5
        self.claim(store)
        assert store.next_due_timestamp() == NOW + 20

    # -- API keys ---------------------------------------------------------------------------------

    def test_api_keys_save_read_and_revoke(self, store: Store) -> None:
        key = ApiKey(api_key="csk_1", organization_id="org-a", secret_hash="h" * 64, created_at=NOW_MS)
        store.save_api_key(key)
        assert store.get_api_key("csk_1") == key
        assert store.get_api_key("csk_2") is None
        assert store.revoke_api_key("csk_1", NOW_MS + 1) is True
        assert store.get_api_key("csk_1") == attrs.evolve(key, revoked_at=NOW_MS + 1)
        assert store.revoke_api_key("csk_unknown", NOW_MS) is False
