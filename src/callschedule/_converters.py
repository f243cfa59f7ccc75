"""The one cattrs converter: calls and events to the wire shapes of the HTTP contract, and
request bodies from JSON with strict types and no unknown fields."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from callschedule._model import Call, Event, RescheduleResult
from callschedule.exceptions import InvalidInput

T = TypeVar("T")

converter = make_converter(forbid_extra_keys=True)


def _json_kind(value: Any) -> str:
    """What ``value`` is, in JSON's words: ``null``, ``true``, ``a number with a fraction``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "a number too large for any timestamp"
        if value.is_integer():
            return "a decimal number (write whole seconds without a point)"
        return "a number with a fraction"
    kinds = {int: "an integer", str: "a string", list: "an array", dict: "an object"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), type(value).__name__)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_json_kind(value)}")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_json_kind(value)}")
    return value


def _strict_object(value: Any, _: type) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {_json_kind(value)}")
    return value


converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook_func(lambda t: t == dict[str, Any], _strict_object)


def _is_opaque_json(type_: Any) -> bool:
    return type_ is Any or type_ == dict[str, Any]


# Payloads, event data and outcomes are JSON already: written out as they are, not walked level
# by level (which on a deeply nested outcome exhausts the stack and turns a read into a 500).
converter.register_unstructure_hook_func(_is_opaque_json, lambda value: value)


# -- wire shapes ------------------------------------------------------------------------------


@attrs.frozen
class WireEvent:
    """An event as the contract shows it."""

    timestamp: int
    event: str
    data: dict[str, Any]


@attrs.frozen
class WireMetadata:
    """``call.metadata`` of the contract."""

    is_scheduled: bool
    scheduled_timestamp: int
    execution_status: str


@attrs.frozen
class WireCall:
    """The call as the documented endpoint returns it: id, metadata, the events of this change."""

    call_id: str
    metadata: WireMetadata
    events: list[WireEvent]


@attrs.frozen
class WireCallDetail:
    """The call as the other endpoints return it: everything a user may want to see."""

    call_id: str
    organization_id: str
    metadata: WireMetadata
    timezone: str | None
    payload: dict[str, Any]
    attempts: int
    reschedule_count: int
    version: int
    created_at: int
    updated_at: int
    outcome: Any
    events: list[WireEvent]


@attrs.frozen
class WireScheduleUpdate:
    """``data`` of the documented endpoint's answer."""

    operation: str
    organization_id: str
    call_id: str
    previous_scheduled_timestamp: int
    new_scheduled_timestamp: int
    scheduled_for_human: str
    call: WireCall


def _metadata(call: Call) -> WireMetadata:
    return WireMetadata(call.is_scheduled, call.scheduled_timestamp, call.execution_status.value)


def _events(events: list[Event]) -> list[WireEvent]:
    return [WireEvent(e.timestamp, e.event, e.data) for e in events]


def event_to_wire(event: Event) -> dict[str, Any]:
    """``{"timestamp", "event", "data"}``."""
    return converter.unstructure(WireEvent(event.timestamp, event.event, event.data))  # type: ignore[no-any-return]


def call_to_wire(call: Call, events: list[Event]) -> dict[str, Any]:
    """The detailed wire shape of a call with the given events."""
    detail = WireCallDetail(
        call_id=call.call_id,
        organization_id=call.organization_id,
        metadata=_metadata(call),
        timezone=call.timezone,
        payload=call.payload,
        attempts=call.attempts,
        reschedule_count=call.reschedule_count,
        version=call.version,
        created_at=call.created_at,
        updated_at=call.updated_at,
        outcome=call.outcome,
        events=_events(events),
    )
    return converter.unstructure(detail)  # type: ignore[no-any-return]


def reschedule_to_wire(result: RescheduleResult) -> dict[str, Any]:
    """``data`` of ``PUT /calls/{callId}/schedule``, field for field as the seed page shows it."""
    update = WireScheduleUpdate(
        operation=result.operation,
        organization_id=result.organization_id,
        call_id=result.call_id,
        previous_scheduled_timestamp=result.previous_scheduled_timestamp,
        new_scheduled_timestamp=result.new_scheduled_timestamp,
        scheduled_for_human=result.scheduled_for_human,
        call=WireCall(result.call.call_id, _metadata(result.call), _events(result.events)),
    )
    return converter.unstructure(update)  # type: ignore[no-any-return]


def structure_request(body: Any, cls: type[T]) -> T:
    """Structure a decoded JSON body into ``cls``; :class:`InvalidInput` names the bad field."""
    if not isinstance(body, dict):
        raise InvalidInput("$", f"expected a JSON object, got {_json_kind(body)}")
    try:
        return converter.structure(body, cls)
    except cattrs.BaseValidationError as exc:
        for error in exc.exceptions:
            if isinstance(error, cattrs.ForbiddenExtraKeysError):
                unknown = sorted(error.extra_fields)
                allowed = ", ".join(a.name for a in attrs.fields(cls))  # type: ignore[arg-type]
                others = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
                raise InvalidInput(
                    f"$.{unknown[0]}", f"unknown field; the body takes {allowed}{others}"
                ) from None
        messages = cattrs.transform_error(exc, format_exception=_problem)
        path = messages[0].rpartition(" @ ")[2] or "$"
        problems = [message.rpartition(" @ ")[0] or message for message in messages]
        raise InvalidInput(path, "; ".join(problems)) from None


def _problem(error: BaseException, type_: type | None) -> str:
    """What is wrong with one field, in the words of our own checks where they raised."""
    if isinstance(error, TypeError) and str(error).startswith("expected "):
        return str(error)  # _strict_int and friends: "expected an integer, got float"
    return cattrs.v.format_exception(error, type_)
