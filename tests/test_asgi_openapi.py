"""The OpenAPI document against the app, by schemathesis: no 500 and no answer that breaks it."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from asgi_support import SEED_CALL_ID, frozen_clock
from callschedule import CallScheduler
from callschedule.asgi import standalone_app

scheduler = CallScheduler.open("memory://", load_entry_points=False)
API_KEY, API_SECRET = scheduler.create_api_key("org-789")
with frozen_clock():
    # The document's examples name the seed call, so the examples phase also meets successes.
    scheduler.create_call("org-789", 1748454000, call_id=SEED_CALL_ID)
HEADERS = {"X-API-KEY": API_KEY, "X-API-SECRET": API_SECRET}
# As `callschedule serve` runs it: even paths no route matches answer in the envelope.
app = standalone_app(scheduler, max_body_size=4096)

schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_answer_matches_the_document(case: schemathesis.Case) -> None:
    # A schema-valid time may still be refused by a rule (422) or name no call (404): the
    # document cannot express that, so "valid data is accepted" is not checked.
    with frozen_clock():
        response = case.call_and_validate(
            headers=HEADERS, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )
    assert response.status_code < 500


def test_the_document_declares_every_error_of_the_contract() -> None:
    document = schema.raw_schema
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    codes = set(error["properties"]["code"]["enum"])
    assert {
        "unauthorized",
        "call_not_found",
        "invalid_request",
        "payload_too_large",
        "call_not_reschedulable",
        "conflict",
        "schedule_rejected",
        "internal_error",
    } <= codes
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path != "/openapi.json":
                assert {"400", "401", "500"} <= set(operation["responses"]), (method, path)
                assert operation["security"] == [{"ApiKey": [], "ApiSecret": []}]
