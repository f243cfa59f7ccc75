"""The store contract. A store persists calls, their events and API keys.

Every method that changes a call writes the change and its events in one transaction: both or
neither. Changes are conditional on the version read, so of two racing writers exactly one wins
and the other gets :class:`~callschedule.exceptions.Conflict`. ``callschedule.testing`` holds the
conformance suite that checks all of this for any store.
"""

from __future__ import annotations

import abc
import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from callschedule._clock import Clock
from callschedule._model import ApiKey, Call, Event, ExecutionStatus
from callschedule.exceptions import CallNotFound, CallScheduleError, Conflict


def claimed_event(call: Call, at_ms: int) -> Event:
    """The ``claimed`` event a store appends for each call it claims in :meth:`Store.claim_due`.

    ``call`` is the claimed state (``in_progress``, attempt and lease set); ``at_ms`` the claim's
    time in Unix milliseconds. Stores build it here so every store's log reads the same.
    """
    from callschedule import _events

    return _events.claimed(call, at_ms)


class Store(abc.ABC):
    """Where calls, events and API keys live. Implementations must be thread-safe."""

    #: ``True`` for a store whose reads answer at once from this machine (memory, an embedded
    #: file), never waiting on a network or on writers, and whose :meth:`update_call_async`
    #: never blocks its event loop. ``async`` callers (the HTTP adapter, the ``*_async`` methods
    #: of :class:`~callschedule.CallScheduler`) then do a change's reads and rules on their
    #: event loop and await only the commit; for other stores (PostgreSQL) they run the whole
    #: change in a thread.
    serves_event_loop: ClassVar[bool] = False

    @abc.abstractmethod
    def insert_call(self, call: Call, event: Event) -> Call | None:
        """Insert a new call and its creation event.

        Returns the call, or ``None`` (and writes nothing) if the organization already has a
        call with this id.
        """

    @abc.abstractmethod
    def get_call(self, organization_id: str, call_id: str) -> Call | None:
        """The call with this id in this organization, or ``None``."""

    @abc.abstractmethod
    def update_call(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        """Replace the stored call with ``call`` and append ``events``, in one transaction.

        Only if the stored version is ``expected_version``; ``call.version`` must be
        ``expected_version + 1``. Raises :class:`~callschedule.exceptions.Conflict` otherwise,
        or :class:`~callschedule.exceptions.CallNotFound` if the call does not exist.
        """

    async def insert_call_async(self, call: Call, event: Event) -> Call | None:
        """:meth:`insert_call` for a caller on an event loop (see :meth:`update_call_async`)."""
        return await asyncio.to_thread(self.insert_call, call, event)

    async def update_call_async(self, call: Call, expected_version: int, events: Sequence[Event]) -> Call:
        """:meth:`update_call` for a caller on an event loop: the same change, result and errors.

        This default runs :meth:`update_call` in a thread. A store that sets
        :attr:`serves_event_loop` answers on the loop without a thread per change (SQLite gathers
        the loop's concurrent changes into one transaction and commits it in a thread of its own;
        memory writes at once).
        """
        return await asyncio.to_thread(self.update_call, call, expected_version, events)

    def update_calls(
        self, changes: Sequence[tuple[Call, int, Sequence[Event]]]
    ) -> list[Call | CallScheduleError]:
        """Apply several independent changes, each ``(call, expected_version, events)`` exactly
        as :meth:`update_call` would: conditional on its version, the call and its events both
        or neither.

        Returns, in order, each stored call or the :class:`~callschedule.exceptions.Conflict` /
        :class:`~callschedule.exceptions.CallNotFound` that refused it; a refused change leaves
        the others in place. A failure of the store itself is raised. A store may write the whole
        batch in one transaction (one commit instead of one each, as SQLite and PostgreSQL do); this default
        calls :meth:`update_call` for each change.
        """
        results: list[Call | CallScheduleError] = []
        for call, expected_version, events in changes:
            try:
                results.append(self.update_call(call, expected_version, events))
            except (Conflict, CallNotFound) as exc:
                results.append(exc)
        return results

    @abc.abstractmethod
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
        """The organization's calls ordered by (scheduled_timestamp, call_id).

        ``statuses`` filters (empty: all); ``scheduled_from``/``scheduled_to`` bound the time,
        both inclusive; ``after`` is the (scheduled_timestamp, call_id) of the last call of
        the previous page.
        """

    @abc.abstractmethod
    def events(self, organization_id: str, call_id: str) -> list[Event]:
        """The call's full event log, oldest first (empty if there is no such call)."""

    @abc.abstractmethod
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
        """Claim up to ``limit`` pending calls due at or before ``now``, earliest first.

        Each claimed call becomes ``in_progress`` with ``attempts + 1``, ``version + 1``, the
        lease owner and expiry (ms), and gets a ``claimed`` event, all in one transaction. A call
        is never claimed by two callers. Returns the claimed calls.

        With ``organization_limit``, no organization ends up with more than that many calls
        ``in_progress`` (counting those claimed before, by any worker); its other due calls wait.
        """

    def update_calls_and_claim_due(
        self,
        changes: Sequence[tuple[Call, int, Sequence[Event]]],
        *,
        now: int,
        now_ms: int,
        limit: int,
        lease_owner: str,
        lease_expires_at: int,
        organization_limit: int | None = None,
    ) -> tuple[list[Call | CallScheduleError], list[Call]]:
        """:meth:`update_calls` with ``changes``, then :meth:`claim_due` (nothing claimed when
        ``limit`` is 0); returns both results. For a worker that records the outcomes of its
        finished calls and claims the next ones in one round.

        The claim sees the changes (a change that makes a call due may let it be claimed).
        A store may do both in one transaction, one commit instead of two (SQLite and PostgreSQL do); this
        default makes the two calls. If it raises, the changes may have been written (this
        default) or not (one transaction): writing them again is safe, they then conflict.
        """
        results = self.update_calls(changes) if changes else []
        if limit <= 0:
            return results, []
        options = {} if organization_limit is None else {"organization_limit": organization_limit}
        claimed = self.claim_due(
            now=now,
            now_ms=now_ms,
            limit=limit,
            lease_owner=lease_owner,
            lease_expires_at=lease_expires_at,
            **options,
        )
        return results, claimed

    @abc.abstractmethod
    def expired_leases(self, *, now_ms: int, limit: int) -> list[Call]:
        """In-progress calls whose lease expired before ``now_ms`` (their worker stopped)."""

    @abc.abstractmethod
    def next_due_timestamp(self) -> int | None:
        """The earliest ``scheduled_timestamp`` of any pending call, or ``None``."""

    @abc.abstractmethod
    def save_api_key(self, key: ApiKey) -> None:
        """Store a new API key (its secret already hashed)."""

    @abc.abstractmethod
    def get_api_key(self, api_key: str) -> ApiKey | None:
        """The stored key, revoked or not, or ``None``."""

    @abc.abstractmethod
    def revoke_api_key(self, api_key: str, at_ms: int) -> bool:
        """Mark the key revoked; ``False`` if there is no such key."""

    def subscribe_due(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call ``listener(scheduled_timestamp)`` when *another process* makes a call due sooner.

        Optional: a store that cannot notify across processes (SQLite, memory) keeps this
        default, and workers fall back to a bounded poll. Returns a function that unsubscribes.
        """
        return lambda: None

    def clock(self) -> Clock | None:
        """The clock every process sharing this store should read, or ``None`` for the local one.

        A store shared by many machines (PostgreSQL) answers its server's clock, so that when
        machines' clocks disagree one clock still decides when a call is due and when a lease
        expires. :meth:`CallScheduler.open` uses it unless given a clock.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release connections and files."""


_Round = TypeVar("_Round", bound=Callable[..., Any])


def _one_transaction_round(method: _Round) -> _Round:
    """Mark a store's own :meth:`Store.update_calls_and_claim_due`, which runs the changes and
    the claim in one transaction. A subclass that overrides ``update_calls`` or ``claim_due``
    gets the default instead, which calls the two as that subclass defined them."""
    combined_for: dict[type, bool] = {}  # per concrete class: may it run ``method``?

    @functools.wraps(method)
    def round_(self: Store, changes: Sequence[tuple[Call, int, Sequence[Event]]], **claim: Any) -> Any:
        cls = type(self)
        combined = combined_for.get(cls)
        if combined is None:
            owner = next(c for c in cls.__mro__ if c.__dict__.get(method.__name__) is round_)
            combined = combined_for[cls] = all(
                getattr(cls, name) is getattr(owner, name) for name in ("update_calls", "claim_due")
            )
        if not combined:
            return Store.update_calls_and_claim_due(self, changes, **claim)
        return method(self, changes, **claim)

    return round_  # type: ignore[return-value]
