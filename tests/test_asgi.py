"""The HTTP adapter: the seed page replayed, the other routes, mounting in host apps."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pydantic.v1  # noqa: F401 - FastAPI imports it lazily; under a frozen clock that fails
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from asgi_support import SEED_CALL_ID, SEED_NOW, Tenant, frozen_clock, mounted_client, tenant
from callschedule import CallScheduler, ExecutionStatus, InvalidInput, hookimpl
from callschedule.asgi import create_app, standalone_app

# The seed page's success body, verbatim, but for scheduled_for_human (see CONTRACT.md).
SEED_BODY = """
{
"message": "Scheduled call time updated successfully",
"status": "success",
"error": null,
"data": {
"operation": "schedule_update",
"organization_id": "org-789",
"call_id": "call_bf2a9c7d-4e5f-4318-9b2a-8d7c6e4f1a0b",
"previous_scheduled_timestamp": 1748454000,
"new_scheduled_timestamp": 1748460000,
"scheduled_for_human": "2025-01-28T20:26:40Z",
"call": {
"call_id": "call_bf2a9c7d-4e5f-4318-9b2a-8d7c6e4f1a0b",
"metadata": {
"is_scheduled": true,
"scheduled_timestamp": 1748460000,
"execution_status": "pending"
},
"events": [
{
"timestamp": 1748452000000,
"event": "Scheduled call time updated via dedicated endpoint",
"data": {
"previous_scheduled_timestamp": 1748454000,
"new_scheduled_timestamp": 1748460000,
"updated_at": 1748452000000,
"endpoint_used": "/schedule"
}
}
]
}
}
}
"""

# The page's request body, byte for byte.
SEED_REQUEST = b'\n{\n"scheduled_timestamp": 1748460000\n}\n'


class AuditListener:
    """A plugin that listens to every event, as a host's audit hook would; with it the app
    serves requests from the thread pool (a listener may block), without it from the event loop."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    @hookimpl
    def callschedule_event(self, call: Any, event: Any) -> None:
        self.threads.add(threading.get_ident())


