"""A worker process for the multi-process tests: ``python worker_process.py DB_URL LOG MODE [JSON]``.

The executor keeps its own record, in the file LOG, of every attempt it is handed (one line
``<started|done> <call_id> <attempt> <pid> <unix time>``, appended with one ``write`` each), so the tests
count executions without trusting the library's own view. MODE:

- ``count``: record ``done`` and return at once;
- ``slow``: record ``started``, sleep ``seconds`` (default 1), record ``done``;
- ``hang``: record ``started`` and never return (to be killed).

JSON holds keyword arguments for ``scheduler.worker()`` (``concurrency``, ``lease_seconds``,
``poll_interval``, ``retry_initial_delay``...). The worker runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from callschedule import CallScheduler, RetryPolicy
from callschedule.executors import Attempt


def main() -> None:
    url, log_path, mode = sys.argv[1:4]
    options: dict[str, Any] = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    seconds = float(options.pop("seconds", 1.0))
    retry = RetryPolicy(
        max_attempts=int(options.pop("retry_max_attempts", 3)),
        initial_delay=float(options.pop("retry_initial_delay", 0)),
        jitter=0,
    )
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def record(what: str, call_id: str, attempt: Attempt) -> None:
        os.write(log, f"{what} {call_id} {attempt.number} {pid} {time.time():.3f}\n".encode())

    def dial(call: Any, attempt: Attempt) -> dict[str, Any]:
        if mode == "count":
            record("done", call.call_id, attempt)
            return {"pid": pid}
        record("started", call.call_id, attempt)
        if mode == "hang":
            while True:
                time.sleep(3600)
        time.sleep(seconds)
        record("done", call.call_id, attempt)
        return {"pid": pid}

    with CallScheduler.open(url) as scheduler:
        options.setdefault("worker_id", f"worker-{pid}")
        worker = scheduler.worker(dial, retry=retry, **options)
        print("ready", flush=True)
        worker.run()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
