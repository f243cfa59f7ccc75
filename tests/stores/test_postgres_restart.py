"""The PostgreSQL server restarting under the store and under a worker process.

The shared test server is never restarted: each test starts a private, throwaway server of its
own (initdb into a temporary folder, a free port on 127.0.0.1) and restarts that one.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from callschedule import CallScheduler, ExecutionStatus, Source, _events
from callschedule._model import Call
from test_worker_processes import StoppedClock, Workers, count_status, log_lines, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ORG = "org-load"


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        bindir = Path(subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class PrivateServer:
    """A PostgreSQL server of the test's own, which the test may stop and restart at will."""

    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
             str(self.root / "server.log"), "-o", options, "-w", *args],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def init(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
             "-U", "postgres", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "restart")

    def kill(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-m", "immediate", "stop")


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    if not os.environ.get("CALLSCHEDULE_TEST_POSTGRES_URL"):
        pytest.skip("CALLSCHEDULE_TEST_POSTGRES_URL is not set")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) to start a private server")
    # Not under pytest's temporary folder: the server's user must be able to reach its files.
    root = Path(tempfile.mkdtemp(prefix="callschedule-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run a private server")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    private = PrivateServer(bindir=bindir, root=root, port=_free_port(), as_user=as_user)
    try:
        private.init()
        private.start()
        yield private
    finally:
        try:
            private.kill()
        finally:
            shutil.rmtree(root, ignore_errors=True)


class Heard:
    def __init__(self) -> None:
        self.timestamps: list[int] = []
        self.changed = threading.Condition()

    def __call__(self, timestamp: int) -> None:
        with self.changed:
            self.timestamps.append(timestamp)
            self.changed.notify_all()

    def wait_for(self, timestamp: int, timeout: float = 20) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: timestamp in self.timestamps, timeout=timeout)


def _call(call_id: str, at: int) -> Call:
    return Call(call_id=call_id, organization_id=ORG, scheduled_timestamp=at, created_at=at * 1000)


def test_the_store_and_its_listener_carry_on_after_the_server_restarts(server: PrivateServer) -> None:
    from callschedule.plugins.postgres import PostgresStore

    store = PostgresStore.from_url(server.url + "?pool_min_size=2")
    heard = Heard()
    unsubscribe = store.subscribe_due(heard)
    try:
        assert store._listener.connected.wait(10)
        first = _call("before", 1000)
        store.insert_call(first, _events.created(first, 1_000_000, Source.LIBRARY))
        assert heard.wait_for(1000)

        server.restart()

        # Every pooled connection died with the server: the first operation finds out, the
        # pool replaces them, and the operation runs on a new one.
        second = _call("after", 900)
        assert store.insert_call(second, _events.created(second, 900_000, Source.LIBRARY)) == second
        # The listener reconnected by itself, said which call is due first, and hears new ones.
        assert heard.wait_for(900)
        third = _call("later", 2000)
        store.insert_call(third, _events.created(third, 2_000_000, Source.LIBRARY))
        assert heard.wait_for(2000)
        claimed = store.claim_due(
            now=1500, now_ms=1_500_000, limit=10, lease_owner="w", lease_expires_at=1_530_000
        )
        assert [c.call_id for c in claimed] == ["after", "before"]
    finally:
        unsubscribe()
        store.close()


def test_a_worker_process_rides_out_server_restarts_and_an_outage_running_each_call_once(
    tmp_path: Path, server: PrivateServer
) -> None:
    workers = Workers(tmp_path)
    try:
        log = tmp_path / "executed.log"
        process = workers.start(server.url, log, "slow", concurrency=8, seconds=0.05,
                                lease_seconds=5, poll_interval=0.5)  # fmt: skip
        start = time.time()
        due = {f"call-{n:03}": int(start) + 1 + n % 6 for n in range(120)}
        with CallScheduler.open(server.url, clock=StoppedClock(start)) as scheduler:
            for call_id, at in due.items():
                scheduler.create_call(ORG, at, call_id=call_id)
            time.sleep(1.5)
            server.restart()
            time.sleep(1.0)
            server.stop()  # down for two seconds: the worker waits for it
            time.sleep(2.0)
            server.start()
            time.sleep(0.5)
            server.restart()
            assert process.poll() is None, workers.stderr(0)
            wait_for(
                lambda: count_status(scheduler, ExecutionStatus.COMPLETED) == len(due),
                "every call to complete",
            )
            after = {"after-the-restarts": int(time.time()) + 1}
            scheduler.clock = StoppedClock(time.time())  # type: ignore[misc]
            scheduler.create_call(ORG, after["after-the-restarts"], call_id="after-the-restarts")
            wait_for(
                lambda: (
                    scheduler.get_call(ORG, "after-the-restarts").execution_status
                    is ExecutionStatus.COMPLETED
                ),
                "a call created after the restarts to run",
            )
        assert workers.terminate(process) == 0, workers.stderr(0)
        lines = log_lines(log)
        done = Counter(call_id for what, call_id, _, _ in lines if what == "done")
        started = Counter(call_id for what, call_id, _, _ in lines if what == "started")
        assert set(done) == set(due) | set(after)  # none lost
        assert [c for c, n in started.items() if n != 1] == []  # none started twice
        assert done == started
    finally:
        workers.close()
