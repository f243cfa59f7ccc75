"""The deployment of docs/deploying.md as real processes: two API servers and a worker, started
with the ``callschedule`` command, sharing one PostgreSQL schema."""

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

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEADLINE_S = 30.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCHEDULE_")}
    env["PYTHONPATH"] = str(Path(callschedule.__file__).parents[1])
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """The processes a test starts; killed at its end whatever happens."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.folder / f"process-{len(self.started)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "callschedule", *args],
            cwd=self.folder,
            env=_env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.started.append((process, log))
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        return next(log for p, log in self.started if p is process).read_text()

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=DEADLINE_S)

    def close(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()


def _serve(processes: Processes, url: str) -> str:
    port = _free_port()
    process = processes.start("serve", "--db", url, "--port", str(port), "--no-worker")
    base = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert process.poll() is None, processes.output(process)
        try:
            if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                return base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "serve did not answer in time"
        time.sleep(0.1)


def _status(client: httpx.Client, call_id: str) -> str:
    call: dict[str, Any] = client.get(f"/calls/{call_id}").json()["data"]["call"]
    return str(call["metadata"]["execution_status"])


def test_two_api_servers_and_a_worker_share_one_database(processes: Processes, postgres_url: str) -> None:
    key = json.loads(
        subprocess.run(
            [sys.executable, "-m", "callschedule", "keys", "create", "--org", "org-789", "--db",
             postgres_url, "--json"],
            env=_env(), capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    headers = {"X-API-KEY": key["api_key"], "X-API-SECRET": key["api_secret"]}
    first, second = _serve(processes, postgres_url), _serve(processes, postgres_url)
    worker = processes.start("worker", "--db", postgres_url, "--executor", "log")

    with (
        httpx.Client(base_url=first, headers=headers, timeout=10) as a,
        httpx.Client(base_url=second, headers=headers, timeout=10) as b,
    ):
        soon = int(time.time()) + 2
        due = a.post("/calls", json={"scheduled_timestamp": soon, "payload": {"to": "+15550001"}})
        assert due.status_code == 201
        due_id = due.json()["data"]["call"]["call_id"]
        later = b.post("/calls", json={"scheduled_timestamp": soon, "payload": {"to": "+15550002"}})
        later_id = later.json()["data"]["call"]["call_id"]
        # Moved through the other server before it falls due: it must not run now.
        moved = a.put(f"/calls/{later_id}/schedule", json={"scheduled_timestamp": soon + 3600})
        assert moved.status_code == 200

        deadline = time.monotonic() + DEADLINE_S
        while _status(b, due_id) != "completed":
            assert worker.poll() is None, processes.output(worker)
            assert time.monotonic() < deadline, "the worker never ran the due call"
            time.sleep(0.1)
        assert _status(a, later_id) == "pending"
        events = [e["event"] for e in b.get(f"/calls/{due_id}/events").json()["data"]["events"]]

    assert events == ["Call scheduled via api", "Call claimed by a worker", "Call completed"]
    for process, _ in processes.started:
        assert processes.stop(process) == 0, processes.output(process)
    assert due_id in processes.output(worker)
    assert later_id not in processes.output(worker)
