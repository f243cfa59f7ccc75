"""Development sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``."""

from __future__ import annotations

import os
import sys

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (PostgreSQL tests run where CALLSCHEDULE_TEST_POSTGRES_URL is set)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs, env={
        "CALLSCHEDULE_TEST_POSTGRES_URL": os.environ.get("CALLSCHEDULE_TEST_POSTGRES_URL", ""),
    })


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """The side-by-side benchmarks; prints the table and writes docs/performance.md.

    ``nox -s bench -- --quick`` for small N; other arguments go to ``benchmarks/run.py``
    (``--only B1,B2``, ``--reps 5``, ``--no-write``). Runs on the current interpreter, with its
    installed packages, so a fresh clone needs only ``pip install -e '.[bench]'`` once.
    """
    session.run(sys.executable, "benchmarks/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: ``mkdocs build --strict`` into site/ (any warning or broken link fails)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})
