"""Every error row of CONTRACT.md, each checked to leave the call and its log as they were;
and organization isolation on every route."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from starlette.testclient import TestClient

from asgi_support import SEED_CALL_ID, SEED_NOW, Tenant, frozen_clock, mounted_client, snapshot, tenant
from callschedule import (
    CallingWindow,
    CallScheduler,
    ExecutionStatus,
    InvalidInput,
    ScheduleRejected,
    SchedulingPolicy,
    hookimpl,
)

ORG = "org-789"
ORIGINAL_TIME = 1748454000
SCHEDULE = f"/api/calls/{SEED_CALL_ID}/schedule"


class Interference:
    """Runs a chosen action between the request's read and its write.

    Where the app serves from the thread pool it is a plugin rule (a plugin in that hook is what
    sends requests to the pool); where it serves on the event loop it runs as the store is about
    to write, so that every error below is checked on both paths.
    """

    def __init__(self) -> None:
        self.action: Any = None

    @hookimpl
    def callschedule_check_schedule(self, call: Any, requested_timestamp: int, now: int) -> None:
        self.interfere(call, requested_timestamp)

    def interfere(self, call: Any, requested_timestamp: int) -> None:
        if self.action is not None:
            action, self.action = self.action, None
            action(call, requested_timestamp)

    def before_writes_of(self, store: Any) -> None:
        update_call, update_call_async = store.update_call, store.update_call_async

        def interfered(call: Any, *args: Any) -> Any:
            self.interfere(call, call.scheduled_timestamp)
            return update_call(call, *args)

        async def interfered_async(call: Any, *args: Any) -> Any:
            self.interfere(call, call.scheduled_timestamp)
            return await update_call_async(call, *args)

        store.update_call, store.update_call_async = interfered, interfered_async


@pytest.fixture
def interference() -> Interference:
    return Interference()


@pytest.fixture(params=["event loop", "thread pool"])
def path(request: pytest.FixtureRequest) -> str:
    """Where the app serves the requests (see ``CallScheduler.serves_event_loop``)."""
    return str(request.param)


def _open(
    url: str, interference: Interference, path: str, policy: SchedulingPolicy | None = None
) -> CallScheduler:
    if path == "thread pool":
        scheduler = CallScheduler.open(url, plugins=[interference], policy=policy)
    else:
        scheduler = CallScheduler.open(url, policy=policy)
        interference.before_writes_of(scheduler.store)
    assert scheduler.serves_event_loop == (path == "event loop")
    return scheduler


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture
def scheduler(url: str, interference: Interference, path: str) -> Iterator[CallScheduler]:
    with frozen_clock(), _open(url, interference, path) as scheduler:
        scheduler.create_call(ORG, ORIGINAL_TIME, call_id=SEED_CALL_ID)
        yield scheduler


@pytest.fixture
def org(scheduler: CallScheduler) -> Tenant:
    return tenant(scheduler, ORG)


@pytest.fixture
def client(scheduler: CallScheduler) -> Iterator[TestClient]:
    with mounted_client(scheduler, max_body_size=1024) as client:
        yield client


def _assert_error(response: Any, status_code: int, code: str) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"message", "status", "error", "data"}
    assert body["status"] == "error"
    assert body["data"] is None
    assert body["error"]["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.fixture
def unchanged(scheduler: CallScheduler) -> Iterator[None]:
    """The seed call and its log are exactly as before the test's request."""
    before = snapshot(scheduler, ORG, SEED_CALL_ID)
    yield
    assert snapshot(scheduler, ORG, SEED_CALL_ID) == before


# -- 401 unauthorized -------------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-headers"),
        pytest.param({"X-API-KEY": "KEY"}, id="no-secret"),
        pytest.param({"X-API-SECRET": "SECRET"}, id="no-key"),
        pytest.param({"X-API-KEY": "KEY", "X-API-SECRET": "wrong"}, id="wrong-secret"),
        pytest.param({"X-API-KEY": "csk_unknown", "X-API-SECRET": "SECRET"}, id="unknown-key"),
        pytest.param({"X-API-KEY": "", "X-API-SECRET": ""}, id="empty"),
    ],
)
def test_missing_or_wrong_credentials_are_401(
    org: Tenant, client: TestClient, headers: dict[str, str]
) -> None:
    headers = {k: v.replace("KEY", org.api_key).replace("SECRET", org.api_secret) for k, v in headers.items()}

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=headers)

    body = _assert_error(response, 401, "unauthorized")
    assert body["message"] == "Missing or invalid API credentials"


