"""The HTTP adapter: a Starlette app serving the API of ``CONTRACT.md`` over a :class:`CallScheduler`.

::

    from callschedule.asgi import create_app

    host_app.mount("/api", create_app(scheduler))   # Starlette, FastAPI, any ASGI app

The app's routes start at ``/calls``; ``/openapi.json`` describes them. Every answer, success or
error, is the JSON envelope ``{"message", "status", "error", "data"}``. Errors of the core map to
status codes in :data:`HTTP_STATUS`, the only place that does it.

This is the only module of callschedule that imports Starlette (the ``asgi`` extra).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from callschedule import _json, _validation
from callschedule._converters import (
    call_to_wire,
    event_to_wire,
    reschedule_to_wire,
    structure_request,
)
from callschedule._model import Call, RescheduleResult, Source
from callschedule._scheduler import CallScheduler
from callschedule.exceptions import (
    CallNotFound,
    CallNotReschedulable,
    CallScheduleError,
    Conflict,
    InvalidInput,
    ScheduleRejected,
    Unauthorized,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "HTTP_STATUS",
    "PayloadTooLarge",
    "create_app",
    "openapi_document",
    "standalone_app",
]

logger = logging.getLogger("callschedule.asgi")

T = TypeVar("T")

#: Request bodies larger than this many bytes are refused with 413 (``create_app(max_body_size=...)``).
DEFAULT_MAX_BODY_SIZE = 64 * 1024


class PayloadTooLarge(CallScheduleError):
    """The request body is larger than the app accepts; nothing was read further or changed."""

    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"Request body larger than {limit} bytes")

    def details(self) -> Any:
        return {"max_body_size": self.limit}


#: The one mapping from the error tree to HTTP status codes. A subclass (a plugin's rule
#: raising a ``ScheduleRejected`` subclass, say) takes its nearest listed ancestor's status;
#: any other exception is a 500 ``internal_error`` with no internals in the body.
HTTP_STATUS: Mapping[type[CallScheduleError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    CallNotFound: 404,
    CallNotReschedulable: 409,
    Conflict: 409,
    PayloadTooLarge: 413,
    ScheduleRejected: 422,
}

_INTERNAL_MESSAGE = "An unexpected error occurred; it was logged on the server"


# -- request bodies -------------------------------------------------------------------------------


@attrs.frozen
class ScheduleRequest:
    """Body of ``PUT /calls/{callId}/schedule``."""

    scheduled_timestamp: int


@attrs.frozen
class CreateCallRequest:
    """Body of ``POST /calls``."""

    scheduled_timestamp: int
    call_id: str | None = None
    timezone: str | None = None
    payload: dict[str, Any] | None = None


@attrs.frozen
class CancelRequest:
    """Body of ``POST /calls/{callId}/cancel`` (the body itself is optional)."""

    reason: str | None = None


# -- the envelope and the error mapping -----------------------------------------------------------


#: Starlette's JSONResponse settings, as one C call instead of a new encoder for every answer;
#: the same in ASCII for text that UTF-8 cannot carry.
_answer_text = _json.make_dumps(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ascii_answer_text = _json.make_dumps(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _render(content: Any) -> bytes:
    """``content`` as the JSON Starlette's JSONResponse sends, and always sent: text that UTF-8
    cannot carry (a lone surrogate in an outcome an executor reported, say) goes out as a JSON
    escape instead of failing the answer."""
    try:
        return _answer_text(content).encode("utf-8")
    except UnicodeEncodeError:
        return _ascii_answer_text(content).encode("ascii")


class _JSONResponse(JSONResponse):
    """A JSONResponse rendered by :func:`_render`."""

    def render(self, content: Any) -> bytes:
        return _render(content)


def _error_envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "message": message,
        "status": "error",
        "error": {"code": code, "details": details},
        "data": None,
    }


def _status_of(exc: CallScheduleError) -> int | None:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return None


def _failure(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status code and error envelope for ``exc``; unexpected errors are logged and get 500."""
    if isinstance(exc, CallScheduleError):
        status_code = _status_of(exc)
        if status_code is not None:
            return status_code, _error_envelope(exc.code, str(exc), exc.details())
    logger.error("Unexpected error while serving a request", exc_info=exc)
    return 500, _error_envelope("internal_error", _INTERNAL_MESSAGE)


def error_response(exc: BaseException) -> Response:
    """The envelope and status code for ``exc``; unexpected errors are logged and answered 500."""
    status_code, content = _failure(exc)
    return _JSONResponse(content, status_code=status_code)


