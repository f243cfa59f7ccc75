"""Built-in executors by name: ``log`` and ``webhook``, registered like any third-party plugin."""

from __future__ import annotations

from typing import Any

from callschedule.exceptions import InvalidInput
from callschedule.executors import LogExecutor, WebhookExecutor
from callschedule.hookspecs import hookimpl


@hookimpl(trylast=True)
def callschedule_executor(name: str, options: dict[str, Any]) -> Any:
    """``log`` prints each call; ``webhook`` POSTs it (options: ``url``, ``secret``, ``timeout``)."""
    if name == "log":
        return LogExecutor()
    if name == "webhook":
        unknown = set(options) - {"url", "secret", "timeout", "headers"}
        if unknown:
            raise InvalidInput("executor_options", f"unknown webhook options: {sorted(unknown)}")
        for required in ("url", "secret"):
            if not options.get(required):
                raise InvalidInput(f"executor_options.{required}", f"the webhook executor needs {required!r}")
        timeout = options.get("timeout", 10.0)
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise InvalidInput("executor_options.timeout", f"expected seconds, got {timeout!r}") from None
        return WebhookExecutor(
            url=options["url"],
            secret=options["secret"],
            timeout=timeout,
            headers=dict(options.get("headers") or {}),
        )
    return None