def test_wrong_secret_and_unknown_key_get_the_same_answer(org: Tenant, client: TestClient) -> None:
    wrong_secret = client.put(
        SCHEDULE,
        json={"scheduled_timestamp": 1748460000},
        headers={"X-API-KEY": org.api_key, "X-API-SECRET": "nope"},
    )
    unknown_key = client.put(
        SCHEDULE,
        json={"scheduled_timestamp": 1748460000},
        headers={"X-API-KEY": "csk_000", "X-API-SECRET": "nope"},
    )

    assert wrong_secret.status_code == unknown_key.status_code == 401
    assert wrong_secret.json() == unknown_key.json()


@pytest.mark.usefixtures("unchanged")
def test_revoked_key_is_401(scheduler: CallScheduler, org: Tenant, client: TestClient) -> None:
    assert scheduler.revoke_api_key(org.api_key)

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=org.headers)

    _assert_error(response, 401, "unauthorized")


@pytest.mark.usefixtures("unchanged")
def test_credentials_are_checked_before_the_body(client: TestClient) -> None:
    response = client.put(SCHEDULE, content=b"not json", headers={"X-API-KEY": "k", "X-API-SECRET": "s"})

    _assert_error(response, 401, "unauthorized")


# -- 404 call_not_found -----------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_unknown_call_is_404(org: Tenant, client: TestClient) -> None:
    response = client.put(
        "/api/calls/call_does-not-exist/schedule",
        json={"scheduled_timestamp": 1748460000},
        headers=org.headers,
    )

    body = _assert_error(response, 404, "call_not_found")
    assert body["error"]["details"] == {"call_id": "call_does-not-exist"}


@pytest.mark.usefixtures("unchanged")
def test_another_organizations_call_is_404(scheduler: CallScheduler, client: TestClient) -> None:
    other = tenant(scheduler, "org-other")

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=other.headers)

    _assert_error(response, 404, "call_not_found")


# -- 400 invalid_request ----------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b"", "$", id="empty"),
        pytest.param(b"{not json", "$", id="not-json"),
        pytest.param(b"\xff\xfe", "$", id="not-utf8"),
        pytest.param(b'{"scheduled_timestamp": NaN}', "$", id="nan"),
        pytest.param(b"[1748460000]", "$", id="array"),
        pytest.param(b"1748460000", "$", id="number"),
        pytest.param(b'"1748460000"', "$", id="string-document"),
        pytest.param(b"null", "$", id="null-document"),
        pytest.param(b"{}", "scheduled_timestamp", id="missing"),
        pytest.param(b'{"scheduled_timestamp": true}', "scheduled_timestamp", id="bool"),
        pytest.param(b'{"scheduled_timestamp": "1748460000"}', "scheduled_timestamp", id="string"),
        pytest.param(b'{"scheduled_timestamp": 1748460000.5}', "scheduled_timestamp", id="fraction"),
        pytest.param(b'{"scheduled_timestamp": 1748460000.0}', "scheduled_timestamp", id="float"),
        pytest.param(b'{"scheduled_timestamp": 1e400}', "scheduled_timestamp", id="huge-float"),
        pytest.param(b'{"scheduled_timestamp": null}', "scheduled_timestamp", id="null"),
        pytest.param(b'{"scheduled_timestamp": [1]}', "scheduled_timestamp", id="list"),
        pytest.param(b'{"scheduled_timestamp": 253402300800}', "scheduled_timestamp", id="year-10000"),
        pytest.param(b'{"scheduled_timestamp": -1}', "scheduled_timestamp", id="negative"),
        pytest.param(b'{"scheduled_timestamp": 1748460000, "extra": 1}', "extra", id="unknown-field"),
        pytest.param(b'{"scheduled_timestamp": ' + b"9" * 900 + b"}", "$", id="900-digits"),
    ],
)
def test_bad_body_is_400_naming_the_field(org: Tenant, client: TestClient, body: bytes, field: str) -> None:
    response = client.put(SCHEDULE, content=body, headers={"Content-Type": "application/json", **org.headers})

    payload = _assert_error(response, 400, "invalid_request")
    assert payload["error"]["details"]["field"] == (field if field == "$" else f"$.{field}")
    assert field in payload["message"]
    if field != "$":
        assert payload["message"].count(field) == 1, payload["message"]  # said once, plainly
    assert "sys." not in payload["message"]  # no advice meant for the server's own code


