"""Executors: what the worker hands each due call to, and how they answer.

An executor is any callable ``executor(call, attempt)``, plain or ``async``, that places the call.
What it does decides what the worker records:

- it **returns** a value: the call is ``completed`` and the value (JSON-able) becomes its ``outcome``;
- it **raises** an exception: the attempt failed; the call is retried under the worker's
  :class:`~callschedule.RetryPolicy` while attempts remain, then ``failed``;
- it raises or returns :class:`RetryLater`: the call waits again until the given time (the
  calling window and the attempt limit still apply);
- it raises or returns :class:`PermanentFailure`: the call is ``failed`` now, no retry;
- it returns :class:`ReportLater`: the call was placed and the dialer will report the result
  through :meth:`CallScheduler.complete`; the call stays ``in_progress`` until then.

Built-in executors, by name through the ``callschedule_executor`` hook: ``log``
(:class:`LogExecutor`) and ``webhook`` (:class:`WebhookExecutor`). Receivers of the webhook
check its signature with :func:`verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

import attrs

from callschedule._model import Call
from callschedule.exceptions import InvalidInput

logger = logging.getLogger("callschedule.executors")

if TYPE_CHECKING:
    import httpx

#: A callable that places a call: ``executor(call, attempt)``, plain or ``async``.
Executor = Callable[[Call, "Attempt"], Any | Awaitable[Any]]

#: The header carrying ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` of ``f"{t}.{body}"``.
SIGNATURE_HEADER = "X-Callschedule-Signature"
#: The header carrying the attempt's idempotency key (``organization_id:call_id:attempt``).
IDEMPOTENCY_HEADER = "Idempotency-Key"


@attrs.frozen
class Attempt:
    """One try at placing a call.

    ``number`` counts from 1 for each call; ``idempotency_key``
    (``f"{organization_id}:{call_id}:{number}"``; call ids are unique only within an
    organization) is the same for every delivery of this attempt and differs between attempts
    and between calls, so a dialer can refuse to place the same attempt twice.
    """

    call_id: str
    organization_id: str
    number: int
    started_at: int
    """Unix milliseconds at which the worker handed the call over."""

    @property
    def idempotency_key(self) -> str:
        """``f"{organization_id}:{call_id}:{number}"``."""
        return f"{self.organization_id}:{self.call_id}:{self.number}"


class RetryLater(Exception):
    """Raise or return this from an executor to try the call again later.

    Give ``at`` (Unix seconds) or ``delay`` (seconds from now); neither means the retry policy's
    backoff. The calling window and the worker's ``max_attempts`` still apply.
    """

    def __init__(
        self, at: int | None = None, *, delay: float | None = None, reason: str | None = None
    ) -> None:
        if at is not None and delay is not None:
            raise InvalidInput("at", "give either at or delay, not both")
        if at is not None and (isinstance(at, bool) or not isinstance(at, int)):
            raise InvalidInput("at", f"expected Unix seconds as an integer, got {at!r}")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0):
            raise InvalidInput("delay", f"expected a non-negative number of seconds, got {delay!r}")
        self.at = at
        self.delay = delay
        self.reason = reason
        super().__init__(reason or "retry requested")


class WebhookFailed(Exception):
    """The webhook answered a status that counts as a failed attempt (5xx, say)."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(f"HTTP {status_code} from webhook")


class PermanentFailure(Exception):
    """Raise or return this from an executor to fail the call now, without retrying it."""

    def __init__(self, reason: str = "permanent failure") -> None:
        self.reason = reason
        super().__init__(reason)