@pytest.fixture(params=["memory://", "sqlite", "sqlite, thread pool"])
def scheduler(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[CallScheduler]:
    url = "memory://" if request.param == "memory://" else f"sqlite:///{tmp_path / 'calls.db'}"
    plugins = [AuditListener()] if "thread pool" in request.param else []
    with frozen_clock(), CallScheduler.open(url, plugins=plugins) as scheduler:
        assert scheduler.serves_event_loop == (not plugins)
        yield scheduler


@pytest.fixture
def org(scheduler: CallScheduler) -> Tenant:
    return tenant(scheduler, "org-789")


@pytest.fixture
def client(scheduler: CallScheduler) -> Iterator[TestClient]:
    with mounted_client(scheduler) as client:
        yield client


def test_seed_page_request_returns_the_seed_page_body(
    scheduler: CallScheduler, org: Tenant, client: TestClient
) -> None:
    scheduler.create_call("org-789", 1748454000, call_id=SEED_CALL_ID)

    response = client.put(
        f"/api/calls/{SEED_CALL_ID}/schedule",
        content=SEED_REQUEST,
        headers={"Content-Type": "application/json", **org.headers},
    )

    expected = json.loads(SEED_BODY)
    expected["data"]["scheduled_for_human"] = "2025-05-28T19:20:00Z"
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected
    assert response.json()["data"]["call"]["events"][0]["timestamp"] == SEED_NOW * 1000


def test_seed_reschedule_is_in_the_log_and_the_store(
    scheduler: CallScheduler, org: Tenant, client: TestClient
) -> None:
    scheduler.create_call("org-789", 1748454000, call_id=SEED_CALL_ID)

    client.put(
        f"/api/calls/{SEED_CALL_ID}/schedule",
        json={"scheduled_timestamp": 1748460000},
        headers=org.headers,
    )

    call = scheduler.get_call("org-789", SEED_CALL_ID)
    assert call.scheduled_timestamp == 1748460000
    log = client.get(f"/api/calls/{SEED_CALL_ID}/events", headers=org.headers).json()["data"]
    assert [e["event"] for e in log["events"]] == [
        "Call scheduled via library",
        "Scheduled call time updated via dedicated endpoint",
    ]
    assert log["events"][-1]["data"] == {
        "previous_scheduled_timestamp": 1748454000,
        "new_scheduled_timestamp": 1748460000,
        "updated_at": 1748452000000,
        "endpoint_used": "/schedule",
    }


def test_create_then_get_a_call(org: Tenant, client: TestClient) -> None:
    created = client.post(
        "/api/calls",
        json={
            "scheduled_timestamp": SEED_NOW + 3600,
            "timezone": "America/New_York",
            "payload": {"to": "+15551234567"},
        },
        headers=org.headers,
    )

    assert created.status_code == 201
    body = created.json()
    assert (body["status"], body["error"]) == ("success", None)
    call = body["data"]["call"]
    assert call["call_id"].startswith("call_")
    assert call["metadata"] == {
        "is_scheduled": True,
        "scheduled_timestamp": SEED_NOW + 3600,
        "execution_status": "pending",
    }
    assert call["payload"] == {"to": "+15551234567"}
    assert call["organization_id"] == "org-789"
    assert [e["event"] for e in call["events"]] == ["Call scheduled via api"]

    fetched = client.get(f"/api/calls/{call['call_id']}", headers=org.headers)
    assert fetched.status_code == 200
    assert fetched.json()["data"]["call"] == call


def test_create_with_a_client_chosen_id_is_idempotent(org: Tenant, client: TestClient) -> None:
    body = {"scheduled_timestamp": SEED_NOW + 60, "call_id": "crm-42", "payload": {"to": "+1555"}}

    first = client.post("/api/calls", json=body, headers=org.headers)
    again = client.post("/api/calls", json=body, headers=org.headers)
    different = client.post("/api/calls", json={**body, "payload": {"to": "+1666"}}, headers=org.headers)

    assert first.json()["data"] == again.json()["data"]
    assert len(again.json()["data"]["call"]["events"]) == 1
    assert different.status_code == 409
    assert different.json()["error"]["code"] == "conflict"


def test_cancel_a_pending_call(scheduler: CallScheduler, org: Tenant, client: TestClient) -> None:
    call = scheduler.create_call("org-789", SEED_NOW + 60)

    response = client.post(
        f"/api/calls/{call.call_id}/cancel", json={"reason": "customer asked"}, headers=org.headers
    )

    assert response.status_code == 200
    wire = response.json()["data"]["call"]
    assert wire["metadata"] == {
        "is_scheduled": False,
        "scheduled_timestamp": SEED_NOW + 60,
        "execution_status": "cancelled",
    }
    assert wire["events"][-1]["data"]["reason"] == "customer asked"
    assert scheduler.get_call("org-789", call.call_id).execution_status is ExecutionStatus.CANCELLED


def test_cancel_without_a_body(scheduler: CallScheduler, org: Tenant, client: TestClient) -> None:
    call = scheduler.create_call("org-789", SEED_NOW + 60)

    response = client.post(f"/api/calls/{call.call_id}/cancel", headers=org.headers)

    assert response.status_code == 200
    assert response.json()["data"]["call"]["metadata"]["execution_status"] == "cancelled"


def test_list_filters_by_status_and_time_and_pages_with_a_cursor(
    scheduler: CallScheduler, org: Tenant, client: TestClient
) -> None:
    ids = [scheduler.create_call("org-789", SEED_NOW + 100 * i).call_id for i in range(1, 6)]
    scheduler.cancel("org-789", ids[0])

    first = client.get("/api/calls", params={"status": "pending", "limit": 2}, headers=org.headers).json()[
        "data"
    ]
    second = client.get(
        "/api/calls",
        params={"status": "pending", "limit": 2, "cursor": first["next_cursor"]},
        headers=org.headers,
    ).json()["data"]
    window = client.get(
        "/api/calls",
        params={"scheduled_from": SEED_NOW + 200, "scheduled_to": SEED_NOW + 300},
        headers=org.headers,
    ).json()["data"]
    cancelled = client.get("/api/calls?status=cancelled,failed", headers=org.headers).json()["data"]

    assert [c["call_id"] for c in first["calls"]] == ids[1:3]
    assert [c["call_id"] for c in second["calls"]] == ids[3:5]
    assert second["next_cursor"] is None
    assert [c["call_id"] for c in window["calls"]] == ids[1:3]
    assert [c["call_id"] for c in cancelled["calls"]] == ids[:1]
    assert "events" not in first["calls"][0]


def test_events_are_the_whole_log_oldest_first(
    scheduler: CallScheduler, org: Tenant, client: TestClient
) -> None:
    call = scheduler.create_call("org-789", SEED_NOW + 60)
    scheduler.reschedule("org-789", call.call_id, SEED_NOW + 120)
    scheduler.cancel("org-789", call.call_id)

    response = client.get(f"/api/calls/{call.call_id}/events", headers=org.headers)

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["call_id"] == call.call_id
    assert [e["event"] for e in data["events"]] == [
        "Call scheduled via library",
        "Scheduled call time updated via library",
        "Call cancelled via library",
    ]
    assert all(set(e) == {"timestamp", "event", "data"} for e in data["events"])


def test_unknown_route_and_wrong_method_answer_in_the_envelope(org: Tenant, client: TestClient) -> None:
    missing = client.get("/api/nothing-here", headers=org.headers)
    wrong_method = client.delete("/api/calls/abc/schedule", headers=org.headers)

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.json()["status"] == "error"


def test_openapi_document_is_served_under_the_mount(client: TestClient) -> None:
    document = client.get("/api/openapi.json").json()

    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "/api"}]
    assert set(document["paths"]) == {
        "/calls",
        "/calls/{call_id}",
        "/calls/{call_id}/schedule",
        "/calls/{call_id}/cancel",
        "/calls/{call_id}/events",
        "/openapi.json",
    }
    schedule = document["paths"]["/calls/{call_id}/schedule"]["put"]
    assert set(schedule["responses"]) == {"200", "400", "401", "404", "409", "413", "422", "500"}