#: What an endpoint of the API returns: the status code, and the envelope's message and data.
Answer = tuple[int, str, Any]
Endpoint = Callable[[Scope, Receive], Awaitable[Answer]]


@attrs.frozen
class _Api:
    """An endpoint of the API as a plain ASGI app (a Route takes an instance for one): it sends
    the endpoint's answer in the envelope, and whatever the endpoint raises as the error
    envelope (see :data:`HTTP_STATUS`).

    This is the work of Starlette's ``request_response`` and ``JSONResponse``, without their
    layers of wrappers and objects: 7% of the instructions of a request served in-process.

    A bad value the core refuses in a field of the request's body (``in_body``: the fields of
    its attrs class) is named as the body's field, ``$.payload``, as the body's type errors
    are; a path or query parameter keeps its bare name.
    """

    endpoint: Endpoint
    in_body: frozenset[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status_code, message, data = await self.endpoint(scope, receive)
            body = _render({"message": message, "status": "success", "error": None, "data": data})
        except ClientDisconnect:
            # Nobody is left to read an answer, and nothing was changed: not a server error.
            await Response(status_code=400)(scope, receive, send)
            return
        except Exception as exc:
            if isinstance(exc, InvalidInput) and exc.field in self.in_body:
                exc.field = f"$.{exc.field}"  # renamed in place: a plugin's subclass keeps its code
            status_code, content = _failure(exc)
            body = _render(content)
        await send(
            {
                "type": "http.response.start",
                "status": status_code,
                "headers": [
                    (b"content-length", str(len(body)).encode("latin-1")),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _api(endpoint: Endpoint, body: type | None = None) -> _Api:
    """``endpoint`` as an ASGI app; ``body`` is the attrs class of the request body it reads."""
    return _Api(endpoint, frozenset(field.name for field in attrs.fields(body)) if body else frozenset())


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Router errors (no such route, method not allowed) in the envelope too."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = _JSONResponse(_error_envelope(code, str(exc.detail)), status_code=exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


@attrs.frozen
class _ByMethod:
    """One route for several methods, so that a 405 lists all of them in ``Allow``; ``HEAD``
    is answered as ``GET`` (the server sends no body)."""

    apps: Mapping[str, ASGIApp]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        await self.apps[method](scope, receive, send)


# -- reading requests -----------------------------------------------------------------------------


# The endpoints read the ASGI scope and messages themselves: Starlette's Request builds more than
# they use (the misses of its lazy attributes alone cost more than the lookups here).


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of the header ``name`` (lower case, as ASGI gives names), as Starlette's
    ``Headers.get`` returns it."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body: :class:`PayloadTooLarge` past ``limit`` bytes (at once if the
    request declares as much), :class:`ClientDisconnect` if the client goes away first."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: Digits of the longest integer a body may hold: far beyond any timestamp or sensible payload
#: number, and short of the interpreter's own conversion limit (whose message names its internals).
_MAX_INT_DIGITS = 100


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(
            f"an integer of {len(text.lstrip('-'))} digits; at most {_MAX_INT_DIGITS} are accepted"
        )
    return int(text)


#: A body's value: JSON with no NaN or Infinity and no integer of more than 100 digits.
_body_value = _json.make_loads(parse_constant=_refuse_constant, parse_int=_parse_int)


def _parse_json(body: bytes, *, optional: bool = False) -> Any:
    """The decoded JSON body; :class:`InvalidInput` on ``$`` if it is not JSON."""
    if optional and not body.strip():
        return {}
    try:
        return _body_value(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput("$", "the body is not UTF-8 text") from None
    except RecursionError:
        raise InvalidInput("$", "the body nests arrays or objects too deeply") from None
    except ValueError as exc:
        raise InvalidInput("$", f"the body is not valid JSON ({exc})") from None


def _query_int(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        raise InvalidInput(name, f"expected a non-negative integer, got {raw[:40]!r}")
    return int(raw)


_LIST_PARAMETERS = frozenset({"status", "scheduled_from", "scheduled_to", "cursor", "limit"})


# -- the app --------------------------------------------------------------------------------------


def create_app(
    scheduler: CallScheduler,
    *,
    prefix: str = "",
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    debug: bool = False,
) -> Starlette:
    """A Starlette app serving the callschedule API over ``scheduler``; mount it anywhere.

    Routes (relative to where it is mounted, after ``prefix``; the standalone server serves
    them under ``/api``): ``POST /calls``, ``GET /calls``, ``GET /calls/{callId}``,
    ``PUT /calls/{callId}/schedule``, ``POST /calls/{callId}/cancel``,
    ``GET /calls/{callId}/events`` and ``GET /openapi.json``.

    Where the store never blocks (:attr:`CallScheduler.serves_event_loop`: SQLite, memory, and
    no plugin of yours in the authenticate, check_schedule or event hooks) a request is served
    on the event loop and only its commit is awaited; otherwise it runs in Starlette's thread pool.

    :param scheduler: the scheduler whose calls the API serves; its authentication hook checks
        the ``X-API-KEY``/``X-API-SECRET`` headers of every call route.
    :param prefix: a path the routes start with (``"/api"``): the same URLs as mounting the app
        there, without a second router in every request's way.
    :param max_body_size: the largest request body accepted, in bytes; larger ones get 413.
    :param debug: Starlette's debug mode (tracebacks for router errors only; API errors never
        show internals).
    """
    _validation.positive_int("max_body_size", max_body_size, maximum=2**31)
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise InvalidInput(
            "prefix", f"expected a path like /api (a leading /, no trailing /), got {prefix!r}"
        )

    def organization(scope: Scope) -> str:
        return scheduler.authenticate(_header(scope, b"x-api-key"), _header(scope, b"x-api-secret"))

    async def in_place(work: Callable[[], T]) -> T:
        """Run ``work`` (reads and checks of the core) on the event loop where nothing in it can
        block (:attr:`CallScheduler.serves_event_loop`), else in the thread pool."""
        return work() if scheduler.serves_event_loop else await run_in_threadpool(work)

    def with_log(call: Call) -> dict[str, Any]:
        return {"call": call_to_wire(call, scheduler.events(call.organization_id, call.call_id))}

    # The three changes: on the loop, only the commit is awaited (the *_async methods); in the
    # thread pool, the whole request is one job.

    async def schedule(scope: Scope, receive: Receive) -> Answer:
        body = await _read_body(scope, receive, max_body_size)
        call_id: str = scope["path_params"]["call_id"]

        def wanted() -> tuple[str, ScheduleRequest]:
            return organization(scope), structure_request(_parse_json(body), ScheduleRequest)

        if scheduler.serves_event_loop:
            org, move = wanted()
            result = await scheduler.reschedule_async(
                org, call_id, move.scheduled_timestamp, source=Source.API
            )
        else:

            def work() -> RescheduleResult:
                org, move = wanted()
                return scheduler.reschedule(org, call_id, move.scheduled_timestamp, source=Source.API)

            result = await run_in_threadpool(work)
        return (200, "Scheduled call time updated successfully", reschedule_to_wire(result))

    async def create_call(scope: Scope, receive: Receive) -> Answer:
        body = await _read_body(scope, receive, max_body_size)

        def wanted() -> tuple[str, CreateCallRequest]:
            return organization(scope), structure_request(_parse_json(body), CreateCallRequest)

        if scheduler.serves_event_loop:
            org, new = wanted()
            call = await scheduler.create_call_async(
                org, new.scheduled_timestamp, new.call_id, new.timezone, new.payload, source=Source.API
            )
            data = with_log(call)
        else:

            def work() -> dict[str, Any]:
                org, new = wanted()
                call = scheduler.create_call(
                    org, new.scheduled_timestamp, new.call_id, new.timezone, new.payload, source=Source.API
                )
                return with_log(call)

            data = await run_in_threadpool(work)
        return (201, "Call scheduled successfully", data)

    async def cancel(scope: Scope, receive: Receive) -> Answer:
        body = await _read_body(scope, receive, max_body_size)
        call_id: str = scope["path_params"]["call_id"]

        def wanted() -> tuple[str, CancelRequest]:
            return organization(scope), structure_request(_parse_json(body, optional=True), CancelRequest)

        if scheduler.serves_event_loop:
            org, why = wanted()
            data = with_log(await scheduler.cancel_async(org, call_id, reason=why.reason, source=Source.API))
        else:

            def work() -> dict[str, Any]:
                org, why = wanted()
                return with_log(scheduler.cancel(org, call_id, reason=why.reason, source=Source.API))

            data = await run_in_threadpool(work)
        return (200, "Call cancelled successfully", data)

    # The reads.

    async def list_calls(scope: Scope, receive: Receive) -> Answer:
        query = QueryParams(scope["query_string"])

        def work() -> dict[str, Any]:
            org = organization(scope)  # credentials first, as on every route
            for name in query:
                if name not in _LIST_PARAMETERS:
                    raise InvalidInput(name, "unknown query parameter")
            statuses = [s for value in query.getlist("status") for s in value.split(",")]
            scheduled_from = _query_int(query, "scheduled_from")
            scheduled_to = _query_int(query, "scheduled_to")
            limit = _query_int(query, "limit")
            cursor = query.get("cursor")
            page = scheduler.list_calls(
                org,
                statuses or None,
                scheduled_from=scheduled_from,
                scheduled_to=scheduled_to,
                cursor=cursor,
                limit=100 if limit is None else limit,
            )
            calls = []
            for call in page.calls:
                wire = call_to_wire(call, [])
                del wire["events"]  # a listing shows calls; each call's log is one request away
                calls.append(wire)
            return {"calls": calls, "next_cursor": page.next_cursor}

        return (200, "Calls listed successfully", await in_place(work))

    async def get_call(scope: Scope, receive: Receive) -> Answer:
        call_id: str = scope["path_params"]["call_id"]

        def work() -> dict[str, Any]:
            return with_log(scheduler.get_call(organization(scope), call_id))

        return (200, "Call retrieved successfully", await in_place(work))

    async def events(scope: Scope, receive: Receive) -> Answer:
        call_id: str = scope["path_params"]["call_id"]

        def work() -> dict[str, Any]:
            log = scheduler.events(organization(scope), call_id)
            return {"call_id": call_id, "events": [event_to_wire(e) for e in log]}

        return (200, "Call events retrieved successfully", await in_place(work))

    async def openapi(request: Request) -> Response:
        server_url = request.scope.get("root_path", "") + prefix or "/"
        return JSONResponse(openapi_document(server_url=server_url))

    calls = _ByMethod({"GET": _api(list_calls), "POST": _api(create_call, CreateCallRequest)})
    # The router tries routes in order; the documented endpoint, the busiest, comes first.
    routes = [
        Route(
            f"{prefix}/calls/{{call_id}}/schedule",
            _api(schedule, ScheduleRequest),
            methods=["PUT"],
            name="schedule",
        ),
        Route(f"{prefix}/calls", calls, methods=["GET", "POST"], name="calls"),
        Route(f"{prefix}/calls/{{call_id}}", _api(get_call), methods=["GET"], name="get_call"),
        Route(
            f"{prefix}/calls/{{call_id}}/cancel", _api(cancel, CancelRequest), methods=["POST"], name="cancel"
        ),
        Route(f"{prefix}/calls/{{call_id}}/events", _api(events), methods=["GET"], name="events"),
        Route(f"{prefix}/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(debug=debug, routes=routes, exception_handlers={HTTPException: _http_exception})
    app.state.scheduler = scheduler
    return app


def standalone_app(scheduler: CallScheduler, *, prefix: str = "/api", **options: Any) -> Starlette:
    """The app ``callschedule serve`` runs: :func:`create_app` with its routes under ``prefix``.

    :param options: passed to :func:`create_app` (``max_body_size``, ``debug``).
    """
    return create_app(scheduler, prefix=prefix, **options)


# -- the OpenAPI document -------------------------------------------------------------------------

_ERROR_CODES = [
    "invalid_request",
    "unauthorized",
    "call_not_found",
    "call_not_reschedulable",
    "conflict",
    "payload_too_large",
    "schedule_rejected",
    "internal_error",
    "not_found",
    "method_not_allowed",
]

_STATUSES = ["pending", "in_progress", "completed", "failed", "cancelled"]

_TIMESTAMP_S = {
    "type": "integer",
    "minimum": 0,
    "maximum": _validation.MAX_TIMESTAMP,
    "description": "Unix seconds",
}
_TIMESTAMP_MS = {"type": "integer", "description": "Unix milliseconds"}
_ANY: dict[str, Any] = {}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _success(data_schema: dict[str, Any], message: str) -> dict[str, Any]:
    return _object(
        {
            "message": {"type": "string", "example": message},
            "status": {"type": "string", "enum": ["success"]},
            "error": {"nullable": True, "enum": [None]},
            "data": data_schema,
        }
    )


_SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "message": {"type": "string", "description": "What went wrong, for a person to act on"},
            "status": {"type": "string", "enum": ["error"]},
            "error": _object(
                {
                    "code": {"type": "string", "enum": _ERROR_CODES},
                    "details": {
                        **_ANY,
                        "nullable": True,
                        "description": "Machine-readable details: the field and its problem "
                        "(invalid_request), the call's status (call_not_reschedulable), the rule "
                        "and the next allowed time (schedule_rejected), ...",
                    },
                }
            ),
            "data": {"nullable": True, "enum": [None]},
        }
    ),
    "Event": _object(
        {
            "timestamp": _TIMESTAMP_MS,
            "event": {"type": "string"},
            "data": {"type": "object", "additionalProperties": True},
        }
    ),
    "Metadata": _object(
        {
            "is_scheduled": {"type": "boolean"},
            "scheduled_timestamp": _TIMESTAMP_S,
            "execution_status": {"type": "string", "enum": _STATUSES},
        }
    ),
    "ScheduledCall": _object(
        {
            "call_id": {"type": "string"},
            "metadata": _ref("Metadata"),
            "events": {"type": "array", "items": _ref("Event")},
        }
    ),
    "CallSummary": _object(
        {
            "call_id": {"type": "string"},
            "organization_id": {"type": "string"},
            "metadata": _ref("Metadata"),
            "timezone": {"type": "string", "nullable": True},
            "payload": {"type": "object", "additionalProperties": True},
            "attempts": {"type": "integer"},
            "reschedule_count": {"type": "integer"},
            "version": {"type": "integer"},
            "created_at": _TIMESTAMP_MS,
            "updated_at": _TIMESTAMP_MS,
            "outcome": {**_ANY, "nullable": True},
        }
    ),
    "ScheduleRequest": {
        **_object({"scheduled_timestamp": _TIMESTAMP_S}),
        "example": {"scheduled_timestamp": 1748460000},
    },
    "CreateCallRequest": _object(
        {
            "scheduled_timestamp": _TIMESTAMP_S,
            "call_id": {
                "type": "string",
                "nullable": True,
                "description": "Your own id for the call (1-200 printable characters); repeating "
                "an identical create with it returns the same call",
            },
            "timezone": {
                "type": "string",
                "nullable": True,
                "description": "IANA time zone of the callee, for calling windows",
                "example": "America/New_York",
            },
            "payload": {
                "type": "object",
                "nullable": True,
                "additionalProperties": True,
                "description": "Opaque JSON object handed to the executor",
            },
        },
        required=["scheduled_timestamp"],
    )
    | {
        "example": {
            "scheduled_timestamp": 1748454000,
            "timezone": "America/New_York",
            "payload": {"to": "+15551234567"},
        }
    },
    "CancelRequest": _object({"reason": {"type": "string", "nullable": True}}, required=[]),
}
_SCHEMAS["Call"] = {
    **_SCHEMAS["CallSummary"],
    "properties": {
        **_SCHEMAS["CallSummary"]["properties"],
        "events": {"type": "array", "items": _ref("Event")},
    },
    "required": [*_SCHEMAS["CallSummary"]["required"], "events"],
}
_SCHEMAS["ScheduleUpdate"] = _object(
    {
        "operation": {"type": "string", "enum": ["schedule_update"]},
        "organization_id": {"type": "string"},
        "call_id": {"type": "string"},
        "previous_scheduled_timestamp": _TIMESTAMP_S,
        "new_scheduled_timestamp": _TIMESTAMP_S,
        "scheduled_for_human": {
            "type": "string",
            "description": "RFC 3339 UTC of the new time",
            "example": "2025-05-28T19:20:00Z",
        },
        "call": _ref("ScheduledCall"),
    }
)

_ERROR_TEXT = {
    400: "invalid_request: the body is not JSON, not an object, a field is missing, has the wrong "
    "type (a bool, a string, a fraction or null where an integer is expected) or is unknown; "
    "`error.details.field` names it",
    401: "unauthorized: X-API-KEY/X-API-SECRET missing, unknown, revoked or wrong",
    404: "call_not_found: no such call in the caller's organization",
    409: "call_not_reschedulable (the call is not pending; `details.execution_status` names its "
    "status) or conflict (the call changed under the request, e.g. a worker claimed it first)",
    413: "payload_too_large: the body is over the size limit",
    422: "schedule_rejected: a scheduling rule refuses the time; `details.rule` names it and "
    "`details.next_allowed_timestamp` gives the next allowed time where one exists",
    500: "internal_error: anything unexpected; no internals in the body",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": _ERROR_TEXT[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code in (*codes, 500)
    }


def _json_body(schema: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _ok(description: str, data_schema: dict[str, Any], message: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _success(data_schema, message)}},
    }


_CALL_ID = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "description": "The call's id",
    "schema": {"type": "string", "minLength": 1, "maxLength": _validation.MAX_ID_LENGTH},
    "example": "call_bf2a9c7d-4e5f-4318-9b2a-8d7c6e4f1a0b",
}


def _call_data() -> dict[str, Any]:
    return _object({"call": _ref("Call")})


def openapi_document(server_url: str = "/api") -> dict[str, Any]:
    """The OpenAPI 3 document of the API, with its paths relative to ``server_url``."""
    security: list[dict[str, list[str]]] = [{"ApiKey": [], "ApiSecret": []}]
    paths: dict[str, Any] = {
        "/calls": {
            "post": {
                "operationId": "createCall",
                "summary": "Schedule a new call",
                "security": security,
                "requestBody": _json_body("CreateCallRequest"),
                "responses": {
                    "201": _ok(
                        "The call, with its creation event", _call_data(), "Call scheduled successfully"
                    ),
                    **_errors(400, 401, 409, 413, 422),
                },
            },
            "get": {
                "operationId": "listCalls",
                "summary": "The organization's calls by scheduled time, a page at a time",
                "security": security,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only calls with this status; several comma-separated "
                        "(`pending,failed`) or repeated",
                        "schema": {
                            "type": "string",
                            "pattern": f"^({'|'.join(_STATUSES)})(,({'|'.join(_STATUSES)}))*$",
                            "example": "pending",
                        },
                    },
                    {
                        "name": "scheduled_from",
                        "in": "query",
                        "required": False,
                        "description": "Earliest scheduled_timestamp, inclusive",
                        "schema": _TIMESTAMP_S,
                    },
                    {
                        "name": "scheduled_to",
                        "in": "query",
                        "required": False,
                        "description": "Latest scheduled_timestamp, inclusive",
                        "schema": _TIMESTAMP_S,
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "next_cursor of the previous page",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "Calls per page (default 100)",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {
                    "200": _ok(
                        "One page of calls; pass next_cursor back for the next",
                        _object(
                            {
                                "calls": {"type": "array", "items": _ref("CallSummary")},
                                "next_cursor": {"type": "string", "nullable": True},
                            }
                        ),
                        "Calls listed successfully",
                    ),
                    **_errors(400, 401),
                },
            },
        },
        "/calls/{call_id}": {
            "get": {
                "operationId": "getCall",
                "summary": "The call with its full event log",
                "security": security,
                "parameters": [_CALL_ID],
                "responses": {
                    "200": _ok("The call", _call_data(), "Call retrieved successfully"),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/calls/{call_id}/schedule": {
            "put": {
                "operationId": "scheduleCall",
                "summary": "Move a pending call to a new time",
                "description": "The change and its event are written in one transaction: both or neither.",
                "security": security,
                "parameters": [_CALL_ID],
                "requestBody": _json_body("ScheduleRequest"),
                "responses": {
                    "200": _ok(
                        "The new time, and the event this request appended",
                        _ref("ScheduleUpdate"),
                        "Scheduled call time updated successfully",
                    ),
                    **_errors(400, 401, 404, 409, 413, 422),
                },
            }
        },
        "/calls/{call_id}/cancel": {
            "post": {
                "operationId": "cancelCall",
                "summary": "Cancel a pending call; it will never run",
                "security": security,
                "parameters": [_CALL_ID],
                "requestBody": _json_body("CancelRequest", required=False),
                "responses": {
                    "200": _ok("The cancelled call", _call_data(), "Call cancelled successfully"),
                    **_errors(400, 401, 404, 409, 413),
                },
            }
        },
        "/calls/{call_id}/events": {
            "get": {
                "operationId": "callEvents",
                "summary": "The call's full event log, oldest first",
                "security": security,
                "parameters": [_CALL_ID],
                "responses": {
                    "200": _ok(
                        "The events",
                        _object(
                            {
                                "call_id": {"type": "string"},
                                "events": {"type": "array", "items": _ref("Event")},
                            }
                        ),
                        "Call events retrieved successfully",
                    ),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "callschedule",
            "version": _version(),
            "description": "Schedule, move, cancel and inspect outbound calls. Every answer is the "
            "envelope {message, status, error, data}.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "ApiSecret": {"type": "apiKey", "in": "header", "name": "X-API-SECRET"},
            },
        },
    }


@functools.lru_cache(maxsize=1)
def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("callschedule")
    except metadata.PackageNotFoundError:
        return "0.0.0"
