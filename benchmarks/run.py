"""Run the benchmarks side by side and print (and write) one table of figures and ratios.

    python benchmarks/run.py            # the full run (N = 10,000; 1,000,000 stored for B5)
    python benchmarks/run.py --quick    # small N, a minute or two
    python benchmarks/run.py --only B1,B2 --reps 5

Every figure comes from a fresh child process on a fresh file in a temporary directory; the
variants of one measure run interleaved (ours, reference, ours, reference, ...) and each figure
is the median of the repetitions. A ratio is the median of the per-repetition ratios, each taken
between runs made moments apart, so machine noise touches both sides alike. Nothing here fails a
build: the table says which targets were met.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The callschedule measured: this checkout's, or another's named by CALLSCHEDULE_BENCH_SRC.
SRC = Path(os.environ.get("CALLSCHEDULE_BENCH_SRC", ROOT / "src")).resolve()
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SRC))

from _common import machine, median, versions  # noqa: E402

CHILD_TIMEOUT = 300


@dataclass
class Variant:
    """One thing to time: ``module.function`` called with ``kwargs`` in a child process."""

    key: str
    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    available: Callable[[], str | None] = lambda: None  # a reason to skip, or None


@dataclass
class Row:
    """One line of the table."""

    measure: str
    what: str
    ours: str
    reference: str
    ratio: str
    target: str
    verdict: str


@dataclass
class Measure:
    """A measure: the variants to run each repetition, and how to turn their results into rows."""

    id: str
    title: str
    variants: list[Variant]
    rows: Callable[[dict[str, list[dict[str, Any]]]], list[Row]]
    reps: int | None = None  # None: the run's default
    prepare: Variant | None = None  # run once before the repetitions (a shared fixture)
    opt_in: bool = False  # run only when named by --only (an analysis, not part of the table)


# -- running children --------------------------------------------------------------------------


def run_child(variant: Variant, workdir: Path) -> dict[str, Any]:
    """Run one variant in a fresh interpreter; its figures, or ``{"error": ...}``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HERE), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        str(HERE / "run.py"),
        "--child",
        variant.target,
        json.dumps(variant.kwargs),
        str(workdir),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}


def child_main(target: str, kwargs_json: str, workdir: str) -> None:
    """The child side: import the case, run it, print its result."""
    from _common import emit

    module_name, func_name = target.rsplit(".", 1)
    func = getattr(importlib.import_module(module_name), func_name)
    emit(func(Path(workdir), **json.loads(kwargs_json)))


def run_measure(measure: Measure, reps: int, base: Path, log: Callable[[str], None]) -> list[Row]:
    """Run the measure's variants interleaved ``reps`` times; its rows."""
    results: dict[str, list[dict[str, Any]]] = {v.key: [] for v in measure.variants}
    skipped = {v.key: v.available() for v in measure.variants}
    shared = base / f"{measure.id}-shared"
    shared.mkdir(exist_ok=True)
    if measure.prepare is not None:
        started = time.perf_counter()
        prepared = run_child(_with_base(measure.prepare, shared), shared)
        log(
            f"  {measure.id} prepare: {prepared.get('error') or _short(prepared)} "
            f"({time.perf_counter() - started:.1f}s)"
        )
        if "error" in prepared:
            skipped = {key: f"prepare failed: {prepared['error']}" for key in skipped}
    for rep in range(measure.reps or reps):
        for variant in measure.variants:
            if skipped[variant.key]:
                results[variant.key].append({"error": skipped[variant.key]})
                continue
            workdir = Path(tempfile.mkdtemp(prefix=f"{measure.id}-{variant.key}-", dir=base))
            started = time.perf_counter()
            result = run_child(_with_base(variant, shared), workdir)
            _rmtree(workdir)
            results[variant.key].append(result)
            shown = result.get("error") or _short(result)
            log(f"  {measure.id} {variant.key} rep {rep + 1}: {shown} ({time.perf_counter() - started:.1f}s)")
    _rmtree(shared)
    return measure.rows(results)


def _with_base(variant: Variant, shared: Path) -> Variant:
    """The variant with ``{shared}`` in its string arguments replaced by the measure's shared folder."""
    kwargs = {
        k: v.replace("{shared}", str(shared)) if isinstance(v, str) else v for k, v in variant.kwargs.items()
    }
    return Variant(variant.key, variant.target, kwargs, variant.available)


def _short(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in result.items() if not isinstance(v, list | dict))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.3g}"
    return str(value)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- turning results into rows ----------------------------------------------------------------


def figure(results: list[dict[str, Any]], key: str) -> float:
    """The median of ``key`` over the repetitions that produced it."""
    return median(r[key] for r in results if key in r)


