"""B6: ``PUT /api/calls/{id}/schedule`` under uvicorn, against a bare Starlette endpoint.

The server runs in its own process; this child process is the load generator, the same one for
both servers (``_loadgen``), with the same connections and the same request bytes but the path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import AHEAD, ORG, bulk_load_calls, sqlite_url
from _loadgen import free_port, load, put_json, wait_for_port

HERE = Path(__file__).resolve().parent


def _serve(args: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, str(HERE / "_servers.py"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def b6(workdir: Path, n: int, server: str, connections: int = 16, warmup: int = 300) -> dict[str, Any]:
    """``n`` reschedule requests over ``connections`` connections to ``server`` (bare or callschedule)."""
    due = int(time.time()) + AHEAD
    calls = max(1000, n // 10)  # each call moves about ten times: the table is not one hot row
    headers = {"X-API-KEY": "k", "X-API-SECRET": "s"}
    args = [server]
    port = free_port()
    if server == "callschedule":
        from callschedule import CallScheduler

        path = workdir / "b6.db"
        bulk_load_calls(path, calls, first_due=due, spread=3600)
        with CallScheduler.open(sqlite_url(path), load_entry_points=False) as scheduler:
            key, secret = scheduler.create_api_key(ORG)
        headers = {"X-API-KEY": key, "X-API-SECRET": secret}
        args = [server, str(port), sqlite_url(path)]
    else:
        args = [server, str(port)]

    def request(i: int) -> bytes:
        body = json.dumps({"scheduled_timestamp": due + 7200 + i}).encode()
        return put_json(f"/api/calls/c{i % calls:07d}/schedule", body, headers)

    proc = _serve(args)
    try:
        wait_for_port(port)
        load(port, lambda i: request(n + i), total=warmup, connections=connections)
        result = load(port, request, total=n, connections=connections, max_seconds=120)
    finally:
        _stop(proc)
    if proc.returncode not in (0, -15) and proc.stderr is not None:
        result["server_stderr"] = proc.stderr.read().decode()[-500:]
    return result
