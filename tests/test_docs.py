"""The documentation is tested: every Python example runs, every hook is documented, the site builds.

Each page's fenced ``python`` blocks run in order, in one namespace, in a fresh temporary working
directory (so ``sqlite:///calls.db`` is a new file and ``memory://`` a new store), exactly as a
reader would paste them. Two marker comments, invisible on the rendered page, change that for the
block right after them (docs/contributing-docs.md documents them):

- ``<!-- docs-test: skip REASON -->``: not run (code that needs a running server, say);
- ``<!-- docs-test: file NAME -->``: written to ``NAME`` in the working directory instead of run,
  for a module that later blocks import or a file that the page tells the reader to save.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from tests.conftest import SEED_NOW, at

import callschedule
from callschedule import CallScheduler, RetryPolicy, Worker, hookspecs
from callschedule.testing import StoreConformance

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<action>\S+)\s*(?P<argument>.*?)\s*-->\s*$")
PYTHON = {"python", "py"}


@attrs.frozen
class Example:
    """One fenced Python block of a page."""

    path: Path
    line: int  # the 1-based line of the block's first line of code
    source: str
    action: str = "run"  # "run", "skip" or "file"
    argument: str = ""


def examples(path: Path) -> list[Example]:
    """The page's Python blocks in order, with the marker that precedes each, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    marker: tuple[int, str, str] | None = None
    i = 0
    while i < len(lines):
        if m := MARKER.match(lines[i]):
            action, argument = m["action"], m["argument"]
            if action not in ("skip", "file") or not argument:
                raise ValueError(
                    f"{path}:{i + 1}: expected '<!-- docs-test: skip REASON -->' "
                    f"or '<!-- docs-test: file NAME -->', got {lines[i].strip()!r}"
                )
            marker = (i + 1, action, argument)
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if fence is None:
            if lines[i].strip() and marker is not None:
                raise ValueError(f"{path}:{marker[0]}: a docs-test marker must come right before a block")
            i += 1
            continue
        indent, closing = fence["indent"], fence["fence"]
        language = fence["info"].split()[0].lower() if fence["info"].strip() else ""
        body: list[str] = []
        start = i + 2
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(closing) and lines[i].strip().strip(closing[0]) == ""
        ):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        if language in PYTHON:
            action, argument = ("run", "") if marker is None else marker[1:]
            found.append(Example(path, start, "\n".join(body) + "\n", action, argument))
        elif marker is not None:
            raise ValueError(f"{path}:{marker[0]}: a docs-test marker must come right before a python block")
        marker = None
    if marker is not None:
        raise ValueError(f"{path}:{marker[0]}: a docs-test marker must come right before a python block")
    return found


def run_examples(page: list[Example], workdir: Path) -> dict[str, Any]:
    """Run the blocks of one page in order, in one namespace, in ``workdir``; return the namespace.

    Each block is compiled under the page's path with its own line numbers, so a failure's
    traceback points at the page and line of the example.
    """
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for example in page:
        if example.action == "skip":
            continue
        if example.action == "file":
            target = workdir / example.argument
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(example.source, encoding="utf-8")
            continue
        padded = "\n" * (example.line - 1) + example.source
        exec(compile(padded, str(example.path), "exec"), namespace)
    return namespace


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty current directory, importable, whose modules are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(str(tmp_path)):
            del sys.modules[name]


def close_schedulers(namespace: dict[str, Any]) -> None:
    """Close what the examples opened (they are scripts; the test must not leak files)."""
    values = list(namespace.values())
    for value in values:
        if isinstance(value, Worker):
            value.close()
    for value in values:
        if isinstance(value, CallScheduler):
            value.close()


@pytest.mark.parametrize("path", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_python_example_of_the_page_runs(path: Path, workdir: Path) -> None:
    page = examples(path)
    namespace: dict[str, Any] = {}
    try:
        namespace = run_examples(page, workdir)
    finally:
        close_schedulers(namespace)


def test_the_store_guide_example_passes_the_conformance_suite(workdir: Path) -> None:
    # stores.md tells the reader to save counting_store.py and test_counting_store.py and run
    # pytest on the latter: do exactly that.
    namespace: dict[str, Any] = {}
    try:
        namespace = run_examples(examples(DOCS / "stores.md"), workdir)
    finally:
        close_schedulers(namespace)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(callschedule.__file__).parents[1]), "."])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_counting_store.py"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    suite = [name for name in dir(StoreConformance) if name.startswith("test_")]
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(suite)} passed" in run.stdout