def ratio(
    ours: list[dict[str, Any]], ref: list[dict[str, Any]], key: str, ref_key: str | None = None
) -> float:
    """The median of per-repetition ratios ours/ref (pairs taken moments apart)."""
    pairs = [
        o[key] / r[ref_key or key]
        for o, r in zip(ours, ref, strict=False)
        if key in o and (ref_key or key) in r and r[ref_key or key]
    ]
    return median(pairs)


def errors(*runs: list[dict[str, Any]]) -> str:
    """The first error among these runs, if any."""
    for results in runs:
        for r in results:
            if "error" in r:
                return str(r["error"])
    return ""


def num(value: float, unit: str = "") -> str:
    """A figure for the table."""
    if value != value:  # NaN
        return "n/a"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.3g}{unit}"


def verdict(ok: bool | None) -> str:
    """met / missed / n/a."""
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def throughput_rows(
    mid: str,
    what: str,
    ours_key: str,
    res: dict[str, list[dict[str, Any]]],
    refs: list[tuple[str, str, float, str]],
) -> list[Row]:
    """Rows comparing one throughput of ours against references: (key, label, minimum ratio, target)."""
    ours = res[ours_key]
    rows = []
    for ref_key, label, minimum, target in refs:
        ref = res[ref_key]
        r = ratio(ours, ref, "ops_per_s")
        err = errors(ours, ref)
        bounded = (
            " (bounded run: rate of what it did in the time)" if any("partial" in x for x in ref) else ""
        )
        rows.append(
            Row(
                mid,
                what,
                num(figure(ours, "ops_per_s"), "/s"),
                f"{label}: {num(figure(ref, 'ops_per_s'), '/s')}{bounded}",
                f"{r:.2f}x" if r == r else "n/a",
                target,
                f"error: {err}" if err and r != r else verdict(None if r != r else r >= minimum),
            )
        )
    return rows


def analysis(rows: list[Row]) -> list[Row]:
    """Rows of an analysis: figures to read, with no target of their own to meet."""
    return [dataclasses.replace(row, verdict="analysis") for row in rows]


def _needs(*modules: str) -> Callable[[], str | None]:
    """A check that the modules are importable: None, or the reason to skip."""

    def check() -> str | None:
        import importlib.util

        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"not installed: {', '.join(missing)}" if missing else None

    return check


