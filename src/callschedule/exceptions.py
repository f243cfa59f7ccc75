"""The error tree. Every error a caller can act on is a :class:`CallScheduleError`.

The HTTP adapter maps each class to one status code and ``error.code``; the mapping lives in
``callschedule.asgi`` and nowhere else.
"""

from __future__ import annotations

from typing import Any


class CallScheduleError(Exception):
    """Root of every error raised by callschedule on purpose."""

    code = "internal_error"

    def details(self) -> Any:
        """Machine-readable details for the ``error.details`` field of the HTTP envelope."""
        return None


class InvalidInput(CallScheduleError, ValueError):
    """An argument has the wrong type or an impossible value; nothing was changed."""

    code = "invalid_request"

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"  # from the fields, should the field be renamed

    def details(self) -> Any:
        return {"field": self.field, "problem": self.problem}


class CallNotFound(CallScheduleError, LookupError):
    """No call with this id in the caller's organization (another organization's call included)."""

    code = "call_not_found"

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        super().__init__(f"Call {call_id!r} not found")

    def details(self) -> Any:
        return {"call_id": self.call_id}


class CallNotReschedulable(CallScheduleError):
    """The call is not pending any more, so it can be neither moved nor cancelled."""

    code = "call_not_reschedulable"

    def __init__(self, call_id: str, status: str) -> None:
        self.call_id = call_id
        self.status = status
        super().__init__(f"Call {call_id!r} is {status}; only pending calls can be changed")

    def details(self) -> Any:
        return {"call_id": self.call_id, "execution_status": self.status}


class Conflict(CallScheduleError):
    """The call changed between reading it and writing it (another writer won); nothing was written."""

    code = "conflict"

    def __init__(self, call_id: str, reason: str = "the call changed under the request") -> None:
        self.call_id = call_id
        self.reason = reason
        super().__init__(f"Call {call_id!r}: {reason}; read it again and retry")

    def details(self) -> Any:
        return {"call_id": self.call_id, "reason": self.reason}


class CallNotInProgress(Conflict):
    """An outcome was reported for a call that is not in progress (finished, or never claimed)."""

    code = "call_not_in_progress"

    def __init__(self, call_id: str, status: str) -> None:
        self.status = status
        super().__init__(call_id, f"the call is {status}, not in progress; its outcome is already recorded")

    def details(self) -> Any:
        return {"call_id": self.call_id, "execution_status": self.status}


class ScheduleRejected(CallScheduleError):
    """A scheduling rule refuses the requested time.

    ``rule`` names the rule (``not_in_past``, ``max_horizon``, ``calling_window``,
    ``max_reschedules`` or a plugin's name); ``next_allowed_timestamp`` is the earliest time the
    rule would accept, where one exists.
    """

    code = "schedule_rejected"

    def __init__(self, rule: str, message: str, next_allowed_timestamp: int | None = None) -> None:
        self.rule = rule
        self.message = message
        self.next_allowed_timestamp = next_allowed_timestamp
        super().__init__(message)

    def details(self) -> Any:
        return {"rule": self.rule, "next_allowed_timestamp": self.next_allowed_timestamp}


class Unauthorized(CallScheduleError):
    """The API key and secret are missing, unknown, revoked or wrong (deliberately not told apart)."""

    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__("Missing or invalid API credentials")


class StoreNotFound(CallScheduleError, LookupError):
    """No store plugin accepts this URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(f"No store plugin accepts the URL {url!r}")


class StoreClosed(CallScheduleError, RuntimeError):
    """The store was closed; the change was not written. (Over HTTP, an internal error: a server
    answers only while its store is open.)"""

    def __init__(self) -> None:
        super().__init__("The store is closed; nothing was written")


class ExecutorNotFound(CallScheduleError, LookupError):
    """No executor plugin is registered under this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"No executor plugin is named {name!r}")
