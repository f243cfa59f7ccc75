"""The plugin hooks of callschedule. Their docstrings are the hook reference.

A plugin is a module or object with functions named like these hooks, decorated with
:data:`hookimpl`, registered through the ``callschedule`` entry-point group::

    [project.entry-points.callschedule]
    my_plugin = "my_package.callschedule_plugin"

or passed to :meth:`CallScheduler.open` with ``plugins=[...]``. Built-in stores, executors and
authentication are registered the same way, last, so a plugin's answer to a ``firstresult``
hook wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from callschedule._model import Call, Event
    from callschedule._scheduler import CallScheduler
    from callschedule.abc import Store

hookspec = pluggy.HookspecMarker("callschedule")
#: Mark a function as the implementation of a callschedule hook.
hookimpl = pluggy.HookimplMarker("callschedule")


@hookspec(firstresult=True)
def callschedule_store(url: str) -> Store | None:
    """Open the store for ``url``, or return ``None`` if this plugin does not handle it.

    Built in: ``sqlite:///path``, ``memory://``, ``postgresql://...`` (with the ``postgres`` extra).

    :param url: the URL given to :meth:`CallScheduler.open`.
    :return: an object implementing :class:`callschedule.abc.Store`.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def callschedule_executor(name: str, options: dict[str, Any]) -> Any:
    """Build the executor registered as ``name``, or return ``None`` if it is not this plugin's.

    An executor is a callable ``executor(call, attempt)``, sync or async, that places the call
    (see :mod:`callschedule.executors`). Built in: ``log`` and ``webhook``.

    :param name: the name given to ``scheduler.worker(executor=name)`` or ``--executor``.
    :param options: executor settings, such as ``{"url": ..., "secret": ...}`` for ``webhook``.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def callschedule_authenticate(scheduler: CallScheduler, api_key: str, api_secret: str) -> str | None:
    """Return the organization id these credentials belong to, or ``None`` to refuse them.

    The built-in implementation looks the key up in the store, compares the secret's hash in
    constant time and refuses revoked keys. A plugin may check keys elsewhere (a vault, an SSO).

    :param scheduler: the scheduler the request is for.
    :param api_key: the ``X-API-KEY`` header.
    :param api_secret: the ``X-API-SECRET`` header.

    Stops at first non-None result.
    """


@hookspec
def callschedule_check_schedule(call: Call, requested_timestamp: int, now: int) -> None:
    """Refuse a time for a call by raising :class:`callschedule.ScheduleRejected`.

    Called after the built-in rules accepted ``requested_timestamp``, for every create and
    reschedule. Name the rule in the error (``ScheduleRejected("quiet_hours", "...", next_allowed)``);
    it reaches the HTTP client as ``error.details.rule``. Return ``None`` to accept.

    :param call: the call as it is now (for a create, as it would be created).
    :param requested_timestamp: the time it would have (Unix seconds), after calling-window shifts.
    :param now: the current time (Unix seconds) from the scheduler's clock.
    """


@hookspec
def callschedule_event(call: Call, event: Event) -> None:
    """Called after every committed change of a call, once per event, in the writing process.

    For metrics, outgoing webhooks, logging. The change is already durable; an exception here is
    logged and does not undo it. Keep it fast or hand the work to a queue.

    :param call: the call after the change.
    :param event: the event the change appended.
    """
