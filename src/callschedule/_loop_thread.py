"""An event loop in a thread of its own, on which a scheduler runs the changes of threads that
arrive while another thread's change is in progress.

Thirty-two threads that each read, plan and write a change take turns at the interpreter lock
for every statement they run, and most of their time goes in those hand-overs. Run on one loop,
the same changes take the lock once each way, their statements run in one place, and those of
one turn of the loop share a commit (see :meth:`CallScheduler.reschedule_async`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LoopStopped(RuntimeError):
    """The loop thread was stopped: it takes no more work."""


class _Job(Generic[T]):
    """A coroutine a thread gave the loop, and its outcome; ``done`` is released once it is set."""

    def __init__(self, coroutine: Coroutine[Any, Any, T]) -> None:
        self.coroutine = coroutine
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()


class LoopThread:
    """A daemon thread running an event loop, started on first use and stopped by :meth:`stop`."""

    def __init__(self, name: str = "callschedule-changes") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._running = 0  # threads waiting on run()
        self._jobs: list[_Job[Any]] = []  # submitted, not yet taken by the loop
        self._woken = False  # the loop is told to take them
        self._tasks: set[asyncio.Task[None]] = set()  # the jobs' tasks, on the loop

    def is_current(self) -> bool:
        """Whether the calling thread is this loop's thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (or exception).

        Threads that submit while the loop has not yet taken earlier submissions wake it once
        between them, and each waits on a lock of its own, released when its task is done.

        :raises LoopStopped: the thread was stopped (the coroutine is closed, never run).
        """
        loop = self._started()
        job: _Job[T] = _Job(coroutine)
        with self._lock:
            if loop is None or self._stopped:
                coroutine.close()
                raise LoopStopped()
            self._jobs.append(job)
            self._running += 1
            wake, self._woken = not self._woken, True
        if wake:
            loop.call_soon_threadsafe(self._start_jobs)
        job.done.acquire()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    @property
    def busy(self) -> bool:
        """Whether a thread is waiting for work it gave the loop."""
        return self._running > 0

    def _start_jobs(self) -> None:
        """On the loop: a task for every job submitted since the last wake-up."""
        with self._lock:
            jobs, self._jobs, self._woken = self._jobs, [], False
        loop = asyncio.get_running_loop()
        for job in jobs:
            task = loop.create_task(self._answer(job))
            self._tasks.add(task)  # the loop holds tasks weakly: kept until done
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, job: _Job[Any]) -> None:
        """On the loop: run the job and hand its outcome, whatever it is, to the thread waiting
        for it. Nothing escapes to the loop: a ``SystemExit`` in one job is its caller's, and
        must not stop the loop under the others."""
        try:
            job.result = await job.coroutine
        except BaseException as exc:  # raised again in the caller's thread
            job.error = exc
        finally:
            with self._lock:
                self._running -= 1
            job.done.release()

    def stop(self, *, wait: bool = True) -> None:
        """Stop the loop once the work it was given is answered; with ``wait``, wait for its
        thread to end (unless called on that thread). :meth:`run` refuses from then on."""
        with self._lock:
            self._stopped = True
            loop, thread = self._loop, self._thread
            self._loop = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop_when_idle(), loop)
        if wait and threading.current_thread() is not thread:
            thread.join()

    async def _stop_when_idle(self) -> None:
        """Stop the running loop once every job given to it is answered (no new one is taken)."""
        while True:
            if others := asyncio.all_tasks() - {asyncio.current_task()}:
                await asyncio.wait(others)
                continue
            with self._lock:
                if not self._running:
                    break
            await asyncio.sleep(0)  # a job submitted just before the stop starts in a moment
        asyncio.get_running_loop().stop()

    def _started(self) -> asyncio.AbstractEventLoop | None:
        with self._lock:
            if self._stopped:
                return None
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_run, args=(loop,), name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop


def _run(loop: asyncio.AbstractEventLoop) -> None:
    """The thread: run ``loop`` until it is stopped, then close it."""
    try:
        loop.run_forever()
    finally:
        loop.close()