def console_commands(path: Path) -> list[str]:
    """The ``$ `` commands of the page's ``console`` blocks, in order, continuation lines joined."""
    commands: list[str] = []
    in_console = False
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_console = not in_console and stripped[3:].strip() == "console"
            continue
        if not in_console:
            continue
        if pending:
            pending += "\n" + line
        elif stripped.startswith("$ "):
            pending = stripped[2:]
        if pending and not pending.endswith("\\"):
            commands.append(pending)
            pending = ""
    return commands


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Runs the page's shell commands against the code under test, stopping at the first failure.
SHELL_PRELUDE = """\
set -euo pipefail
callschedule() { "$CALLSCHEDULE_PYTHON" -m callschedule "$@"; }
python() { "$CALLSCHEDULE_PYTHON" "$@"; }
"""


@pytest.mark.slow
def test_the_quickstart_followed_literally_ends_with_an_executed_call_and_its_log(workdir: Path) -> None:
    commands = console_commands(DOCS / "quickstart.md")
    [serve] = [c for c in commands if "callschedule serve" in c]
    # The test suite's own command is this very run; the rest is what a reader types.
    *steps, read_log = [c for c in commands if c != serve and "pytest" not in c]
    assert read_log.startswith("callschedule events ")
    install, start = serve.split(" && ")
    assert install == "pip install -e '.[server]'"  # done: the package under test is importable
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCHEDULE_")}
    env["PYTHONPATH"] = str(Path(callschedule.__file__).parents[1])
    env["CALLSCHEDULE_PYTHON"] = sys.executable

    def shell(lines: list[str]) -> subprocess.CompletedProcess[str]:
        script = SHELL_PRELUDE + "\n".join(lines).replace("localhost:8080", f"localhost:{port}")
        return subprocess.run(
            ["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
        )

    serve_log = workdir / "serve.log"
    with serve_log.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", *shlex.split(start), "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, server, serve_log)
            typed = shell(steps)
            assert typed.returncode == 0, typed.stdout + typed.stderr
            assert typed.stdout.count('"status":"success"') == 2, typed.stdout
            # The page says the call runs ten seconds after the reschedule: wait for it, bounded.
            with CallScheduler.open("sqlite:///callschedule.db") as scheduler:
                deadline = time.monotonic() + 40
                while scheduler.get_call("org-789", SEED_CALL_ID).execution_status.value != "completed":
                    assert time.monotonic() < deadline, serve_log.read_text()
                    time.sleep(0.2)
            printed = shell([read_log])
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert printed.returncode == 0, printed.stderr
    assert [line.split("  ")[1] for line in printed.stdout.splitlines()] == [
        "Call scheduled via api",
        "Scheduled call time updated via dedicated endpoint",
        "Call claimed by a worker",
        "Call completed",
    ]
    assert f"callschedule: dialling {SEED_CALL_ID} of org-789 (attempt 1" in serve_log.read_text()


SEED_CALL_ID = "call_bf2a9c7d-4e5f-4318-9b2a-8d7c6e4f1a0b"


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once ``port`` accepts connections; fail if ``process`` exits or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "the server did not start in 30 s"
        time.sleep(0.1)


# -- the harness itself ----------------------------------------------------------------------------

BROKEN_PAGE = """\
# A page with a mistake

```python
from callschedule import CallScheduler

scheduler = CallScheduler.open("memory://")
```

Some prose between the blocks.

```python
call = scheduler.create_call(organization_id="org-789", scheduled_timestamp=1)
```
"""


def test_a_broken_example_fails_and_names_its_page_and_line(workdir: Path) -> None:
    page = workdir / "broken.md"
    page.write_text(BROKEN_PAGE, encoding="utf-8")
    with pytest.raises(callschedule.ScheduleRejected) as failure:
        run_examples(examples(page), workdir)
    where = traceback.extract_tb(failure.tb)
    assert any(frame.filename == str(page) and frame.lineno == 12 for frame in where)