def http_rows(n: int, res: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """B6: requests per second against the bare endpoint's, with p99 latencies and errors."""
    ours, bare = res["lib"], res["bare"]
    r = ratio(ours, bare, "req_per_s")
    err = errors(ours, bare)
    bad = sum(x.get("non_2xx", 0) for x in ours + bare)

    def cell(results: list[dict[str, Any]]) -> str:
        return f"{num(figure(results, 'req_per_s'), '/s')}, p99 {num(figure(results, 'p99_ms'), 'ms')}"

    return [
        Row(
            "B6",
            f"PUT /api/calls/{{id}}/schedule under uvicorn, SQLite FULL, 16 connections, {n:,} requests"
            + (f" ({bad} non-2xx answers)" if bad else ""),
            cell(ours),
            f"bare Starlette endpoint (same JSON in and out): {cell(bare)}",
            f"{r:.2f}x" if r == r else "n/a",
            ">= 0.50x req/s",
            f"error: {err}" if err and r != r else verdict(None if r != r else r >= 0.5 and not bad),
        )
    ]


def _has_worker() -> str | None:
    from callschedule import CallScheduler

    return None if hasattr(CallScheduler, "worker") else "no worker in this version of callschedule"


def lateness_cell(results: list[dict[str, Any]]) -> str:
    """p50 / p99 / max lateness, misses and duplicates (summed over the repetitions)."""
    misses = sum(r.get("misses", 0) for r in results)
    dups = sum(r.get("duplicates", 0) for r in results)
    cell = (
        f"p50 {num(figure(results, 'p50_ms'), 'ms')} / p99 {num(figure(results, 'p99_ms'), 'ms')} / "
        f"max {num(figure(results, 'max_ms'), 'ms')}; {misses} missed, {dups} duplicated"
    )
    partial = [r["partial"] for r in results if "partial" in r]
    if partial:
        cell += f"; stopped early (bounded): {partial[0]}"
    if any("claimed_events" in r for r in results):
        claimed = min(r.get("claimed_events", 0) for r in results)
        completed = min(r.get("completed_events", 0) for r in results)
        cell += f"; events: {claimed:,} claimed, {completed:,} completed"
    return cell


def _clean(results: list[dict[str, Any]], n: int) -> bool:
    """No misses, no duplicates and (for callschedule) every claim and completion logged."""
    return all(
        r.get("misses", 1) == 0
        and r.get("duplicates", 1) == 0
        and r.get("claimed_events", n) >= n
        and r.get("completed_events", n) >= n
        for r in results
    )


def b3_rows(n: int, threads: int, res: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """B3: lateness of calls due over 2 s, ours against APScheduler's."""
    ours, ref = res["lib"], res["aps"]
    r = ratio(ours, ref, "p99_ms")
    err = errors(ours, ref)
    ok = None if r != r else (r <= 1.0 and _clean(ours, n))
    return [
        Row(
            "B3",
            f"{n:,} calls due over 2 s (whole seconds), one worker, {threads} threads: lateness",
            lateness_cell(ours),
            f"APScheduler: {lateness_cell(ref)}",
            f"p99 {r:.2f}x" if r == r else "n/a",
            "p99 <= APScheduler's; 0 missed, 0 duplicated",
            f"error: {err}" if err else verdict(ok),
        )
    ]


def b4_rows(n: int, threads: int, res: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """B4: calls/s and p99 lateness for calls due at one instant."""
    ours, ref = res["lib"], res["aps"]
    r = ratio(ours, ref, "calls_per_s")
    lat = ratio(ours, ref, "p99_ms")
    err = errors(ours, ref)
    rate = figure(ours, "calls_per_s")
    return [
        Row(
            "B4",
            f"{n:,} calls due at one instant, no-op executor, one worker, {threads} threads: calls/s "
            "until all completed with their events",
            num(rate, "/s"),
            f"APScheduler: {num(figure(ref, 'calls_per_s'), '/s')}"
            + ("" if not any("partial" in x for x in ref) else " (bounded run, rate of the jobs that ran)"),
            f"{r:.2f}x" if r == r else "n/a",
            ">= 8,000/s and >= 3x",
            f"error: {err}"
            if err
            else verdict(None if r != r else r >= 3 and rate >= 8000 and _clean(ours, n)),
        ),
        Row(
            "B4",
            "the same: lateness",
            lateness_cell(ours),
            f"APScheduler: {lateness_cell(ref)}",
            f"p99 {lat:.2f}x" if lat == lat else "n/a",
            "p99 <= APScheduler's / 3",
            f"error: {err}" if err else verdict(None if lat != lat else lat <= 1 / 3),
        ),
    ]


def b5_rows(n: int, stored: int, res: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """B5: B2 and B4 among ``stored`` calls against the same with ``n`` stored; the worker's RSS."""
    rows = []
    for what, big, small, key, unit in (
        (f"B2 (reschedule {n:,})", "b2-big", "b2-small", "ops_per_s", "/s"),
        (f"B4 ({n:,} due at once)", "b4-big", "b4-small", "calls_per_s", "/s"),
    ):
        r = ratio(res[big], res[small], key)
        err = errors(res[big], res[small])
        rows.append(
            Row(
                "B5",
                f"{what} with {stored:,} calls stored",
                num(figure(res[big], key), unit),
                f"the same with {n:,} stored: {num(figure(res[small], key), unit)}",
                f"{r:.2f}x" if r == r else "n/a",
                ">= 0.80x",
                f"error: {err}" if err else verdict(None if r != r else r >= 0.8),
            )
        )
    r = ratio(res["b4-big"], res["b4-small"], "peak_rss_mib")
    err = errors(res["b4-big"], res["b4-small"])
    rows.append(
        Row(
            "B5",
            f"worker process peak RSS, B4 with {stored:,} calls stored",
            num(figure(res["b4-big"], "peak_rss_mib"), " MiB"),
            f"with {n:,} stored: {num(figure(res['b4-small'], 'peak_rss_mib'), ' MiB')}",
            f"{r:.2f}x" if r == r else "n/a",
            "flat (<= 1.20x)",
            f"error: {err}" if err else verdict(None if r != r else r <= 1.2),
        )
    )
    return rows


def b7_rows(n: int, threads: int, res: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """B7: B4 on PostgreSQL, 4 worker processes against 1."""
    one, four = res["1"], res["4"]
    r = ratio(four, one, "calls_per_s")
    err = errors(one, four)
    dups = sum(x.get("duplicates", 0) for x in one + four)
    clean = _clean(one, n) and _clean(four, n)
    return [
        Row(
            "B7",
            f"PostgreSQL: B4 ({n:,} due at one instant, {threads} threads per worker) with 4 worker "
            "processes against 1",
            f"4 workers: {num(figure(four, 'calls_per_s'), '/s')}, p99 {num(figure(four, 'p99_ms'), 'ms')}; "
            f"{dups} duplicated",
            f"1 worker: {num(figure(one, 'calls_per_s'), '/s')}, p99 {num(figure(one, 'p99_ms'), 'ms')}",
            f"{r:.2f}x" if r == r else "n/a",
            "> 1x (grows with workers); 0 duplicated",
            f"error: {err}" if err else verdict(None if r != r else r > 1.0 and clean),
        )
    ]


# -- the measures -------------------------------------------------------------------------------


def measures(quick: bool) -> list[Measure]:
    """Every measure, sized for a full or a quick run."""
    n = 2_000 if quick else 10_000
    found: list[Measure] = []

    found.append(
        Measure(
            "B1",
            f"create {n:,} calls",
            [
                Variant("lib", "cases_store.b1_lib", {"n": n}),
                Variant("raw", "cases_store.b1_raw", {"n": n}),
                Variant("aps", "cases_store.b1_aps", {"n": n}),
                Variant("lib-normal", "cases_store.b1_lib", {"n": n, "synchronous": "normal"}),
                Variant("raw-normal", "cases_store.b1_raw", {"n": n, "synchronous": "normal"}),
            ],
            lambda res: (
                throughput_rows(
                    "B1",
                    f"create {n:,} calls, synchronous=FULL (default)",
                    "lib",
                    res,
                    [
                        ("raw", "raw sqlite3, FULL", 0.7, ">= 0.70x"),
                        ("aps", "APScheduler add_job", 3.0, ">= 3x"),
                    ],
                )
                + throughput_rows(
                    "B1",
                    f"create {n:,} calls, synchronous=NORMAL",
                    "lib-normal",
                    res,
                    [("raw-normal", "raw sqlite3, NORMAL", 0.7, ">= 0.70x")],
                )
            ),
        )
    )
    found.append(
        Measure(
            "B2",
            f"reschedule {n:,} calls one by one",
            [
                Variant("lib", "cases_store.b2_lib", {"n": n}),
                Variant("raw", "cases_store.b2_raw", {"n": n}),
                Variant("aps", "cases_store.b2_aps", {"n": n}),
                Variant("lib-normal", "cases_store.b2_lib", {"n": n, "synchronous": "normal"}),
                Variant("raw-normal", "cases_store.b2_raw", {"n": n, "synchronous": "normal"}),
            ],
            lambda res: (
                throughput_rows(
                    "B2",
                    f"reschedule {n:,} calls one by one, FULL (default)",
                    "lib",
                    res,
                    [
                        ("raw", "raw sqlite3, FULL", 0.7, ">= 0.70x"),
                        ("aps", "APScheduler reschedule_job", 3.0, ">= 3x"),
                    ],
                )
                + throughput_rows(
                    "B2",
                    f"reschedule {n:,} calls one by one, NORMAL",
                    "lib-normal",
                    res,
                    [("raw-normal", "raw sqlite3, NORMAL", 0.7, ">= 0.70x")],
                )
            ),
        )
    )
    found.append(
        Measure(
            "B2f",
            f"B2's floor: {n:,} reschedules written straight through (an analysis)",
            [
                Variant("lib", "cases_store.b2_lib", {"n": n}),
                Variant("floor", "cases_store.b2_floor", {"n": n}),
                Variant("raw", "cases_store.b2_raw", {"n": n}),
            ],
            lambda res: analysis(
                throughput_rows(
                    "B2f",
                    f"the same work as reschedule with nothing around it, {n:,} one by one, FULL",
                    "floor",
                    res,
                    [("raw", "raw sqlite3, FULL", 0.7, "(B2's: >= 0.70x)")],
                )
                + throughput_rows(
                    "B2f",
                    f"reschedule {n:,} calls one by one, FULL",
                    "lib",
                    res,
                    [("floor", "the straight-through floor", 1.0, "(what is left to cut)")],
                )
            ),
            opt_in=True,
        )
    )
    found.append(
        Measure(
            "B2c",
            f"reschedule {n:,} calls from 32 threads",
            [
                Variant("lib", "cases_store.b2c_lib", {"n": n, "threads": 32}),
                Variant("raw", "cases_store.b2_raw", {"n": n}),
                Variant("lib-async", "cases_store.b2c_async_lib", {"n": n, "tasks": 32}),
            ],
            lambda res: (
                throughput_rows(
                    "B2c",
                    f"reschedule {n:,} calls from 32 threads, FULL (group commit)",
                    "lib",
                    res,
                    [("raw", "raw sqlite3 one by one, FULL", 1.0, "> 1x")],
                )
                + throughput_rows(
                    "B2c",
                    f"reschedule {n:,} calls from 32 asyncio tasks on one event loop "
                    "(reschedule_async), FULL (group commit)",
                    "lib-async",
                    res,
                    [("raw", "raw sqlite3 one by one, FULL", 1.0, "> 1x")],
                )
            ),
        )
    )
    threads = 100  # the same for both: our worker's concurrency, APScheduler's thread pool
    n3 = 500 if quick else 2_000
    found.append(
        Measure(
            "B3",
            f"{n3:,} calls due over 2 s",
            [
                Variant(
                    "lib", "cases_worker.lib", {"n": n3, "spread": 2, "concurrency": threads}, _has_worker
                ),
                Variant("aps", "cases_worker.aps", {"n": n3, "spread": 2, "threads": threads}),
            ],
            lambda res: b3_rows(n3, threads, res),
        )
    )
    found.append(
        Measure(
            "B4",
            f"{n:,} calls due at one instant",
            [
                Variant(
                    "lib", "cases_worker.lib", {"n": n, "spread": 0, "concurrency": threads}, _has_worker
                ),
                Variant("aps", "cases_worker.aps", {"n": n, "spread": 0, "threads": threads}),
            ],
            lambda res: b4_rows(n, threads, res),
        )
    )
    stored = 100_000 if quick else 1_000_000
    base = "{shared}/base.db"
    found.append(
        Measure(
            "B5",
            f"B2 and B4 with {stored:,} calls stored",
            [
                Variant("b2-small", "cases_worker.lib_reschedule", {"n": n, "stored": n}),
                Variant("b2-big", "cases_worker.lib_reschedule", {"n": n, "base": base}),
                Variant(
                    "b4-small", "cases_worker.lib", {"n": n, "spread": 0, "concurrency": threads}, _has_worker
                ),
                Variant(
                    "b4-big",
                    "cases_worker.lib",
                    {"n": n, "spread": 0, "concurrency": threads, "base": base, "stored": stored},
                    _has_worker,
                ),
            ],
            lambda res: b5_rows(n, stored, res),
            prepare=Variant("prepare", "cases_worker.build_base", {"path": base, "stored": stored}),
        )
    )

    def _pg() -> str | None:
        import cases_pg

        return cases_pg.unavailable()

    found.append(
        Measure(
            "B7",
            f"PostgreSQL: {n:,} calls due at one instant, 1 and 4 worker processes",
            [
                Variant("1", "cases_pg.b7", {"n": n, "workers": 1, "concurrency": threads}, _pg),
                Variant("4", "cases_pg.b7", {"n": n, "workers": 4, "concurrency": threads}, _pg),
            ],
            lambda res: b7_rows(n, threads, res),
        )
    )
    nh = 2_000 if quick else 10_000
    found.append(
        Measure(
            "B6",
            f"PUT /api/calls/{{id}}/schedule, {nh:,} requests over 16 connections",
            [
                Variant(
                    "lib",
                    "cases_http.b6",
                    {"n": nh, "server": "callschedule"},
                    _needs("uvicorn", "starlette"),
                ),
                Variant("bare", "cases_http.b6", {"n": nh, "server": "bare"}, _needs("uvicorn", "starlette")),
            ],
            lambda res: http_rows(nh, res),
        )
    )
    return sorted(found, key=lambda m: m.id)


# -- the report -----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| # | measure | callschedule | reference | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.measure} | {r.what} | {r.ours} | {r.reference} | {r.ratio} | {r.target} | {r.verdict} |"
        )
    return "\n".join(lines)


def report(rows: list[Row], *, quick: bool, reps: int, seconds: float, args: list[str]) -> str:
    """docs/performance.md: when, where, what versions, the table, how to reproduce."""
    m = machine()
    v = versions()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "nox -s bench" + (" -- " + " ".join(args) if args else "")
    return f"""# Performance

This page is written by `{command}` (`python benchmarks/run.py`); do not edit it by hand.

callschedule is measured against its references **in one run on one machine**: APScheduler
{v["apscheduler"]} with its SQLAlchemy job store on a SQLite file (the library most Python users would pick
instead, doing the same work), and the raw limit of plain `sqlite3` doing the least work our guarantee
needs (update the call and insert its event in one transaction, WAL, the same synchronous setting).
Each figure is the median of {reps} repetitions; each ratio is the median of the per-repetition ratios,
the two sides of each measured moments apart, each in a fresh process on a fresh file.
{"**Quick mode** (small N): indicative only." if quick else ""}

- Date: {now}; the run took {seconds / 60:.1f} min
- Machine: {m["cores"]} cores ({m["cpu"]}), {m["memory_gib"]} GiB memory, {m["os"]}
- Python {m["python"]}, SQLite {m["sqlite"]}
- Versions: {", ".join(f"{k} {val}" for k, val in v.items())}

{table(rows)}

## What each measure does
- **B1**: `create_call` one after another (every call acknowledged only once committed). Raw:
  `BEGIN IMMEDIATE; INSERT call; INSERT event; COMMIT` per call on the same tables and indexes.
  APScheduler: `add_job` with a date trigger on a started, paused scheduler.
- **B2**: `reschedule` of stored calls one after another (a read, the rules, a conditional update and an
  event, one commit). Raw: `UPDATE ... WHERE status = 'pending'` and `INSERT event`, one commit each.
  APScheduler: `reschedule_job` with a new date trigger.
- **B2f** (an analysis, run only with `--only B2f`): B2's floor. The same reschedules written
  straight through in the benchmark (`cases_store.b2_floor`: the library's checks, rules, model,
  event and statements, nothing around them), against the raw loop and against `reschedule`.
- **B2c**: 32 threads share one scheduler, each rescheduling its slice; each call returns only after
  its change is committed, so commits are shared (group commit), not skipped. The second row does
  the same from 32 asyncio tasks on one event loop (`reschedule_async`), as an async application
  would: the changes of one turn of the loop share a commit, run by a thread of the store.
- **B3**: calls due over 2 s, one worker with a no-op executor that notes when it starts each call;
  lateness = that moment minus the due time. A call's `scheduled_timestamp` is whole seconds, so
  "over 2 s" is half the calls due at each of two seconds, on both sides. callschedule writes a claim
  and an outcome event for each call (counted in the table); APScheduler writes no log.
- **B4**: calls due at one instant; calls/s = calls / (time the last completion was committed - due
  time). APScheduler: the last job function's start; its run is bounded in time, and when bounded its
  rate is that of the jobs that ran (which flatters it). Both get the same thread count: our worker's
  `concurrency`, APScheduler's `ThreadPoolExecutor`.
- **B5**: B2 and B4 again with a table of 1,000,000 calls due later (bulk-loaded once with
  `executemany` and copied, then flushed to disk, for each repetition), against the same with only
  the 10,000 measured calls stored. RSS is the peak resident memory of the worker's process (the
  setup runs in other processes).
- **B6**: the documented endpoint under uvicorn (one process, access log off) on a SQLite file at the
  default durability, and a bare Starlette endpoint at the same path that parses the same JSON and
  answers a small JSON body without a database; both loaded by the same bounded load generator
  (`benchmarks/_loadgen.py`, raw asyncio sockets, 16 keep-alive connections) on 127.0.0.1, after a
  warm-up. Each call is moved about ten times over the run.
- **B7**: B4 on PostgreSQL (the server named by `CALLSCHEDULE_BENCH_POSTGRES_URL` or
  `CALLSCHEDULE_TEST_POSTGRES_URL`, a fresh schema per run), with 1 and with 4 worker processes; done
  when the count of completed calls reaches N; duplicates counted across the processes.
- APScheduler's runs are bounded in time (12 s for adding or moving jobs, 15 s past the due time for
  firing them) so that the whole run stays within ten minutes; a bounded figure is the rate of what it
  did in that time, and its lateness that of the jobs that ran.
- SQLite durability: our default is `synchronous=FULL` (an acknowledged change survives power loss);
  `?synchronous=normal` in the URL trades that for speed, and is compared with raw NORMAL. APScheduler
  runs on SQLAlchemy's default SQLite file (rollback journal, FULL).

## What limits the figures
- With `synchronous=FULL` each commit waits for an fsync; on a machine shared with other work its
  latency swings two- to five-fold between repetitions, so read the ratios (both sides measured
  moments apart) rather than the absolute rates.
- `synchronous=NORMAL` (opt-in): without the fsync a change costs about 45 µs inside SQLite, and the
  library adds about 50 µs of Python (validation, the rules, the event, the model objects, the
  group-commit handshake) that the raw loop, which runs the bare statements, does not pay.
- FULL costs the library more than NORMAL does against the raw loop (on a 2-core VM today, about
  110 µs a change against 65 µs): each commit's fsync puts the calling thread to sleep, the
  virtual CPU idles, and everything that follows runs slower until its caches are warm again.
  Measured per part of one reschedule (medians, FULL against NORMAL): the read of the call
  26 µs against 12, building the update's rows 12 against 7.5, the UPDATE and INSERT 17 against
  11, even the near-empty step after the commit 4.3 µs against 1.1. The raw loop pays the same
  fsync with far less code to run after it, so the faster a machine's fsync, the further below
  0.70x the FULL ratios fall: 0.71x on a machine whose raw FULL loop did 3,000 changes a second,
  0.65-0.70x on one doing 4,500-4,800, and on an Intel Xeon VM whose raw FULL loop did 4,200-5,600
  (2026-12-05) B1 0.61x and B2 0.53x, where an AMD EPYC VM (2,500-3,350) gave 0.74x and 0.73x the
  day before. At NORMAL on that Intel VM a reschedule cost about 260 µs against the raw loop's
  160 µs: the library's Python is the larger share there, and is what is left to cut.
- Instructions per change (callgrind, in-process, 2,000 changes at NORMAL, 2026-12-06): the raw
  create 184,000 and `create_call` 287,000; the raw reschedule 178,000 and `reschedule` 399,000,
  of which the read of the call (its SELECT and the model built from it) is 77,000. Two changes
  cut them that day: the payload check through json's C encoder and scanner (`create_call`
  313,800 to 299,300) and a change written alone, with no other in progress, committing without
  the group commit's bookkeeping (`create_call` to 286,800, `reschedule` 404,200 to 399,000).
  B1 FULL then stood at 0.65-0.71x and B2 FULL at 0.58-0.71x on an Intel Xeon VM whose raw FULL
  loop did 5,800-7,300 changes a second.
- B2's floor, measured (B2f: `python benchmarks/run.py --only B2f`, not part of the full run):
  the same reschedules written straight through (the same checks, read, rules, moved call, event,
  rows and statements, with the read inside the write transaction and nothing around them: no
  group commit, no `attrs.evolve`, no hooks or due listeners) took 346,000 instructions a change,
  and at FULL ran at 0.64x, 0.68x and 0.69x of the raw loop in three sets of 10 interleaved
  repetitions on an Intel Xeon VM (2026-12-06), `reschedule` at 0.86-0.89x of it. So the library
  is within about 12% of what its work costs, and what separates both from the raw loop is that
  work, which the raw loop does not do (read the call, apply the rules, build the event, the model
  objects and their JSON), run on caches that each fsync leaves cold. On such a machine B2 FULL
  lands around its target: 0.58x and 0.71x in two full runs that day. Writing the change as two
  statements instead, so that nothing is read first (the event by `INSERT ... SELECT` from the
  call's row, the call by `UPDATE ... RETURNING`), took more instructions: 395,000.
- Run to run on one machine the ratios swing by more than their margins: two full runs on an
  Intel Xeon VM on 2026-12-06 gave B1 FULL 0.71x and 0.67x, B2 FULL 0.58x and 0.71x, B2c with
  threads 1.47x and 0.89x, B6 0.49x and 0.50x (3 repetitions each); `--only B6 --reps 5` gave
  0.54x. More repetitions (`--reps 5`) narrow them, at twice the run's time.
- B1 depends on the ids the library makes: with random ids (UUID version 4) each create touched a
  random leaf of the primary key and of the events' index, about one more WAL frame a commit than
  the raw loop's ordered ids and twice the page reads (`strace -c`, 3,000 creates: 54,302 page
  writes against 48,346), and B1 FULL stood at 0.66-0.67x. Made ids are now UUID version 7,
  ordered by time (51,699 page writes), and B1 FULL was 0.76-0.77x on the machine of that
  measurement.
- B2 reads the call before it writes it: the rules, the status check and the event's previous
  time need it, and the raw loop, a blind conditional UPDATE, does not read. The raw loop with that
  one SELECT added before each transaction runs at 0.85x of itself (2,541 against 2,997 changes/s
  at FULL, medians of 5); inside the write transaction it was no faster (2,278/s). So B2 FULL
  landed at 0.65-0.71x from run to run on the machine of that measurement, against B1's
  0.76-0.79x.
- B2c with threads: when 32 threads each read, plan and write their own change, every SQLite call
  releases the interpreter lock, so they hand it over about 14 times a change (about 28 context
  switches a change, 40% of the CPU in the kernel waking threads), and the thread committing a
  shared transaction waits for the lock at every statement. So a thread whose change meets
  another's in progress gives it to the scheduler's event loop thread, as the second B2c row
  does from asyncio tasks: about 6 context switches a change, commits of 10-30 changes, their
  updates merged into one `UPDATE ... FROM (VALUES ...)`. What is left is the loop thread's
  Python (about 230 µs of CPU a change against 150 µs from asyncio tasks: each thread's change
  becomes a task and its answer a lock released for its thread).
- B4: a worker round writes the outcomes of the calls that finished and claims the next ones in one
  transaction (`Store.update_calls_and_claim_due`), one commit a round; what is left is about
  50 µs of Python per call on the worker's own thread (settling each outcome, its event, the
  model objects), which is the ceiling on one core.
  The 8,000 calls/s of the target are absolute, so they depend on the machine: 15,686/s on an
  Intel Xeon VM, 6,500-8,800/s from run to run on an AMD EPYC VM of the same size, where
  APScheduler was 22% slower as well; 6,900-8,300/s on an Intel Xeon VM on 2026-12-05, and
  9,400-14,000/s on one on 2026-12-06.
  Merging a round's outcome updates into one statement
  (as B6's batches do) made it no faster on the AMD EPYC VM (two interleaved runs).
- B5: among a million rows, the pages a change touches (the row, three indexes, the event index) are
  spread over the file, so each WAL checkpoint writes more pages than in a small table (about
  3.3 ms every ~100 changes against 1.5 ms): a property of the B-tree that the raw loop pays as
  well. The setup's files are flushed to disk before each measured run, so a checkpoint does not
  pay for writing back the copied table. The B2 ratio swings between runs (0.75x and 0.92x on
  the same machine a day apart); a larger page cache (64 MiB) or a memory-mapped file made no
  difference in three interleaved runs.
- B6: each request is served on the event loop (credentials, the read of the call, the rules, the
  change's statements) and awaits only the commit, which a thread of the store runs for all the
  requests of a turn of the loop (about 6 changes a commit under this load). On two cores shared
  with the load generator the loop thread is saturated on both sides, so the ratio is that of
  its CPU per request: on an Intel Xeon VM, about 150 µs for the bare endpoint against 340 µs
  for ours (0.43x). What moved it, each measured by callgrind in-process (instructions per
  request) and by interleaved runs against the commit before:
  - json's C encoder and scanner called directly for answers and bodies: 4% fewer
    instructions, +6% requests/s;
  - the endpoints as plain ASGI apps that read the scope and the body messages and send the
    envelope themselves, instead of Starlette's `Request`, `request_response` and
    `JSONResponse` (every lazy attribute of a `Request` first misses, raising and dropping an
    `AttributeError`); the documented route tried first by the router; and
    `serves_event_loop` walking the hook implementations in a plain loop:
    733,000 to 658,000 instructions (-10%), +8% requests/s and 8% less CPU per request on the
    loop thread (four interleaved runs on an AMD EPYC VM).
- B6, what is left (py-spy under load, share of the loop thread): uvicorn and h11 sending the
  answer about 26% and parsing the request about 17%, the same code as for the bare endpoint; the
  credentials 8% (a read of the key; pluggy's call machinery is about 3 µs of it); the read of
  the call 6%; the batch's statements 6%; the rest of planning, the answer's wire shape and its
  JSON about 10%. Each read from a pooled connection takes and drops a lock on the WAL index
  (about 4 `fcntl` calls a request). The fsync is not the bound: at `synchronous=NORMAL` the
  server did 2,300 requests/s against 2,250 at FULL. `perf` puts 9% of the loop thread's time
  in waking the committer thread as it hands it the interpreter lock (a futex wake across the
  virtual CPUs). What made no difference (three interleaved runs each): committing inline on
  the loop; a switch interval of 1 or 50 ms; running the batch's statements on the committer
  thread; a larger page cache or a memory-mapped file (two reads after a commit took 18 µs
  against 9.8). Serving the key from memory (a test only, not shipped: it would miss a
  revocation made by another process) raised B6 by 6%.

## Reproduce
```
pip install -e '.[bench]'   # or have apscheduler 3.11, sqlalchemy and psutil importable
nox -s bench                # full run, writes this page; `nox -s bench -- --quick` for small N
python benchmarks/run.py --only B1,B2 --reps 5 --no-write
python benchmarks/run.py --only B2f --reps 10 --no-write   # B2's floor (not in the full run)
```
"""


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(*argv[1:4])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small N (a couple of minutes)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per figure (default 3)")
    parser.add_argument("--only", default="", help="comma-separated measure ids, e.g. B1,B2c")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    chosen = [m for m in measures(args.quick) if m.id.upper() in only or not (only or m.opt_in)]
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="callschedule-bench-") as base:
        for measure in chosen:
            print(f"{measure.id}: {measure.title}", flush=True)
            rows.extend(run_measure(measure, args.reps, Path(base), lambda s: print(s, flush=True)))
    seconds = time.perf_counter() - started
    print()
    print(table(rows))
    print(f"\n({seconds:.0f} s)")
    if not args.no_write:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(rows, quick=args.quick, reps=args.reps, seconds=seconds, args=argv))
        print(f"written to {out}")


if __name__ == "__main__":
    main()
