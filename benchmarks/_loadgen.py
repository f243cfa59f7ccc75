"""A small bounded HTTP/1.1 load generator on raw asyncio sockets (keep-alive, fixed connections).

Used for both sides of B6, so the client costs the same whatever the server is. Each connection
sends one request, reads the whole response, and sends the next; the run stops after ``total``
requests or ``max_seconds``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from _common import percentile


async def _connection(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    counter: list[int],
    total: int,
    deadline: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while counter[0] < total and time.perf_counter() < deadline:
            i = counter[0]
            counter[0] += 1
            started = time.perf_counter()
            writer.write(make_request(i))
            status_line = await reader.readline()
            length = 0
            close = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(status_line.split(b" ", 2)[1]) if status_line else 0
            statuses[status] = statuses.get(status, 0) + 1
            if close or not status_line:
                break
    finally:
        writer.close()


async def _run(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    total: int,
    connections: int,
    max_seconds: float,
) -> dict[str, Any]:
    counter = [0]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    deadline = started + max_seconds
    await asyncio.gather(
        *(
            _connection(host, port, make_request, counter, total, deadline, latencies, statuses)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return {
        "req_per_s": len(latencies) / elapsed,
        "requests": len(latencies),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=0.0),
        "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def load(
    port: int,
    make_request: Callable[[int], bytes],
    *,
    total: int,
    connections: int = 16,
    max_seconds: float = 60.0,
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """Send ``total`` requests (``make_request(i)`` gives request ``i``'s bytes) over ``connections``
    keep-alive connections; throughput, latency percentiles and status counts."""
    return asyncio.run(_run(host, port, make_request, total, connections, max_seconds))


def put_json(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one ``PUT`` request with a JSON body."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Return once something accepts connections on ``port``; raise after ``timeout`` seconds."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