def test_blocks_of_a_page_share_one_namespace_in_order(workdir: Path) -> None:
    page = workdir / "page.md"
    page.write_text("```python\nx = 1\n```\n\ntext\n\n```py\nx += 1\n```\n", encoding="utf-8")
    assert run_examples(examples(page), workdir)["x"] == 2


def test_markers_skip_a_block_or_write_it_to_a_file(workdir: Path) -> None:
    page = workdir / "page.md"
    page.write_text(
        "<!-- docs-test: file greeting.py -->\n```python\nWORD = 'hi'\n```\n\n"
        "<!-- docs-test: skip needs a server -->\n```python\nraise SystemExit('must not run')\n```\n\n"
        "```python\nfrom greeting import WORD\n```\n",
        encoding="utf-8",
    )
    assert run_examples(examples(page), workdir)["WORD"] == "hi"


def test_a_marker_without_a_reason_or_block_is_refused(workdir: Path) -> None:
    page = workdir / "page.md"
    page.write_text("<!-- docs-test: skip -->\n```python\npass\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="docs-test: skip REASON"):
        examples(page)
    page.write_text("<!-- docs-test: skip later -->\nprose\n\n```python\npass\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="right before"):
        examples(page)


def test_blocks_nested_in_admonitions_and_other_languages_are_handled(workdir: Path) -> None:
    page = workdir / "page.md"
    page.write_text(
        "!!! note\n    ```python\n    y = 2\n    ```\n\n```console\n$ not python\n```\n", encoding="utf-8"
    )
    [only] = examples(page)
    assert only.source == "y = 2\n" and only.line == 3


def test_the_docs_have_python_examples() -> None:
    # Guards the collector itself: a change that found no blocks would make every page pass.
    counted = {path.name: len(examples(path)) for path in PAGES}
    for page in ("quickstart.md", "concepts.md", "stores.md", "hooks.md", "README.md"):
        assert counted[page] > 0, page


def test_every_page_is_in_the_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r":\s*(\S+\.md)\s*$", nav, re.M))
    pages = {path.name for path in DOCS.glob("*.md")}
    assert sorted(pages - listed) == [], "add these pages to the nav of mkdocs.yml"
    assert sorted(listed - pages) == [], "the nav of mkdocs.yml lists pages that don't exist"


def test_the_worker_timeline_picture_is_what_the_worker_does(frozen: Any) -> None:
    # docs/worker.md draws one call's life: a failed attempt, a worker killed during the second,
    # recovery by another worker, success. Drive the real worker through it and compare the log
    # with the events the picture names, in order.
    text = (DOCS / "worker.md").read_text(encoding="utf-8")
    picture = re.search(r"```mermaid\n(sequenceDiagram.*?)```", text, re.S)
    assert picture is not None, "docs/worker.md has no timeline picture"
    drawn = [e.strip() for group in re.findall(r"\[([a-z_, ]+)\]", picture[1]) for e in group.split(",")]

    due = SEED_NOW + 600
    with CallScheduler.open("memory://") as scheduler:
        scheduler.create_call(organization_id="org-1", scheduled_timestamp=due, call_id="call-1")
        frozen.move_to(at(due))

        def unreachable(call: Any, attempt: Any) -> None:
            raise ConnectionError("provider unreachable")

        with scheduler.worker(unreachable, retry=RetryPolicy(jitter=0), worker_id="A") as worker_a:
            worker_a.run_until_idle()
        retry_at = scheduler.get_call("org-1", "call-1").scheduled_timestamp
        assert retry_at == due + 60
        frozen.move_to(at(retry_at))
        # Worker A claims the second attempt and is killed: nothing renews or finishes it.
        scheduler.store.claim_due(
            now=retry_at,
            now_ms=retry_at * 1000,
            limit=1,
            lease_owner="A",
            lease_expires_at=(retry_at + 60) * 1000,
        )
        frozen.move_to(at(retry_at + 61))
        with scheduler.worker(
            lambda c, a: {"answered": True}, retry=RetryPolicy(jitter=0), worker_id="B"
        ) as worker_b:
            worker_b.run_until_idle()
            recovered = scheduler.get_call("org-1", "call-1")
            assert recovered.scheduled_timestamp == retry_at + 61 + 120
            frozen.move_to(at(recovered.scheduled_timestamp))
            worker_b.run_until_idle()
        done = scheduler.get_call("org-1", "call-1")
        assert (done.execution_status.value, done.attempts) == ("completed", 3)
        logged = [e.type.value for e in scheduler.events("org-1", "call-1")]
    assert logged == ["created", *drawn]