# -- mounting ---------------------------------------------------------------------------------------


def _drive(client: TestClient, prefix: str, org: Tenant) -> None:
    created = client.post(f"{prefix}/calls", json={"scheduled_timestamp": SEED_NOW + 60}, headers=org.headers)
    assert created.status_code == 201
    call_id = created.json()["data"]["call"]["call_id"]
    moved = client.put(
        f"{prefix}/calls/{call_id}/schedule",
        json={"scheduled_timestamp": SEED_NOW + 600},
        headers=org.headers,
    )
    assert moved.status_code == 200
    assert moved.json()["data"]["new_scheduled_timestamp"] == SEED_NOW + 600
    document = client.get(f"{prefix}/openapi.json").json()
    assert document["servers"] == [{"url": prefix}]


def test_mounted_under_a_prefix_in_a_host_starlette_app(scheduler: CallScheduler, org: Tenant) -> None:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host home")

    host = Starlette(routes=[Route("/", home), Mount("/v2/scheduling", create_app(scheduler))])

    with TestClient(host) as client:
        assert client.get("/").text == "host home"
        _drive(client, "/v2/scheduling", org)


def test_mounted_under_a_prefix_in_a_fastapi_app(scheduler: CallScheduler, org: Tenant) -> None:
    host = FastAPI()

    @host.get("/health")
    def health() -> dict[str, str]:
        return {"ok": "yes"}

    host.mount("/scheduler", create_app(scheduler))

    with TestClient(host) as client:
        assert client.get("/health").json() == {"ok": "yes"}
        _drive(client, "/scheduler", org)
        # FastAPI's own document is untouched; ours is under the mount.
        assert "/health" in client.get("/openapi.json").json()["paths"]


def test_routes_under_a_prefix_of_the_app_itself(scheduler: CallScheduler, org: Tenant) -> None:
    with TestClient(create_app(scheduler, prefix="/v3/scheduling")) as client:
        _drive(client, "/v3/scheduling", org)
        assert client.get("/calls", headers=org.headers).json()["error"]["code"] == "not_found"
    with TestClient(standalone_app(scheduler)) as client:
        _drive(client, "/api", org)


@pytest.mark.parametrize("prefix", ["api", "/api/", "api/"])
def test_a_prefix_must_be_a_path(scheduler: CallScheduler, prefix: str) -> None:
    with pytest.raises(InvalidInput, match="prefix"):
        create_app(scheduler, prefix=prefix)


def test_a_listener_that_may_block_is_called_off_the_event_loop(tmp_path: Any) -> None:
    listener = AuditListener()
    loop_threads: set[int] = set()

    async def home(request: Any) -> PlainTextResponse:
        loop_threads.add(threading.get_ident())
        return PlainTextResponse("host home")

    with (
        frozen_clock(),
        CallScheduler.open(f"sqlite:///{tmp_path / 'calls.db'}", plugins=[listener]) as scheduler,
    ):
        org = tenant(scheduler, "org-789")
        host = Starlette(routes=[Route("/", home), Mount("/api", create_app(scheduler))])
        with TestClient(host) as client:
            client.get("/")
            _drive(client, "/api", org)
    assert listener.threads and loop_threads and not listener.threads & loop_threads


@pytest.mark.parametrize("plugins", [[], [AuditListener()]], ids=["event loop", "thread pool"])
def test_a_closed_store_is_a_500_on_both_paths(tmp_path: Any, plugins: list[object]) -> None:
    with (
        frozen_clock(),
        CallScheduler.open(f"sqlite:///{tmp_path / 'calls.db'}", plugins=plugins) as scheduler,
    ):
        org = tenant(scheduler, "org-789")
        call = scheduler.create_call("org-789", SEED_NOW + 600)
        with mounted_client(scheduler, raise_server_exceptions=False) as client:
            scheduler.store.close()
            moved = client.put(
                f"/api/calls/{call.call_id}/schedule",
                json={"scheduled_timestamp": SEED_NOW + 900},
                headers=org.headers,
            )
            created = client.post(
                "/api/calls", json={"scheduled_timestamp": SEED_NOW + 900}, headers=org.headers
            )
    for response in (moved, created):
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