@attrs.frozen
class ReportLater:
    """Return this from an executor whose dialer reports the result later.

    The call stays ``in_progress``; report with :meth:`CallScheduler.complete`. If no report
    arrives within ``timeout`` seconds, the call is handled like one whose worker died (the
    worker's ``lease_expiry`` policy: retried with a new attempt, or failed).
    """

    timeout: float = attrs.field(default=3600.0)

    @timeout.validator
    def _check_timeout(self, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InvalidInput("timeout", f"expected a non-negative number of seconds, got {value!r}")


# -- built-in executors --------------------------------------------------------------------------


@attrs.define
class LogExecutor:
    """Prints one line per call instead of dialling: for trying the library out."""

    stream: IO[str] | None = None

    def __call__(self, call: Call, attempt: Attempt) -> dict[str, Any]:
        """Print the call and report it completed with ``{"logged": true}``."""
        print(
            f"callschedule: dialling {call.call_id} of {call.organization_id} "
            f"(attempt {attempt.number}, due {call.scheduled_timestamp}) "
            f"payload={json.dumps(call.payload, sort_keys=True)}",
            file=self.stream or sys.stdout,
            flush=True,
        )
        return {"logged": True}


def call_body(call: Call, attempt: Attempt) -> dict[str, Any]:
    """The JSON document the webhook executor POSTs: the call (wire shape) and the attempt."""
    from callschedule._converters import call_to_wire

    wire = call_to_wire(call, [])
    wire.pop("events", None)
    return {
        "call": wire,
        "attempt": {"number": attempt.number, "idempotency_key": attempt.idempotency_key},
    }


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``: ``t=<ts>,v1=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    header: str | None,
    *,
    tolerance: int = 300,
    now: int | None = None,
) -> bool:
    """Whether ``header`` (the ``X-Callschedule-Signature`` value) signs ``body`` with ``secret``.

    For receivers of the ``webhook`` executor. Pass the raw request body, exactly as received.
    Refuses signatures older or newer than ``tolerance`` seconds (replays) and compares in
    constant time.

    :param now: the current Unix time (default: the clock).
    """
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


#: Response codes after which trying again cannot help.
_PERMANENT = frozenset({400, 401, 403, 404, 405, 410, 413, 415, 422})


@attrs.define
class WebhookExecutor:
    """POSTs each call as JSON to ``url``, signed with HMAC-SHA256 over ``secret``.

    Headers: ``Content-Type: application/json``,
    ``Idempotency-Key: <organization_id>:<call_id>:<attempt>`` and
    ``X-Callschedule-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.

    The answer decides the outcome: 2xx completes the call (outcome: status code and JSON body),
    429 or 503 with ``Retry-After`` retries after that many seconds, other 4xx fail it for good,
    other answers, time-outs and connection errors count as failed attempts (retried under the
    retry policy).
    """

    url: str
    secret: str = attrs.field(repr=False)  # never in logs, reprs or tracebacks
    timeout: float = 10.0
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)  # may carry credentials
    _client: httpx.Client | None = attrs.field(default=None, alias="client")

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise InvalidInput("url", f"expected an http(s) URL, got {self.url!r}")
        if not isinstance(self.secret, str) or not self.secret:
            raise InvalidInput("secret", "the webhook executor needs a non-empty secret")

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout)
        return self._client

    def __call__(self, call: Call, attempt: Attempt) -> dict[str, Any]:
        """POST the call; see the class docstring for how the answer is read."""
        body = json.dumps(call_body(call, attempt), separators=(",", ":")).encode()
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: attempt.idempotency_key,
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        response = self._http().post(self.url, content=body, headers=headers, timeout=self.timeout)
        status = response.status_code
        if 200 <= status < 300:
            try:
                answer: Any = response.json() if response.content else None
            except ValueError:
                answer = response.text[:1000]
            return {"status_code": status, "response": answer}
        if status in (429, 503):
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                raise RetryLater(delay=int(retry_after), reason=f"HTTP {status} from webhook")
        # The answer's body goes to the worker's log, not into the call's event log: it is
        # the dialer's text, which the call's organization must not necessarily read.
        logger.warning(
            "webhook answered HTTP %s for %s: %s", status, attempt.idempotency_key, response.text[:200]
        )
        if status in _PERMANENT:
            raise PermanentFailure(f"HTTP {status} from webhook")
        raise WebhookFailed(status)

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._client is not None:
            self._client.close()
            self._client = None


__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "Attempt",
    "Executor",
    "LogExecutor",
    "PermanentFailure",
    "ReportLater",
    "RetryLater",
    "WebhookExecutor",
    "WebhookFailed",
    "call_body",
    "sign",
    "verify_signature",
]