# -- 413 payload_too_large --------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_body_over_the_limit_is_413(org: Tenant, client: TestClient) -> None:
    body = b'{"scheduled_timestamp": 1748460000, "padding": "' + b"x" * 2000 + b'"}'

    response = client.put(SCHEDULE, content=body, headers={"Content-Type": "application/json", **org.headers})

    payload = _assert_error(response, 413, "payload_too_large")
    assert payload["error"]["details"] == {"max_body_size": 1024}


@pytest.mark.usefixtures("unchanged")
def test_streamed_body_over_the_limit_without_length_is_413(org: Tenant, client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"scheduled_timestamp": 1748460000, "padding": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}'

    response = client.put(SCHEDULE, content=chunks(), headers=org.headers)

    _assert_error(response, 413, "payload_too_large")


# -- 409 call_not_reschedulable ---------------------------------------------------------------------


def _force_status(scheduler: CallScheduler, status: ExecutionStatus) -> None:
    call = scheduler.get_call(ORG, SEED_CALL_ID)
    if status is ExecutionStatus.CANCELLED:
        scheduler.cancel(ORG, SEED_CALL_ID)
        return
    claimed = scheduler.store.claim_due(
        now=call.scheduled_timestamp,
        now_ms=SEED_NOW * 1000,
        limit=10,
        lease_owner="test-worker",
        lease_expires_at=SEED_NOW * 1000 + 60_000,
    )
    assert [c.call_id for c in claimed] == [SEED_CALL_ID]
    if status is not ExecutionStatus.IN_PROGRESS:
        current = claimed[0]
        scheduler.commit_change(
            attrs.evolve(current, execution_status=status, version=current.version + 1),
            current.version,
            [],
        )


@pytest.mark.parametrize(
    "status",
    [
        ExecutionStatus.IN_PROGRESS,
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    ],
)
def test_call_that_is_not_pending_is_409_naming_its_status(
    scheduler: CallScheduler, org: Tenant, client: TestClient, status: ExecutionStatus
) -> None:
    _force_status(scheduler, status)
    before = snapshot(scheduler, ORG, SEED_CALL_ID)

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=org.headers)

    body = _assert_error(response, 409, "call_not_reschedulable")
    assert body["error"]["details"]["execution_status"] == status.value
    assert status.value in body["message"]
    assert snapshot(scheduler, ORG, SEED_CALL_ID) == before


def test_cancel_of_a_cancelled_call_is_409(scheduler: CallScheduler, org: Tenant, client: TestClient) -> None:
    _force_status(scheduler, ExecutionStatus.CANCELLED)
    before = snapshot(scheduler, ORG, SEED_CALL_ID)

    response = client.post(f"/api/calls/{SEED_CALL_ID}/cancel", headers=org.headers)

    _assert_error(response, 409, "call_not_reschedulable")
    assert snapshot(scheduler, ORG, SEED_CALL_ID) == before


# -- 409 conflict -----------------------------------------------------------------------------------


def test_call_claimed_by_a_worker_during_the_request_is_409_conflict(
    scheduler: CallScheduler, org: Tenant, client: TestClient, interference: Interference
) -> None:
    after_claim: list[Any] = []

    def worker_claims_it(call: Any, requested: int) -> None:
        _force_status(scheduler, ExecutionStatus.IN_PROGRESS)
        after_claim.append(snapshot(scheduler, ORG, SEED_CALL_ID))

    interference.action = worker_claims_it

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=org.headers)

    body = _assert_error(response, 409, "conflict")
    assert body["error"]["details"]["call_id"] == SEED_CALL_ID
    # The call is as the worker left it: the request wrote neither its time nor its event.
    assert snapshot(scheduler, ORG, SEED_CALL_ID) == after_claim[0]
    call, log = after_claim[0]
    assert call.scheduled_timestamp == ORIGINAL_TIME
    assert not any(e.event == "Scheduled call time updated via dedicated endpoint" for e in log)


