"""The core, and the command but for ``serve``, work on a machine without Starlette."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import callschedule

BLOCKED = ("starlette", "uvicorn", "fastapi")

SCRIPT = textwrap.dedent(
    f"""
    import sys
    import time

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())

    import callschedule
    import callschedule.cli

    scheduler = callschedule.CallScheduler.open("memory://")
    soon = int(time.time()) + 3600
    scheduler.create_call("org-789", soon, call_id="c-1")
    scheduler.reschedule("org-789", "c-1", soon + 60)
    assert len(scheduler.events("org-789", "c-1")) == 2
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {BLOCKED!r})
    assert not loaded, loaded
    try:
        import callschedule.asgi
    except ModuleNotFoundError as exc:
        print("asgi refused:", exc.name)
    callschedule.cli.main(["serve", "--db", "memory://"], prog_name="callschedule")
    """
)


def test_core_and_cli_import_without_starlette(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(callschedule.__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert "asgi refused: starlette" in result.stdout, result.stderr
    assert result.returncode == 1, result.stderr
    assert "pip install 'callschedule[server]'" in result.stderr
