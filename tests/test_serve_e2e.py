"""``callschedule serve`` as a real process: a key made with the CLI, the endpoint driven over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import callschedule

pytestmark = pytest.mark.slow

STARTUP_DEADLINE_S = 30.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCHEDULE_")}
    env["PYTHONPATH"] = str(Path(callschedule.__file__).parents[1])
    return env


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callschedule", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``callschedule serve`` with no --db (a SQLite file in its current folder) on a free port."""
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "callschedule", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not answer in time"
            time.sleep(0.1)
        yield base, process, tmp_path
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        log.close()


def test_serve_answers_the_documented_endpoint_with_a_key_from_the_cli(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, _, folder = server
    key = json.loads(_cli(folder, "keys", "create", "--org", "org-789", "--json").stdout)
    headers = {"X-API-KEY": key["api_key"], "X-API-SECRET": key["api_secret"]}
    soon = int(time.time()) + 3600

    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        created = client.post("/calls", json={"scheduled_timestamp": soon, "payload": {"to": "+1555"}})
        call_id = created.json()["data"]["call"]["call_id"]
        moved = client.put(
            f"/calls/{call_id}/schedule",
            headers={"Content-Type": "application/json"},
            content=b'{"scheduled_timestamp": 1893456000}',
        )
        log = client.get(f"/calls/{call_id}/events")
        anonymous = httpx.put(f"{base}/calls/{call_id}/schedule", json={"scheduled_timestamp": 1893456000})

    assert created.status_code == 201
    assert moved.status_code == 200
    assert moved.json()["data"] == {
        "operation": "schedule_update",
        "organization_id": "org-789",
        "call_id": call_id,
        "previous_scheduled_timestamp": soon,
        "new_scheduled_timestamp": 1893456000,
        "scheduled_for_human": "2030-01-01T00:00:00Z",
        "call": {
            "call_id": call_id,
            "metadata": {
                "is_scheduled": True,
                "scheduled_timestamp": 1893456000,
                "execution_status": "pending",
            },
            "events": moved.json()["data"]["call"]["events"],
        },
    }
    assert [e["event"] for e in log.json()["data"]["events"]] == [
        "Call scheduled via api",
        "Scheduled call time updated via dedicated endpoint",
    ]
    assert anonymous.status_code == 401
    # The CLI, another process, reads the same SQLite file in the server's folder.
    assert (folder / "callschedule.db").exists()
    shown = json.loads(_cli(folder, "show", call_id, "--org", "org-789", "--json").stdout)
    assert shown["call"]["metadata"]["scheduled_timestamp"] == 1893456000


def test_serve_stops_cleanly_on_sigterm(server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    _, process, folder = server

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 0, (folder / "serve.log").read_text()


def _wait_for_status(
    client: httpx.Client, call_id: str, status: str, deadline_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        call: dict[str, Any] = client.get(f"/calls/{call_id}").json()["data"]["call"]
        if call["metadata"]["execution_status"] == status:
            return call
        assert time.monotonic() < deadline, f"call still {call['metadata']['execution_status']}"
        time.sleep(0.1)


def test_serve_runs_a_worker_that_executes_due_calls(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, folder = server
    key = json.loads(_cli(folder, "keys", "create", "--org", "org-789", "--json").stdout)
    headers = {"X-API-KEY": key["api_key"], "X-API-SECRET": key["api_secret"]}

    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        created = client.post("/calls", json={"scheduled_timestamp": int(time.time()) + 1})
        call_id = created.json()["data"]["call"]["call_id"]
        done = _wait_for_status(client, call_id, "completed")

    assert [e["event"] for e in done["events"]] == [
        "Call scheduled via api",
        "Call claimed by a worker",
        "Call completed",
    ]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert f"callschedule: dialling {call_id}" in (folder / "serve.log").read_text()


def test_worker_command_executes_due_calls_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    created = json.loads(
        _cli(tmp_path, "create", "--db", db, "--org", "org-789", "--at", "+1s", "--json").stdout
    )
    call_id = created["call"]["call_id"]
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "callschedule", "worker", "--db", db, "--concurrency", "2"],
        cwd=tmp_path,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            shown = json.loads(
                _cli(tmp_path, "show", call_id, "--db", db, "--org", "org-789", "--json").stdout
            )
            if shown["call"]["metadata"]["execution_status"] == "completed":
                break
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker did not run the call in time"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        log.close()
    assert f"callschedule: dialling {call_id}" in (tmp_path / "worker.log").read_text()


def test_concurrent_reschedules_over_http_each_win_once_or_get_a_conflict(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    import asyncio

    base, _, folder = server
    key = json.loads(_cli(folder, "keys", "create", "--org", "org-789", "--json").stdout)
    headers = {"X-API-KEY": key["api_key"], "X-API-SECRET": key["api_secret"]}
    first = int(time.time()) + 3600
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        call_id = client.post("/calls", json={"scheduled_timestamp": first}).json()["data"]["call"]["call_id"]

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.put(f"/calls/{call_id}/schedule", json={"scheduled_timestamp": first + 60 + i})
                    for i in range(32)
                )
            )

    answers = asyncio.run(race())

    winners = [r.json()["data"]["new_scheduled_timestamp"] for r in answers if r.status_code == 200]
    losers = [r for r in answers if r.status_code != 200]
    assert winners
    assert all(r.status_code == 409 and r.json()["error"]["code"] == "conflict" for r in losers)
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        call = client.get(f"/calls/{call_id}").json()["data"]["call"]
    moves = [e for e in call["events"] if e["event"] == "Scheduled call time updated via dedicated endpoint"]
    # Every acknowledged move is in the log exactly once, in the order the versions rose.
    assert sorted(e["data"]["new_scheduled_timestamp"] for e in moves) == sorted(winners)
    assert call["version"] == 1 + len(winners)
    assert call["reschedule_count"] == len(winners)
    assert call["metadata"]["scheduled_timestamp"] == moves[-1]["data"]["new_scheduled_timestamp"]


def test_serve_on_a_port_in_use_fails_naming_it_and_runs_no_call(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with callschedule.CallScheduler.open(f"sqlite:///{tmp_path / 'callschedule.db'}") as scheduler:
            scheduler.create_call("org-789", int(time.time()), call_id="due-now")
        result = subprocess.run(
            [sys.executable, "-m", "callschedule", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"could not serve on 127.0.0.1:{port}" in result.stderr
    # The worker starts only once the API is up: a server that never started ran nothing.
    with callschedule.CallScheduler.open(f"sqlite:///{tmp_path / 'callschedule.db'}") as scheduler:
        assert scheduler.get_call("org-789", "due-now").version == 1