# -- 422 schedule_rejected --------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_time_in_the_past_is_422_with_the_next_allowed_time(org: Tenant, client: TestClient) -> None:
    response = client.put(SCHEDULE, json={"scheduled_timestamp": SEED_NOW - 1}, headers=org.headers)

    body = _assert_error(response, 422, "schedule_rejected")
    assert body["error"]["details"] == {"rule": "not_in_past", "next_allowed_timestamp": SEED_NOW}


@pytest.mark.usefixtures("unchanged")
def test_time_beyond_the_horizon_is_422(org: Tenant, client: TestClient) -> None:
    response = client.put(
        SCHEDULE, json={"scheduled_timestamp": SEED_NOW + 10 * 365 * 86400}, headers=org.headers
    )

    body = _assert_error(response, 422, "schedule_rejected")
    assert body["error"]["details"]["rule"] == "max_horizon"


def test_time_outside_the_calling_window_is_422_with_the_next_opening(url: str, path: str) -> None:
    window = CallingWindow(start=dt.time(8), end=dt.time(21), default_timezone="America/New_York")
    with (
        frozen_clock(),
        _open(url, Interference(), path, SchedulingPolicy(calling_window=window)) as scheduler,
    ):
        scheduler.create_call(ORG, ORIGINAL_TIME, call_id=SEED_CALL_ID, timezone="America/New_York")
        org = tenant(scheduler, ORG)
        before = snapshot(scheduler, ORG, SEED_CALL_ID)
        # 2025-05-29 03:00 in New York (07:00 UTC); the window opens at 08:00 local (12:00 UTC).
        night = int(dt.datetime(2025, 5, 29, 7, tzinfo=dt.timezone.utc).timestamp())
        with mounted_client(scheduler) as client:
            response = client.put(SCHEDULE, json={"scheduled_timestamp": night}, headers=org.headers)

        body = _assert_error(response, 422, "schedule_rejected")
        assert body["error"]["details"] == {
            "rule": "calling_window",
            "next_allowed_timestamp": int(dt.datetime(2025, 5, 29, 12, tzinfo=dt.timezone.utc).timestamp()),
        }
        assert snapshot(scheduler, ORG, SEED_CALL_ID) == before


def test_too_many_reschedules_is_422(url: str, path: str) -> None:
    with frozen_clock(), _open(url, Interference(), path, SchedulingPolicy(max_reschedules=1)) as scheduler:
        scheduler.create_call(ORG, ORIGINAL_TIME, call_id=SEED_CALL_ID)
        org = tenant(scheduler, ORG)
        with mounted_client(scheduler) as client:
            first = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=org.headers)
            before = snapshot(scheduler, ORG, SEED_CALL_ID)
            second = client.put(SCHEDULE, json={"scheduled_timestamp": 1748470000}, headers=org.headers)

        assert first.status_code == 200
        body = _assert_error(second, 422, "schedule_rejected")
        assert body["error"]["details"]["rule"] == "max_reschedules"
        assert snapshot(scheduler, ORG, SEED_CALL_ID) == before


class _TooSoon(InvalidInput):
    """A plugin's own refusal of a body field's value, with its own code and details."""

    code = "too_soon"

    def details(self) -> Any:
        return {**super().details(), "minimum_notice_s": 3600}


@pytest.mark.usefixtures("unchanged")
def test_a_plugins_invalid_input_on_a_body_field_keeps_its_code_and_details(
    org: Tenant, client: TestClient, interference: Interference
) -> None:
    def too_soon(call: Any, requested: int) -> None:
        raise _TooSoon("scheduled_timestamp", "at least an hour's notice")

    interference.action = too_soon

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=org.headers)

    body = _assert_error(response, 400, "too_soon")
    assert body["message"] == "$.scheduled_timestamp: at least an hour's notice"
    assert body["error"]["details"] == {
        "field": "$.scheduled_timestamp",
        "problem": "at least an hour's notice",
        "minimum_notice_s": 3600,
    }


@pytest.mark.usefixtures("unchanged")
def test_a_plugins_rule_is_422_naming_it(org: Tenant, client: TestClient, interference: Interference) -> None:
    def quiet_hours(call: Any, requested: int) -> None:
        raise ScheduleRejected(
            "quiet_hours", "No calls on public holidays", next_allowed_timestamp=1748500000
        )

    interference.action = quiet_hours

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=org.headers)

    body = _assert_error(response, 422, "schedule_rejected")
    assert body["message"] == "No calls on public holidays"
    assert body["error"]["details"] == {"rule": "quiet_hours", "next_allowed_timestamp": 1748500000}


