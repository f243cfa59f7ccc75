"""The ``callschedule`` command: API keys, the server, the worker, and calls from the shell.

Every command takes ``--db``: a SQLite file path (default ``callschedule.db`` in the current
folder) or a store URL (``sqlite:///...``, ``postgresql://...``, ``memory://``); the
``CALLSCHEDULE_DB`` environment variable sets it too. ``--json`` prints the same shapes the
HTTP API answers in ``data``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import datetime as dt
import json
import re
import signal
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click

from callschedule._clock import Clock
from callschedule._converters import call_to_wire, event_to_wire, reschedule_to_wire
from callschedule._model import Call, Event, Source
from callschedule._scheduler import CallScheduler
from callschedule._validation import rfc3339
from callschedule.exceptions import CallScheduleError, InvalidInput

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DB = "callschedule.db"


def store_url(db: str) -> str:
    """The store URL for ``--db``: URLs as given, anything else a path to a SQLite file."""
    if "://" in db or db.startswith("sqlite:"):
        return db
    return "sqlite:///" + urllib.parse.quote(db)


def display_url(url: str) -> str:
    """``url`` safe to print: a password in it becomes ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@contextlib.contextmanager
def _open(db: str) -> Iterator[CallScheduler]:
    url = store_url(db)
    try:
        scheduler = CallScheduler.open(url)
    except CallScheduleError as exc:
        code = f"{exc.code}: " if exc.code != "internal_error" else ""
        raise click.ClickException(f"{code}{exc}".replace(url, display_url(url))) from None
    except Exception as exc:  # the file or server itself: unreachable, unwritable, not a database
        problem = str(exc).replace(url, display_url(url)) or type(exc).__name__
        raise click.ClickException(f"cannot open the store {display_url(url)}: {problem}") from None
    try:
        with _user_errors():
            yield scheduler
    finally:
        scheduler.close()


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Report callschedule's typed errors as a one-line message and exit status 1."""
    try:
        yield
    except CallScheduleError as exc:
        code = f"{exc.code}: " if exc.code != "internal_error" else ""
        raise click.ClickException(f"{code}{exc}") from None


def _db_option(func: F) -> F:
    return click.option(
        "--db",
        default=DEFAULT_DB,
        show_default=True,
        envvar="CALLSCHEDULE_DB",
        help="SQLite file, or a store URL: sqlite:///path, postgresql://..., memory://",
    )(func)


def _org_option(func: F) -> F:
    return click.option(
        "--org",
        "organization_id",
        required=True,
        envvar="CALLSCHEDULE_ORG",
        help="The organization the calls belong to.",
    )(func)


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's wire shapes).")(func)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


# -- times ----------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\+(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str, field: str = "scheduled_timestamp", clock: Clock | None = None) -> int:
    """Unix seconds from ``1893456000``, ``2030-01-01T09:00:00Z`` (an offset is required) or
    ``+90s``/``+10m``/``+2h``/``+1d`` (from now).

    :raises InvalidInput: naming ``field``.
    """
    text = value.strip()
    if text.isdigit():
        return int(text)
    relative = _RELATIVE.match(text)
    if relative:
        now = (clock or Clock()).now_s()
        return now + int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            field, f"expected Unix seconds, an RFC 3339 time or +N[smhd], got {value!r}"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput(field, f"{value!r} has no UTC offset; add Z or +hh:mm")
    return int(moment.timestamp())


