"""The ``callschedule`` command, run in-process with click's runner."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from asgi_support import SEED_NOW, frozen_clock
from callschedule import CallScheduler, ExecutionStatus, InvalidInput, Unauthorized
from callschedule.cli import main, parse_time, store_url


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    with frozen_clock():
        yield str(tmp_path / "calls.db")


def run(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json").stdout)


def test_keys_create_prints_a_key_that_authenticates(db: str) -> None:
    created = run_json("keys", "create", "--org", "org-789", "--db", db)

    assert set(created) == {"organization_id", "api_key", "api_secret"}
    assert created["organization_id"] == "org-789"
    with CallScheduler.open(store_url(db)) as scheduler:
        assert scheduler.authenticate(created["api_key"], created["api_secret"]) == "org-789"


def test_keys_create_without_json_shows_the_secret_once(db: str) -> None:
    result = run("keys", "create", "--org", "org-789", "--db", db)

    assert "api_key:" in result.stdout and "api_secret:" in result.stdout
    assert "stored only as a hash" in result.stderr


def test_revoked_key_no_longer_authenticates(db: str) -> None:
    created = run_json("keys", "create", "--org", "org-789", "--db", db)

    result = run("keys", "revoke", created["api_key"], "--db", db)

    assert created["api_key"] in result.stdout
    with CallScheduler.open(store_url(db)) as scheduler, pytest.raises(Unauthorized):
        scheduler.authenticate(created["api_key"], created["api_secret"])


def test_revoking_an_unknown_key_fails(db: str) -> None:
    result = run("keys", "revoke", "csk_nope", "--db", db, ok=False)

    assert result.exit_code == 1
    assert "no API key 'csk_nope'" in result.stderr


def test_call_commands_create_list_show_reschedule_cancel_events(db: str) -> None:
    created = run_json(
        "create", "--db", db, "--org", "org-789", "--at", str(SEED_NOW + 3600),
        "--call-id", "crm-1", "--timezone", "America/New_York", "--payload", '{"to": "+15551234567"}',
    )  # fmt: skip
    listed = run_json("list", "--db", db, "--org", "org-789", "--status", "pending")
    moved = run_json("reschedule", "crm-1", "--db", db, "--org", "org-789", "--at", "2025-05-28T19:20:00Z")
    cancelled = run_json("cancel", "crm-1", "--db", db, "--org", "org-789", "--reason", "done")
    shown = run_json("show", "crm-1", "--db", db, "--org", "org-789")
    log = run_json("events", "crm-1", "--db", db, "--org", "org-789")

    assert created["call"]["payload"] == {"to": "+15551234567"}
    assert [c["call_id"] for c in listed["calls"]] == ["crm-1"]
    assert moved["new_scheduled_timestamp"] == 1748460000
    assert moved["scheduled_for_human"] == "2025-05-28T19:20:00Z"
    assert cancelled["call"]["metadata"]["execution_status"] == "cancelled"
    assert shown["call"]["metadata"] == {
        "is_scheduled": False,
        "scheduled_timestamp": 1748460000,
        "execution_status": "cancelled",
    }
    assert [e["event"] for e in log["events"]] == [
        "Call scheduled via cli",
        "Scheduled call time updated via cli",
        "Call cancelled via cli",
    ]
    assert log["events"] == shown["call"]["events"]


def test_human_output_names_the_call_and_its_time(db: str) -> None:
    run("create", "--db", db, "--org", "org-789", "--at", "+30m", "--call-id", "crm-2")

    listed = run("list", "--db", db, "--org", "org-789")
    moved = run("reschedule", "crm-2", "--db", db, "--org", "org-789", "--at", "+2h")
    shown = run("show", "crm-2", "--db", db, "--org", "org-789")

    assert "crm-2  pending" in listed.stdout
    assert "2025-05-28T17:36:40Z" in listed.stdout  # SEED_NOW + 30 minutes
    assert "-> 2025-05-28T19:06:40Z" in moved.stdout
    assert "Scheduled call time updated via cli" in shown.stdout


def test_refused_change_exits_1_with_the_error_code(db: str) -> None:
    run("create", "--db", db, "--org", "org-789", "--at", "+1h", "--call-id", "crm-3")

    past = run("reschedule", "crm-3", "--db", db, "--org", "org-789", "--at", "1", ok=False)
    missing = run("show", "nope", "--db", db, "--org", "org-789", ok=False)
    other_org = run("cancel", "crm-3", "--db", db, "--org", "org-b", ok=False)

    assert past.exit_code == missing.exit_code == other_org.exit_code == 1
    assert "schedule_rejected" in past.stderr
    assert "call_not_found" in missing.stderr
    assert "call_not_found" in other_org.stderr
    with CallScheduler.open(store_url(db)) as scheduler:
        assert scheduler.get_call("org-789", "crm-3").execution_status is ExecutionStatus.PENDING
        assert len(scheduler.events("org-789", "crm-3")) == 1


def test_unreadable_time_is_a_usage_error(db: str) -> None:
    result = run("create", "--db", db, "--org", "org-789", "--at", "tomorrow", ok=False)

    assert result.exit_code == 2
    assert "tomorrow" in result.stderr


def test_bad_payload_is_refused(db: str) -> None:
    result = run("create", "--db", db, "--org", "o", "--at", "+1h", "--payload", "[1]", ok=False)

    assert result.exit_code == 1
    assert "payload" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1748460000", 1748460000),
        ("2025-05-28T19:20:00Z", 1748460000),
        ("2025-05-28T15:20:00-04:00", 1748460000),
        ("+90", SEED_NOW + 90),
        ("+90s", SEED_NOW + 90),
        ("+10m", SEED_NOW + 600),
        ("+2h", SEED_NOW + 7200),
        ("+1d", SEED_NOW + 86400),
    ],
)
def test_parse_time_reads_seconds_rfc3339_and_relative(text: str, expected: int) -> None:
    with frozen_clock():
        assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["2025-05-28T19:20:00", "soon", "-5", "+5w"])
def test_parse_time_refuses_what_it_cannot_read_exactly(text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_time(text)
    assert error.value.field == "scheduled_timestamp"


@pytest.mark.parametrize(
    ("db", "url"),
    [
        ("callschedule.db", "sqlite:///callschedule.db"),
        ("/var/lib/calls.db", "sqlite:////var/lib/calls.db"),
        ("dir with space/c.db", "sqlite:///dir%20with%20space/c.db"),
        ("sqlite:///x.db?synchronous=normal", "sqlite:///x.db?synchronous=normal"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("memory://", "memory://"),
    ],
)
def test_db_takes_a_path_or_a_store_url(db: str, url: str) -> None:
    assert store_url(db) == url


def test_db_defaults_to_a_file_in_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLSCHEDULE_DB", raising=False)

    run("keys", "create", "--org", "org-789")

    assert (tmp_path / "callschedule.db").exists()


def test_db_can_be_a_path_with_spaces(tmp_path: Path) -> None:
    folder = tmp_path / "my calls"
    folder.mkdir()

    run("keys", "create", "--org", "org-789", "--db", str(folder / "c.db"))

    assert (folder / "c.db").exists()


# -- import -----------------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_import_creates_good_rows_and_reports_refused_ones(db: str, tmp_path: Path) -> None:
    source = _write_csv(
        tmp_path / "calls.csv",
        ["call_id", "scheduled_timestamp", "timezone", "payload", "to"],
        [
            ["a-1", str(SEED_NOW + 60), "America/New_York", '{"agent": "ann"}', "+15550001"],
            ["a-2", "2025-05-28T19:20:00Z", "", "", "+15550002"],
            ["bad-past", str(SEED_NOW - 60), "", "", ""],
            ["bad-zone", str(SEED_NOW + 60), "Mars/Olympus", "", ""],
            ["bad-json", str(SEED_NOW + 60), "", "{oops", ""],
            ["bad-time", "", "", "", ""],
            ["a-3", "+1h", "", "", ""],
        ],
    )
    report = tmp_path / "refused.csv"

    result = run("import", str(source), "--db", db, "--org", "org-789", "--report", str(report), ok=False)

    assert result.exit_code == 1
    assert "Imported 3 of 7 rows; refused 4." in result.stdout
    assert "line 4 (call_id bad-past): schedule_rejected" in result.stdout
    assert "line 5 (call_id bad-zone): invalid_request" in result.stdout
    assert "line 6 (call_id bad-json): invalid_request" in result.stdout
    assert "line 7 (call_id bad-time): invalid_request" in result.stdout
    assert "Importing" in result.stderr  # the progress bar
    with CallScheduler.open(store_url(db)) as scheduler:
        calls = {c.call_id: c for c in scheduler.list_calls("org-789").calls}
    assert sorted(calls) == ["a-1", "a-2", "a-3"]
    assert calls["a-1"].payload == {"agent": "ann", "to": "+15550001"}
    assert calls["a-1"].timezone == "America/New_York"
    assert calls["a-2"].scheduled_timestamp == 1748460000
    assert calls["a-3"].scheduled_timestamp == SEED_NOW + 3600
    with report.open(newline="") as handle:
        refused = list(csv.DictReader(handle))
    assert [r["call_id"] for r in refused] == ["bad-past", "bad-zone", "bad-json", "bad-time"]
    assert refused[0]["error"].startswith("schedule_rejected:")


def test_import_again_is_idempotent_by_call_id(db: str, tmp_path: Path) -> None:
    source = _write_csv(
        tmp_path / "calls.csv",
        ["call_id", "scheduled_timestamp"],
        [[f"c-{i}", str(SEED_NOW + 60 + i)] for i in range(50)],
    )

    first = run("import", str(source), "--db", db, "--org", "org-789")
    second = run("import", str(source), "--db", db, "--org", "org-789")

    assert "Imported 50 of 50 rows; refused 0." in first.stdout
    assert "Imported 50 of 50 rows; refused 0." in second.stdout
    with CallScheduler.open(store_url(db)) as scheduler:
        calls = scheduler.list_calls("org-789", limit=1000).calls
        assert len(calls) == 50
        assert all(len(scheduler.events("org-789", c.call_id)) == 1 for c in calls)


def test_import_takes_the_organization_from_a_column(db: str, tmp_path: Path) -> None:
    source = _write_csv(
        tmp_path / "calls.csv",
        ["organization_id", "scheduled_timestamp"],
        [["org-a", str(SEED_NOW + 60)], ["", str(SEED_NOW + 60)]],
    )

    result = run("import", str(source), "--db", db, ok=False)

    assert "Imported 1 of 2 rows; refused 1." in result.stdout
    assert "organization_id" in result.stdout


def test_import_refuses_a_row_with_more_values_than_columns(db: str, tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "calls.csv", ["scheduled_timestamp"], [[str(SEED_NOW + 60), "surplus"]])

    result = run("import", str(source), "--db", db, "--org", "o", ok=False)

    assert "refused 1" in result.stdout
    assert "more value(s) than the header has columns" in result.stdout


def test_import_without_a_time_column_is_refused_before_anything(db: str, tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "calls.csv", ["call_id", "when"], [["x", "1"]])

    result = run("import", str(source), "--db", db, "--org", "o", ok=False)

    assert result.exit_code == 1
    assert "no scheduled_timestamp column" in result.stderr


def test_python_dash_m_runs_the_command() -> None:
    import subprocess
    import sys

    import callschedule

    env = {"PYTHONPATH": str(Path(callschedule.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "callschedule", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert "Usage: callschedule" in result.stdout
    for command in ("keys", "serve", "worker", "create", "list", "show", "reschedule", "cancel",
                    "events", "import"):  # fmt: skip
        assert command in result.stdout


def test_webhook_worker_without_a_url_is_refused(db: str) -> None:
    result = run("worker", "--db", db, "--executor", "webhook", ok=False)

    assert result.exit_code == 1
    assert "url" in result.stderr


def test_unknown_executor_is_refused(db: str) -> None:
    result = run("worker", "--db", db, "--executor", "carrier-pigeon", ok=False)

    assert result.exit_code == 1
    assert "carrier-pigeon" in result.stderr


def test_a_store_that_cannot_be_opened_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    result = run("list", "--org", "org-789", "--db", str(blocker / "calls.db"), ok=False)

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "cannot open the store" in result.stderr and "a-file" in result.stderr


def test_a_store_url_password_is_never_printed() -> None:
    # No such scheme: the error names the URL, which must not show the password.
    result = run("list", "--org", "org-789", "--db", "mysql://admin:hunter2@db/calls", ok=False)

    assert result.exit_code == 1
    assert "hunter2" not in result.output
    assert "admin:***@db" in result.stderr


def test_import_of_a_file_that_is_not_utf8_is_refused_in_one_line(db: str, tmp_path: Path) -> None:
    source = tmp_path / "calls.csv"
    source.write_bytes("scheduled_timestamp,call_id\n+1h,caf\xe9\n".encode("latin-1"))

    result = run("import", "--org", "org-789", "--db", db, str(source), ok=False)

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "UTF-8" in result.stderr
    with CallScheduler.open(store_url(db)) as scheduler:
        assert scheduler.list_calls("org-789").calls == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db.internal:5432/calls", "postgresql://app:***@db.internal:5432/calls"),
        ("postgresql://app@db.internal/calls", "postgresql://app@db.internal/calls"),
        ("sqlite:///callschedule.db", "sqlite:///callschedule.db"),
    ],
)
def test_banners_and_errors_show_store_urls_without_their_password(url: str, shown: str) -> None:
    from callschedule.cli import display_url

    assert display_url(url) == shown