# -- 500 internal_error -----------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_unexpected_error_is_500_without_internals(
    org: Tenant, client: TestClient, interference: Interference, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_plugin(call: Any, requested: int) -> None:
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    interference.action = broken_plugin

    response = client.put(SCHEDULE, json={"scheduled_timestamp": 1748460000}, headers=org.headers)

    body = _assert_error(response, 500, "internal_error")
    assert body["error"]["details"] is None
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert "hunter2" in caplog.text  # logged on the server, for its operator


# -- isolation --------------------------------------------------------------------------------------


def test_another_organization_gets_404_on_every_route_and_changes_nothing(
    scheduler: CallScheduler, client: TestClient
) -> None:
    other = tenant(scheduler, "org-b")
    before = snapshot(scheduler, ORG, SEED_CALL_ID)
    base = f"/api/calls/{SEED_CALL_ID}"

    answers = {
        "get": client.get(base, headers=other.headers),
        "schedule": client.put(
            f"{base}/schedule", json={"scheduled_timestamp": 1748460000}, headers=other.headers
        ),
        "cancel": client.post(f"{base}/cancel", headers=other.headers),
        "events": client.get(f"{base}/events", headers=other.headers),
    }
    listing = client.get("/api/calls", headers=other.headers)

    for route, response in answers.items():
        assert response.status_code == 404, route
        assert response.json()["error"]["code"] == "call_not_found", route
    assert listing.status_code == 200
    assert listing.json()["data"]["calls"] == []
    assert snapshot(scheduler, ORG, SEED_CALL_ID) == before


def test_same_call_id_in_another_organization_is_a_separate_call(
    scheduler: CallScheduler, org: Tenant, client: TestClient
) -> None:
    other = tenant(scheduler, "org-b")
    before = snapshot(scheduler, ORG, SEED_CALL_ID)

    created = client.post(
        "/api/calls",
        json={"scheduled_timestamp": SEED_NOW + 999, "call_id": SEED_CALL_ID},
        headers=other.headers,
    )
    moved = client.put(SCHEDULE, json={"scheduled_timestamp": SEED_NOW + 5000}, headers=other.headers)

    assert created.status_code == 201
    assert created.json()["data"]["call"]["organization_id"] == "org-b"
    assert moved.status_code == 200
    assert snapshot(scheduler, ORG, SEED_CALL_ID) == before
    mine = client.get(f"/api/calls/{SEED_CALL_ID}", headers=org.headers).json()["data"]["call"]
    assert mine["metadata"]["scheduled_timestamp"] == ORIGINAL_TIME


# -- the other routes' input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scheduled_timestamp": SEED_NOW + 60, "timezone": "Mars/Olympus"}, "timezone"),
        ({"scheduled_timestamp": SEED_NOW + 60, "timezone": "America"}, "timezone"),
        ({"scheduled_timestamp": SEED_NOW + 60, "timezone": "Europe/" + "x" * 300}, "timezone"),
        ({"scheduled_timestamp": SEED_NOW + 60, "payload": [1]}, "payload"),
        ({"scheduled_timestamp": SEED_NOW + 60, "call_id": 7}, "call_id"),
        ({"scheduled_timestamp": SEED_NOW + 60, "call_id": " padded "}, "call_id"),
        ({"scheduled_timestamp": SEED_NOW + 60, "priority": 1}, "priority"),
        ({"call_id": "x"}, "scheduled_timestamp"),
    ],
)
def test_bad_create_is_400_and_creates_nothing(
    scheduler: CallScheduler, org: Tenant, client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/calls", json=body, headers=org.headers)

    payload = _assert_error(response, 400, "invalid_request")
    assert payload["error"]["details"]["field"] == f"$.{field}"  # a field of the body, however refused
    assert [c.call_id for c in scheduler.list_calls(ORG).calls] == [SEED_CALL_ID]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=ringing", "status"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("scheduled_from=-5", "scheduled_from"),
        ("cursor=garbage", "cursor"),
        ("cursor=WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMCwgIngiXQ", "cursor"),  # [10**25, "x"]
        ("colour=blue", "colour"),
    ],
)
def test_bad_list_query_is_400_naming_the_parameter(
    org: Tenant, client: TestClient, query: str, field: str
) -> None:
    response = client.get(f"/api/calls?{query}", headers=org.headers)

    payload = _assert_error(response, 400, "invalid_request")
    assert payload["error"]["details"]["field"] == field