# -- the hook reference ------------------------------------------------------------------------------

HOOKS = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, "callschedule_spec"))
HOOKS_PAGE = DOCS / "hooks.md"


def rendered_members(page: Path, identifier: str) -> list[str]:
    """The ``members:`` list of the page's ``::: identifier`` directive."""
    text = page.read_text(encoding="utf-8")
    directive = re.search(rf"^::: {re.escape(identifier)}\n((?:[ ]{{4}}.*\n|\n)*)", text, re.M)
    assert directive is not None, f"{page.name} has no '::: {identifier}'"
    members = re.search(r"members:\n((?:\s+- \S+\n)+)", directive[1])
    assert members is not None, f"'::: {identifier}' in {page.name} lists no members"
    return re.findall(r"- (\S+)", members[1])


def test_every_hook_is_rendered_in_the_hook_reference() -> None:
    assert HOOKS, "no hook specs found"
    members = rendered_members(HOOKS_PAGE, "callschedule.hookspecs")
    assert [name for name in HOOKS if name not in members] == []
    summary = HOOKS_PAGE.read_text(encoding="utf-8").split("::: callschedule.hookspecs")[0]
    assert [name for name in HOOKS if f"`{name}`" not in summary] == [], "hooks missing from the table"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_documents_each_parameter(name: str) -> None:
    hook = getattr(hookspecs, name)
    doc = inspect.getdoc(hook) or ""
    assert doc.strip(), f"{name} has no docstring"
    undocumented = [p for p in inspect.signature(hook).parameters if f":param {p}:" not in doc]
    assert undocumented == []


# -- the Python API reference -------------------------------------------------------------------


def test_every_public_name_is_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    rendered = set(re.findall(r"^::: callschedule\.(\w+)$", text, re.M))
    elsewhere = {"hookimpl"}  # the hook reference renders it, beside the hooks it marks
    assert sorted(set(callschedule.__all__) - rendered - elsewhere) == []


def test_every_event_type_is_explained_in_the_concepts() -> None:
    text = (DOCS / "concepts.md").read_text(encoding="utf-8")
    assert [t.value for t in callschedule.EventType if f"`{t.value}`" not in text] == []


# -- the HTTP reference ------------------------------------------------------------------------------


def openapi_from_the_server() -> dict[str, Any]:
    """``GET /api/openapi.json`` of the adapter mounted at ``/api``, as ``callschedule serve`` mounts it."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from callschedule.asgi import create_app

    with CallScheduler.open("memory://") as scheduler:
        host = Starlette(routes=[Mount("/api", app=create_app(scheduler))])
        with TestClient(host) as client:
            response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def error_codes(document: Any) -> set[str]:
    """Every value of an ``enum`` under a property named ``code`` in the document."""
    found: set[str] = set()
    if isinstance(document, dict):
        properties = document.get("properties")
        code = properties.get("code") if isinstance(properties, dict) else None
        if isinstance(code, dict) and "enum" in code:
            found.update(code["enum"])
        for value in document.values():
            found |= error_codes(value)
    elif isinstance(document, list):
        for value in document:
            found |= error_codes(value)
    return found


def test_the_http_reference_names_every_route_and_error_code_of_the_openapi_document() -> None:
    document = openapi_from_the_server()
    text = (DOCS / "http.md").read_text(encoding="utf-8")
    server = document.get("servers", [{"url": ""}])[0]["url"].rstrip("/")
    routes = [
        f"{method.upper()} {server}{path}"
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "put", "post", "patch", "delete"}
    ]
    codes = sorted(error_codes(document))
    assert routes and codes, "the OpenAPI document lists no routes or no error codes"
    assert [route for route in routes if route not in text] == []
    assert [code for code in codes if f"`{code}`" not in text] == []


# -- the site -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_hook_rendered(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    reference = (site / "hooks" / "index.html").read_text(encoding="utf-8")
    assert [name for name in HOOKS if f'id="callschedule.hookspecs.{name}"' not in reference] == []