class _TimeParam(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except InvalidInput as exc:
            self.fail(exc.problem, param, ctx)


TIME = _TimeParam()


def _human_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")


def _call_line(call: Call) -> str:
    return (
        f"{call.call_id}  {call.execution_status.value:<11}  "
        f"{rfc3339(call.scheduled_timestamp)} ({call.scheduled_timestamp})"
    )


def _event_line(event: Event) -> str:
    return f"{_human_ms(event.timestamp)}  {event.event}  {json.dumps(event.data, ensure_ascii=False)}"


# -- the command ----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="callschedule")
def main() -> None:
    """Schedule outbound calls: keys, the API server, the worker, and calls from the shell."""


# -- keys -----------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Create and revoke API keys."""


@keys.command("create")
@_db_option
@_org_option
@_json_option
def keys_create(db: str, organization_id: str, as_json: bool) -> None:
    """Create an API key for an organization; the secret is shown once, only here."""
    with _open(db) as scheduler:
        api_key, api_secret = scheduler.create_api_key(organization_id)
    if as_json:
        _print_json({"organization_id": organization_id, "api_key": api_key, "api_secret": api_secret})
        return
    click.echo(f"organization_id: {organization_id}")
    click.echo(f"api_key:         {api_key}")
    click.echo(f"api_secret:      {api_secret}")
    click.echo("Keep the secret now: it is stored only as a hash.", err=True)


@keys.command("revoke")
@_db_option
@click.argument("api_key")
def keys_revoke(db: str, api_key: str) -> None:
    """Revoke API_KEY: requests with it are refused from now on."""
    with _open(db) as scheduler:
        revoked = scheduler.revoke_api_key(api_key)
    if not revoked:
        raise click.ClickException(f"no API key {api_key!r}")
    click.echo(f"revoked {api_key}")


# -- server and worker ----------------------------------------------------------------------------


def _worker_options(func: F) -> F:
    options = [
        click.option(
            "--executor",
            default="log",
            show_default=True,
            help="Executor plugin that places the calls: log, webhook, or a plugin's name.",
        ),
        click.option("--url", default=None, help="For --executor webhook: the URL to POST each call to."),
        click.option(
            "--secret",
            default=None,
            envvar="CALLSCHEDULE_WEBHOOK_SECRET",
            help="For --executor webhook: the key of the HMAC signature header.",
        ),
        click.option(
            "--concurrency",
            default=8,
            show_default=True,
            type=click.IntRange(min=1),
            help="Calls executed at once.",
        ),
        click.option(
            "--max-attempts",
            default=3,
            show_default=True,
            type=click.IntRange(min=1),
            help="Attempts per call in all, the first included.",
        ),
        click.option(
            "--retry-delay",
            default=60.0,
            show_default=True,
            type=click.FloatRange(min=0),
            help="Seconds before the first retry; doubled after each further failure.",
        ),
        click.option(
            "--lease-seconds",
            default=60.0,
            show_default=True,
            type=click.FloatRange(min=0, min_open=True),
            help="How long a claim holds unless renewed (running calls renew it).",
        ),
        click.option(
            "--lease-expiry",
            default="retry",
            show_default=True,
            type=click.Choice(["retry", "fail"]),
            help="What happens to a call whose worker died.",
        ),
        click.option(
            "--misfire",
            default="run",
            show_default=True,
            type=click.Choice(["run", "skip", "move"]),
            help="What happens to a call found overdue (the system was down).",
        ),
        click.option(
            "--misfire-grace",
            default=60.0,
            show_default=True,
            type=click.FloatRange(min=0),
            help="Seconds a call may be late before it counts as overdue.",
        ),
        click.option(
            "--organization-limit",
            default=None,
            type=click.IntRange(min=1),
            help="At most this many calls of one organization in progress at once.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _worker_policy(options: dict[str, Any]) -> dict[str, Any]:
    """The ``scheduler.worker()`` keyword arguments for the policy options of ``_worker_options``."""
    from callschedule import RetryPolicy

    return {
        "retry": RetryPolicy(max_attempts=options["max_attempts"], initial_delay=options["retry_delay"]),
        "lease_seconds": options["lease_seconds"],
        "lease_expiry": options["lease_expiry"],
        "misfire": options["misfire"],
        "misfire_grace_seconds": options["misfire_grace"],
        "organization_limit": options["organization_limit"],
    }


def _executor_options(url: str | None, secret: str | None) -> dict[str, Any]:
    return {k: v for k, v in {"url": url, "secret": secret}.items() if v is not None}


class _Stop(Exception):
    """SIGTERM arrived; unwind through the cleanup of ``serve``."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


@main.command()
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.option("--no-worker", is_flag=True, help="Serve the API only; run workers elsewhere.")
@_worker_options
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    db: str,
    host: str,
    port: int,
    no_worker: bool,
    executor: str,
    url: str | None,
    secret: str | None,
    concurrency: int,
    log_level: str,
    **policy: Any,
) -> None:
    """Serve the HTTP API at /api (and a worker, unless --no-worker) until SIGINT or SIGTERM."""
    try:
        import uvicorn

        from callschedule.asgi import standalone_app
    except ImportError as exc:
        raise click.ClickException(f"{exc.name} is missing: pip install 'callschedule[server]'") from None

    with _open(db) as scheduler:
        worker = None
        worker_thread = None
        if not no_worker:
            worker = scheduler.worker(
                executor=executor,
                executor_options=_executor_options(url, secret),
                concurrency=concurrency,
                **_worker_policy(policy),
            )
            worker_thread = threading.Thread(
                target=worker.run,
                kwargs={"install_signal_handlers": False},
                name="callschedule-worker",
                daemon=True,
            )

        class _Server(uvicorn.Server):
            """Starts the worker once the API listens: a server that cannot bind runs no call."""

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if self.started and worker_thread is not None:
                    worker_thread.start()

        server = _Server(
            uvicorn.Config(
                standalone_app(scheduler),
                host=host,
                port=port,
                log_level=log_level,
                lifespan="off",
            )
        )
        # uvicorn restores the handlers it found, then re-raises the signal that stopped it:
        # with this one in place, SIGTERM unwinds through the cleanup below instead of killing us.
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            click.echo(
                f"callschedule: API on http://{host}:{port}/api (OpenAPI: /api/openapi.json), "
                f"worker: {executor if worker_thread else 'off'}, store: {display_url(store_url(db))}",
                err=True,
            )
            server.run()
        except (KeyboardInterrupt, _Stop):
            pass
        except SystemExit:
            if server.started:
                raise
            # uvicorn exits when it cannot start (the port is taken): say so below, with status 1
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
            if worker is not None and worker_thread is not None and worker_thread.is_alive():
                click.echo("callschedule: stopping the worker", err=True)
                worker.stop(grace=30.0)
                worker_thread.join(timeout=35.0)
        if not server.started:
            raise click.ClickException(f"could not serve on {host}:{port} (see the log above)")


@main.command()
@_db_option
@_worker_options
def worker(
    db: str, executor: str, url: str | None, secret: str | None, concurrency: int, **policy: Any
) -> None:
    """Run a worker: hand each due call to the executor, until SIGINT or SIGTERM."""
    with _open(db) as scheduler:
        running = scheduler.worker(
            executor=executor,
            executor_options=_executor_options(url, secret),
            concurrency=concurrency,
            **_worker_policy(policy),
        )
        click.echo(
            f"callschedule: worker with executor {executor}, store: {display_url(store_url(db))}", err=True
        )
        running.run()


# -- calls ----------------------------------------------------------------------------------------


def _payload(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        payload = json.loads(value)
    except ValueError as exc:
        raise InvalidInput("payload", f"not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise InvalidInput("payload", f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _show_call(scheduler: CallScheduler, call: Call, as_json: bool) -> None:
    events = scheduler.events(call.organization_id, call.call_id)
    if as_json:
        _print_json({"call": call_to_wire(call, events)})
        return
    click.echo(_call_line(call))
    click.echo(f"  organization:  {call.organization_id}")
    click.echo(f"  timezone:      {call.timezone or '-'}")
    click.echo(f"  payload:       {json.dumps(call.payload, ensure_ascii=False)}")
    click.echo(
        f"  attempts:      {call.attempts}   reschedules: {call.reschedule_count}   version: {call.version}"
    )
    if call.outcome is not None:
        click.echo(f"  outcome:       {json.dumps(call.outcome, ensure_ascii=False)}")
    click.echo("  events:")
    for event in events:
        click.echo(f"    {_event_line(event)}")


@main.command()
@_db_option
@_org_option
@click.option("--at", "scheduled", required=True, type=TIME, help="When: Unix seconds, RFC 3339, or +10m.")
@click.option("--call-id", default=None, help="Your own id (makes the create idempotent).")
@click.option("--timezone", default=None, help="The callee's IANA time zone, e.g. America/New_York.")
@click.option("--payload", default=None, help='A JSON object for the executor, e.g. \'{"to": "+1555"}\'.')
@_json_option
def create(
    db: str,
    organization_id: str,
    scheduled: int,
    call_id: str | None,
    timezone: str | None,
    payload: str | None,
    as_json: bool,
) -> None:
    """Schedule a new call."""
    with _open(db) as scheduler:
        call = scheduler.create_call(
            organization_id,
            scheduled,
            call_id=call_id,
            timezone=timezone,
            payload=_payload(payload),
            source=Source.CLI,
        )
        _show_call(scheduler, call, as_json)


@main.command("list")
@_db_option
@_org_option
@click.option(
    "--status",
    multiple=True,
    type=click.Choice(["pending", "in_progress", "completed", "failed", "cancelled"]),
    help="Only calls with this status (repeat for several).",
)
@click.option("--from", "scheduled_from", type=TIME, default=None, help="Scheduled at or after.")
@click.option("--to", "scheduled_to", type=TIME, default=None, help="Scheduled at or before.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", default=None, help="next_cursor of a previous page.")
@_json_option
def list_calls(
    db: str,
    organization_id: str,
    status: tuple[str, ...],
    scheduled_from: int | None,
    scheduled_to: int | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List an organization's calls by scheduled time, a page at a time."""
    with _open(db) as scheduler:
        page = scheduler.list_calls(
            organization_id,
            list(status) or None,
            scheduled_from=scheduled_from,
            scheduled_to=scheduled_to,
            cursor=cursor,
            limit=limit,
        )
    if as_json:
        calls = []
        for call in page.calls:
            wire = call_to_wire(call, [])
            del wire["events"]
            calls.append(wire)
        _print_json({"calls": calls, "next_cursor": page.next_cursor})
        return
    for call in page.calls:
        click.echo(_call_line(call))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@main.command()
@_db_option
@_org_option
@click.argument("call_id")
@_json_option
def show(db: str, organization_id: str, call_id: str, as_json: bool) -> None:
    """Show a call with its event log."""
    with _open(db) as scheduler:
        _show_call(scheduler, scheduler.get_call(organization_id, call_id), as_json)


@main.command()
@_db_option
@_org_option
@click.argument("call_id")
@click.option(
    "--at", "scheduled", required=True, type=TIME, help="New time: Unix seconds, RFC 3339, or +10m."
)
@_json_option
def reschedule(db: str, organization_id: str, call_id: str, scheduled: int, as_json: bool) -> None:
    """Move a pending call to a new time."""
    with _open(db) as scheduler:
        result = scheduler.reschedule(organization_id, call_id, scheduled, source=Source.CLI)
    if as_json:
        _print_json(reschedule_to_wire(result))
        return
    click.echo(
        f"{result.call_id}: {rfc3339(result.previous_scheduled_timestamp)} -> "
        f"{result.scheduled_for_human} ({result.new_scheduled_timestamp})"
    )


@main.command()
@_db_option
@_org_option
@click.argument("call_id")
@click.option("--reason", default=None, help="Why; kept in the event log.")
@_json_option
def cancel(db: str, organization_id: str, call_id: str, reason: str | None, as_json: bool) -> None:
    """Cancel a pending call; it will never run."""
    with _open(db) as scheduler:
        call = scheduler.cancel(organization_id, call_id, reason=reason, source=Source.CLI)
        if as_json:
            _show_call(scheduler, call, as_json)
            return
    click.echo(f"{call.call_id}: cancelled")


@main.command()
@_db_option
@_org_option
@click.argument("call_id")
@_json_option
def events(db: str, organization_id: str, call_id: str, as_json: bool) -> None:
    """Print a call's event log, oldest first."""
    with _open(db) as scheduler:
        log = scheduler.events(organization_id, call_id)
    if as_json:
        _print_json({"call_id": call_id, "events": [event_to_wire(e) for e in log]})
        return
    for event in log:
        click.echo(_event_line(event))


# -- import ---------------------------------------------------------------------------------------

_KNOWN_COLUMNS = frozenset({"organization_id", "call_id", "scheduled_timestamp", "timezone", "payload"})


@attrs.frozen
class Refused:
    """A CSV row the import did not create, and why."""

    line: int
    row: dict[str, str]
    code: str
    message: str


def _import_row(
    scheduler: CallScheduler, default_org: str | None, line: int, row: dict[str, str]
) -> Refused | None:
    try:
        if None in row:
            raise InvalidInput("$", f"{len(row[None])} more value(s) than the header has columns")  # type: ignore[index]
        organization_id = row.get("organization_id") or default_org
        if not organization_id:
            raise InvalidInput("organization_id", "empty, and no --org given")
        raw_time = row.get("scheduled_timestamp") or ""
        if not raw_time.strip():
            raise InvalidInput("scheduled_timestamp", "empty")
        payload = _payload(row["payload"]) if row.get("payload") else {}
        assert payload is not None
        for column, value in row.items():
            if column not in _KNOWN_COLUMNS and value not in (None, ""):
                payload.setdefault(column, value)
        scheduler.create_call(
            organization_id,
            parse_time(raw_time),
            call_id=row.get("call_id") or None,
            timezone=row.get("timezone") or None,
            payload=payload,
            source=Source.CLI,
        )
    except CallScheduleError as exc:
        return Refused(line, row, exc.code, str(exc))
    return None


@main.command("import")
@_db_option
@click.option(
    "--org",
    "organization_id",
    default=None,
    envvar="CALLSCHEDULE_ORG",
    help="Organization of rows without an organization_id column.",
)
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--report",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the refused rows, with an error column, to this CSV file.",
)
@click.option(
    "--jobs",
    default=8,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Rows created at once (concurrent creates share commits).",
)
def import_calls(
    db: str, organization_id: str | None, csv_file: Path, report: Path | None, jobs: int
) -> None:
    """Create calls from CSV_FILE, one per row, and report the rows refused.

    Columns: scheduled_timestamp (Unix seconds, RFC 3339 or +10m; required), call_id
    (makes re-running the import safe), timezone, payload (a JSON object), organization_id
    (else --org). Any other column goes into the payload under its name. Exits with status 1
    if any row was refused.
    """
    try:
        with csv_file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "scheduled_timestamp" not in reader.fieldnames:
                raise click.ClickException(f"{csv_file}: the header has no scheduled_timestamp column")
            fieldnames = list(reader.fieldnames)
            rows = [(reader.line_num, dict(row)) for row in reader]
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{csv_file}: not UTF-8 text (byte {exc.start}); save it as UTF-8 and import again"
        ) from None
    except csv.Error as exc:
        raise click.ClickException(f"{csv_file}: not a CSV file the import can read ({exc})") from None

    refused: list[Refused] = []
    with _open(db) as scheduler, concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(lambda item: _import_row(scheduler, organization_id, *item), rows)
        with click.progressbar(results, length=len(rows), label="Importing", file=sys.stderr) as bar:
            for result in bar:
                if result is not None:
                    refused.append(result)

    click.echo(f"Imported {len(rows) - len(refused)} of {len(rows)} rows; refused {len(refused)}.")
    for item in refused:
        call_id = item.row.get("call_id") or "-"
        click.echo(f"  line {item.line} (call_id {call_id}): {item.code}: {item.message}")
    if report is not None:
        with report.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=[*fieldnames, "line", "error"], extrasaction="ignore")
            writer.writeheader()
            for item in refused:
                writer.writerow({**item.row, "line": item.line, "error": f"{item.code}: {item.message}"})
    if refused:
        sys.exit(1)
