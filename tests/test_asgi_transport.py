"""The app at the ASGI level, as a server drives it: bodies in pieces, clients that leave, HEAD.

A test client sends a body in one message; a server sends what arrives, as it arrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_support import SEED_CALL_ID, SEED_NOW, Tenant, frozen_clock, snapshot, tenant
from callschedule import CallScheduler
from callschedule.asgi import create_app

Message = dict[str, Any]


@pytest.fixture
def seeded() -> Iterator[tuple[CallScheduler, Tenant]]:
    with frozen_clock(), CallScheduler.open("memory://", load_entry_points=False) as scheduler:
        org = tenant(scheduler, "org-789")
        scheduler.create_call("org-789", SEED_NOW + 600, call_id=SEED_CALL_ID)
        yield scheduler, org


def serve(
    scheduler: CallScheduler,
    method: str,
    path: str,
    org: Tenant,
    messages: list[Message],
    headers: tuple[tuple[bytes, bytes], ...] = (),
    **options: Any,
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Serve one request whose body arrives as ``messages``; the status, headers and body sent."""
    app = create_app(scheduler, prefix="/api", **options)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"x-api-key", org.api_key.encode()),
            (b"x-api-secret", org.api_secret.encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    pending = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, *body = sent
    assert start["type"] == "http.response.start"
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in body)


def pieces(body: bytes, size: int) -> list[Message]:
    """``body`` as a server passes it on: ``http.request`` messages of ``size`` bytes."""
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]


SCHEDULE = f"/api/calls/{SEED_CALL_ID}/schedule"
BODY = json.dumps({"scheduled_timestamp": SEED_NOW + 7200}).encode()


def test_a_body_in_pieces_is_read_whole(seeded: tuple[CallScheduler, Tenant]) -> None:
    scheduler, org = seeded
    status, headers, body = serve(scheduler, "PUT", SCHEDULE, org, pieces(BODY, 5))
    assert status == 200, body
    assert json.loads(body)["data"]["new_scheduled_timestamp"] == SEED_NOW + 7200
    assert scheduler.get_call("org-789", SEED_CALL_ID).scheduled_timestamp == SEED_NOW + 7200
    assert headers == {b"content-length": str(len(body)).encode(), b"content-type": b"application/json"}


def test_a_client_that_leaves_before_its_body_ends_changes_nothing(
    seeded: tuple[CallScheduler, Tenant],
) -> None:
    scheduler, org = seeded
    before = snapshot(scheduler, "org-789", SEED_CALL_ID)
    status, _, body = serve(scheduler, "PUT", SCHEDULE, org, pieces(BODY, 5)[:-1])  # then disconnect
    assert (status, body) == (400, b"")
    assert snapshot(scheduler, "org-789", SEED_CALL_ID) == before


def test_a_body_that_grows_past_the_limit_undeclared_gets_413(seeded: tuple[CallScheduler, Tenant]) -> None:
    scheduler, org = seeded
    before = snapshot(scheduler, "org-789", SEED_CALL_ID)
    padded = BODY[:-1] + b" " * 600 + b"}"  # valid JSON, but larger than the app takes
    status, _, body = serve(scheduler, "PUT", SCHEDULE, org, pieces(padded, 100), max_body_size=512)
    assert status == 413
    assert json.loads(body)["error"] == {"code": "payload_too_large", "details": {"max_body_size": 512}}
    assert snapshot(scheduler, "org-789", SEED_CALL_ID) == before


def test_a_declared_length_past_the_limit_is_refused_before_the_body_is_read(
    seeded: tuple[CallScheduler, Tenant],
) -> None:
    scheduler, org = seeded
    status, _, body = serve(
        scheduler, "PUT", SCHEDULE, org, [], headers=((b"content-length", b"100000"),), max_body_size=512
    )
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_head_of_the_listing_is_answered_as_get(seeded: tuple[CallScheduler, Tenant]) -> None:
    scheduler, org = seeded
    request = [{"type": "http.request", "body": b"", "more_body": False}]
    head = serve(scheduler, "HEAD", "/api/calls", org, request)
    get = serve(scheduler, "GET", "/api/calls", org, request)
    assert head[0] == get[0] == 200
    assert head[1] == get[1]  # the server, not the app, drops the body of a HEAD answer
    assert json.loads(get[2])["data"]["calls"][0]["call_id"] == SEED_CALL_ID