@pytest.mark.usefixtures("unchanged")
def test_bad_cancel_body_is_400(org: Tenant, client: TestClient) -> None:
    response = client.post(f"/api/calls/{SEED_CALL_ID}/cancel", json={"reason": 5}, headers=org.headers)

    payload = _assert_error(response, 400, "invalid_request")
    assert payload["error"]["details"]["field"] == "$.reason"
    assert payload["message"] == "$.reason: expected a string, got an integer"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"to": "\\ud800"}', id="lone-surrogate"),
        pytest.param(b'{"to": ' + b"[" * 200 + b"]" * 200 + b"}", id="nested-200-deep"),
        pytest.param(b'{"gain": 1e400}', id="number-beyond-a-float"),
    ],
)
def test_a_payload_without_a_faithful_json_form_is_400_and_creates_nothing(
    scheduler: CallScheduler, org: Tenant, client: TestClient, payload: bytes
) -> None:
    body = b'{"scheduled_timestamp": %d, "call_id": "new", "payload": %s}' % (SEED_NOW + 60, payload)
    response = client.post(
        "/api/calls", content=body, headers={**org.headers, "Content-Type": "application/json"}
    )

    answer = _assert_error(response, 400, "invalid_request")
    assert answer["error"]["details"]["field"] == "$.payload"
    assert answer["message"].startswith("$.payload: ")
    assert [c.call_id for c in scheduler.list_calls(ORG).calls] == [SEED_CALL_ID]


def test_a_payload_number_beyond_a_float_is_named_as_such(org: Tenant, client: TestClient) -> None:
    body = b'{"scheduled_timestamp": %d, "payload": {"gain": 1e400}}' % (SEED_NOW + 60)
    response = client.post(
        "/api/calls", content=body, headers={**org.headers, "Content-Type": "application/json"}
    )

    answer = _assert_error(response, 400, "invalid_request")
    assert "infinite" in answer["error"]["details"]["problem"]
    assert "serialisable" not in answer["message"]


@pytest.mark.usefixtures("unchanged")
def test_a_cancel_reason_that_is_not_unicode_is_400_and_cancels_nothing(
    org: Tenant, client: TestClient
) -> None:
    response = client.post(
        f"/api/calls/{SEED_CALL_ID}/cancel",
        content=b'{"reason": "\\udcff"}',
        headers={**org.headers, "Content-Type": "application/json"},
    )

    answer = _assert_error(response, 400, "invalid_request")
    assert answer["error"]["details"]["field"] == "$.reason"


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param({"note": "\ud800"}, id="lone-surrogate"),
        pytest.param([], id="nested-400-deep"),
    ],
)
def test_a_call_whose_dialer_reported_odd_json_can_still_be_read(
    scheduler: CallScheduler, org: Tenant, client: TestClient, outcome: Any
) -> None:
    # An executor's outcome is stored as it came: every read route must still answer it.
    deep: Any = outcome
    if isinstance(outcome, list):
        for _ in range(400):
            deep = [deep]
    scheduler.store.claim_due(
        now=ORIGINAL_TIME, now_ms=ORIGINAL_TIME * 1000, limit=1, lease_owner="w", lease_expires_at=0
    )
    scheduler.complete(ORG, SEED_CALL_ID, deep)

    for path in (f"/api/calls/{SEED_CALL_ID}", f"/api/calls/{SEED_CALL_ID}/events", "/api/calls"):
        response = client.get(path, headers=org.headers)
        assert response.status_code == 200, (path, response.text[:200])
    read = client.get(f"/api/calls/{SEED_CALL_ID}", headers=org.headers).json()["data"]["call"]
    assert read["outcome"] == deep


def test_credentials_are_checked_before_the_query(client: TestClient) -> None:
    response = client.get("/api/calls?colour=blue", headers={"X-API-KEY": "k", "X-API-SECRET": "s"})

    _assert_error(response, 401, "unauthorized")
