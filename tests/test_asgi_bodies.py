"""Any body at all, sent to the documented endpoint: a typed answer, never a 500, and a call that
changes only when the answer is 200."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_support import SEED_CALL_ID, SEED_NOW, frozen_clock, mounted_client, snapshot, tenant
from callschedule import CallScheduler

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
TIMESTAMPS = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [SEED_NOW - 1, SEED_NOW, SEED_NOW + 1, 1748460000, 253402300799, 253402300800]
)
BODIES = st.one_of(
    st.binary(max_size=64),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"scheduled_timestamp": TIMESTAMPS | JSON}).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({"scheduled_timestamp": TIMESTAMPS}, optional={"extra": JSON}).map(
        lambda d: json.dumps(d).encode()
    ),
)

EXPECTED = {200: "success", 400: "invalid_request", 409: "call_not_reschedulable", 413: "payload_too_large",
            422: "schedule_rejected"}  # fmt: skip


def test_any_body_gets_a_typed_answer_and_changes_the_call_only_on_success() -> None:
    with frozen_clock(), CallScheduler.open("memory://", load_entry_points=False) as scheduler:
        org = tenant(scheduler, "org-789")
        scheduler.create_call("org-789", 1748454000, call_id=SEED_CALL_ID)

        with mounted_client(scheduler, max_body_size=512) as client:

            @given(body=BODIES)
            @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(body: bytes) -> None:
                before = snapshot(scheduler, "org-789", SEED_CALL_ID)
                response = client.put(
                    f"/api/calls/{SEED_CALL_ID}/schedule",
                    content=body,
                    headers={"Content-Type": "application/json", **org.headers},
                )
                answer: dict[str, Any] = response.json()
                assert response.status_code in EXPECTED, response.text
                after = snapshot(scheduler, "org-789", SEED_CALL_ID)
                if response.status_code == 200:
                    assert answer["status"] == "success"
                    assert after[0].scheduled_timestamp == answer["data"]["new_scheduled_timestamp"]
                    assert len(after[1]) == len(before[1]) + 1
                else:
                    assert answer["error"]["code"] == EXPECTED[response.status_code]
                    assert after == before

            check()
