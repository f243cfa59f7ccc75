"""callschedule: schedule outbound calls, move them under rules, keep every change in an event
log, and hand each call to your dialer at its second."""

from callschedule._clock import Clock
from callschedule._model import (
    ApiKey,
    Call,
    CallPage,
    Event,
    EventType,
    ExecutionStatus,
    RescheduleResult,
    Source,
)
from callschedule._rules import CallingWindow, SchedulingPolicy
from callschedule._scheduler import CallScheduler
from callschedule._worker import RetryPolicy, Worker
from callschedule.exceptions import (
    CallNotFound,
    CallNotInProgress,
    CallNotReschedulable,
    CallScheduleError,
    Conflict,
    ExecutorNotFound,
    InvalidInput,
    ScheduleRejected,
    StoreClosed,
    StoreNotFound,
    Unauthorized,
)
from callschedule.hookspecs import hookimpl

__all__ = [
    "ApiKey",
    "Call",
    "CallNotFound",
    "CallNotInProgress",
    "CallNotReschedulable",
    "CallPage",
    "CallScheduleError",
    "CallScheduler",
    "CallingWindow",
    "Clock",
    "Conflict",
    "Event",
    "EventType",
    "ExecutionStatus",
    "ExecutorNotFound",
    "InvalidInput",
    "RescheduleResult",
    "RetryPolicy",
    "ScheduleRejected",
    "SchedulingPolicy",
    "Source",
    "StoreClosed",
    "StoreNotFound",
    "Unauthorized",
    "Worker",
    "hookimpl",
]
