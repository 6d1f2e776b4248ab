"""`recip status` / `recip report` as a user runs them: fresh processes, then in-process.

    python -m bench.cli_bench [--runs 1000] [--metrics 1000000] [--rounds 7] [--pg-url URL]
                              [--reuse-sqlite PATH] [--reuse-pg-db NAME]

Builds the database of bench/report_bench.py (a real spec of `runs / 10` steps x 10 seeds
submitted, claimed, started, heartbeated and finished through `QueueRepo`, then `metrics`
rows with the names a trainer writes) on SQLite and, with --pg-url / $RECIP_TEST_PG_URL,
PostgreSQL. Then, `--rounds` times, interleaved (every command once per round, so load
changes hit all of them alike), each command as a fresh `python -m orchestrator.cli.app`
process, wall time from spawn to exit:

    python -c pass                 the interpreter alone
    recip --help                   typer + the whole app
    recip db current               the schema revision read (engine, Alembic head)
    recip status --json (empty)    an empty database: startup + schema check
    recip status STUDY / --json    the dashboard, rich table and json (decision line cached)
    recip status STUDY (cold)      the same with an empty decision cache: the first status
                                   after a result changed computes the line (scipy)
    recip report STUDY / -f json   the report, rich table and json

and the same status/report commands in one warm process (the old measurement), plus the
cost of the schema-revision check today (`import alembic` + the script parse, fresh).
Prints a table with the load average; writes bench/results/cli.json. Target: each
status/report command < 1 s as a fresh process at 1,000 runs / 1M metric rows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "cli.json"
TARGET_MS = 1000.0
STUDY = "status_bench"
TIMED = ("status", "status_cold", "status_json", "report", "report_json")
CPU_MS: dict[str, list[float]] = {}  # argv|code -> CPU ms of each fresh run


def commands(url: str, empty_url: str) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "orchestrator.cli.app"]
    return {
        "python": [sys.executable, "-c", "pass"],
        "help": [*cli, "--help"],
        "db_current": [*cli, "db", "current", "--db", url],
        "empty_status_json": [*cli, "status", "--json", "--db", empty_url],
        "status": [*cli, "status", STUDY, "--db", url],
        "status_cold": [*cli, "status", STUDY, "--db", url],
        "status_json": [*cli, "status", STUDY, "--json", "--db", url],
        "report": [*cli, "report", STUDY, "--db", url],
        "report_json": [*cli, "report", STUDY, "--format", "json", "--db", url],
        "revision_check": [sys.executable, "-c",
                           "from orchestrator.queue import migrate; migrate.head()"],
    }


def fresh(argv: list[str], code: str | None = None, *, cold: bool = False) -> float:
    """Wall ms of one fresh process (its output discarded); raises on a non-zero exit.
    `code`: run it with that checkout first on PYTHONPATH instead (the --base-code run).
    `cold`: with an empty decision cache (orchestrator/cli/decision_cache.py), so the
    status pays for the statistics as the first one after a result changed does."""
    env = {**os.environ, "COLUMNS": "100"}
    if code is not None:
        env["PYTHONPATH"] = code
    if cold:
        env["RECIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="recip-cold-")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                          cwd=code)  # `-m` puts the cwd first on sys.path
    ms = 1000 * (time.perf_counter() - t)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time (user + sys) of the child: far less sensitive to a loaded machine than wall
    CPU_MS.setdefault(" ".join(argv) + f"|{code}|{cold}", []).append(
        1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-4:])} exited {proc.returncode}: "
                           f"{proc.stderr.decode()[-300:]}")
    return ms


def in_process(url: str, rounds: int) -> dict[str, float]:
    from orchestrator.cli.app import run as cli

    args = {"status": ["status", STUDY], "status_json": ["status", STUDY, "--json"],
            "report": ["report", STUDY], "report_json": ["report", STUDY, "--format", "json"]}
    out: dict[str, float] = {}
    for name, argv in args.items():
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                rc = cli([*argv, "--db", url])
            times.append(1000 * (time.perf_counter() - t))
            assert rc == 0, f"{argv} failed"
        out[name] = round(statistics.median(times), 1)
    return out


def measure(url: str, empty_url: str, rounds: int,
            base: tuple[str, str] | None = None) -> dict[str, Any]:
    """Fresh-process medians; with `base` = (checkout, its database URL), every command
    also runs with that checkout in the same round, right after (ratios side by side)."""
    cmds = commands(url, empty_url)
    base_cmds = commands(base[1], empty_url) if base else {}
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    base_samples: dict[str, list[float]] = {k: [] for k in base_cmds}
    for k, argv in cmds.items():  # one warm-up round: page cache, .pyc files
        fresh(argv, cold=k == "status_cold")
        if base and k not in ("empty_status_json", "db_current"):
            fresh(base_cmds[k], base[0])
    for r in range(rounds):
        order = list(cmds)
        order = order[r % len(order):] + order[:r % len(order)]  # rotate the order
        print(f"  round {r + 1}/{rounds} ...", file=sys.stderr, flush=True)
        for k in order:
            first_base = base is not None and r % 2 == 1  # alternate which goes first
            if first_base and base and k not in ("empty_status_json", "db_current"):
                base_samples[k].append(fresh(base_cmds[k], base[0]))
            samples[k].append(fresh(cmds[k], cold=k == "status_cold"))
            if not first_base and base and k not in ("empty_status_json", "db_current"):
                base_samples[k].append(fresh(base_cmds[k], base[0]))
    def cpu(argv: list[str], code: str | None, cold: bool = False) -> float:
        return round(statistics.median(
            CPU_MS[" ".join(argv) + f"|{code}|{cold}"][1:] or [math.nan]), 1)

    out: dict[str, Any] = {
        "cpu_ms": {k: cpu(cmds[k], None, k == "status_cold") for k in cmds},
        "fresh_ms": {k: round(statistics.median(v), 1) for k, v in samples.items()},
        "fresh_min_ms": {k: round(min(v), 1) for k, v in samples.items()},
        "in_process_ms": in_process(url, rounds)}
    if base:
        out["base_cpu_ms"] = {k: cpu(base_cmds[k], base[0]) for k, v in base_samples.items() if v}
        out["base_fresh_ms"] = {k: round(statistics.median(v), 1)
                                for k, v in base_samples.items() if v}
        out["ratio_new_over_base"] = {
            k: round(statistics.median(n / b for n, b in zip(samples[k], v, strict=True)), 3)
            for k, v in base_samples.items() if v}
    return out


@contextlib.contextmanager
def sqlite_dbs(reuse: str | None) -> Iterator[tuple[str, str, bool]]:
    from orchestrator.queue import migrate

    with tempfile.TemporaryDirectory(prefix="recip-cli-bench-") as d:
        empty = f"sqlite:///{d}/empty.db"
        migrate.upgrade(empty)
        if reuse:
            url = f"sqlite:///{reuse}"
            migrate.upgrade(url)
            yield url, empty, os.path.getsize(reuse) > 0 and _has_study(url)
            return
        url = f"sqlite:///{d}/bench.db"
        migrate.upgrade(url)
        yield url, empty, False


@contextlib.contextmanager
def pg_dbs(server: str, reuse: str | None) -> Iterator[tuple[str, str, bool]]:
    import sqlalchemy as sa

    from bench.status_bench import pg_db
    from orchestrator.queue import migrate
    from orchestrator.queue.db import parse_url

    with pg_db(server) as empty:
        if not reuse:
            with pg_db(server) as url:
                yield url, empty, False
            return
        base = parse_url(server)
        admin = sa.create_engine(base, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                {"n": reuse}).first():
                conn.execute(sa.text(f'CREATE DATABASE "{reuse}"'))
        admin.dispose()
        url = base.set(database=reuse).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url, empty, _has_study(url)


def _has_study(url: str) -> bool:
    from orchestrator.queue.repo import QueueRepo

    with QueueRepo.open(url) as repo:
        return STUDY in repo.study_names()


def build(url: str, runs: int, metrics: int) -> dict[str, Any]:
    from bench.report_bench import fill_metrics
    from bench.status_bench import populate

    built = populate(url, runs, 0)
    built.update(fill_metrics(url, metrics))
    if url.startswith("postgresql"):
        import sqlalchemy as sa

        from orchestrator.queue.db import make_engine

        engine = make_engine(url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))  # as autovacuum would leave it
        engine.dispose()
    return built


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--metrics", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="100,000 metric rows, 3 rounds")
    ap.add_argument("--pg-url", default=os.environ.get("RECIP_TEST_PG_URL"))
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--reuse-sqlite", help="build into / reuse this SQLite file (kept)")
    ap.add_argument("--reuse-pg-db", help="build into / reuse this PostgreSQL database (kept)")
    ap.add_argument("--base-code", help="another checkout to time side by side (PYTHONPATH)")
    ap.add_argument("--base-sqlite", help="its SQLite database (a copy at its schema)")
    ap.add_argument("--base-pg-db", help="its PostgreSQL database (a copy at its schema)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    # the processes' decision cache: the bench's own, never ~/.cache (the warm-up fills it)
    os.environ["RECIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="recip-bench-cache-")
    if args.quick:
        args.metrics, args.rounds = min(args.metrics, 100_000), min(args.rounds, 3)
    logging.getLogger("orchestrator").setLevel(logging.ERROR)

    backends: list[tuple[str, Callable[[], contextlib.AbstractContextManager[tuple[str, str, bool]]]]] = []
    if not args.no_sqlite:
        backends.append(("sqlite", lambda: sqlite_dbs(args.reuse_sqlite)))
    if args.pg_url:
        backends.append(("postgres", lambda: pg_dbs(args.pg_url, args.reuse_pg_db)))
    results = []
    for backend, make in backends:
        with make() as (url, empty, ready):
            built: dict[str, Any] = {"reused": ready}
            if not ready:
                print(f"{backend}: building {args.runs} runs, {args.metrics:,} metric rows ...",
                      file=sys.stderr, flush=True)
                built.update(build(url, args.runs, args.metrics))
            load0 = os.getloadavg()
            base = None
            if args.base_code and backend == "sqlite" and args.base_sqlite:
                base = (args.base_code, f"sqlite:///{args.base_sqlite}")
            if args.base_code and backend == "postgres" and args.base_pg_db:
                from orchestrator.queue.db import parse_url

                base = (args.base_code, parse_url(args.pg_url).set(
                    database=args.base_pg_db).render_as_string(hide_password=False))
            m = measure(url, empty, args.rounds, base)
            results.append({"backend": backend, "runs": args.runs, "metrics": args.metrics,
                            **built, **m, "load_before": load0, "load_after": os.getloadavg()})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # partial results

    names = list(commands("x", "y"))
    print(f"fresh processes, median of {args.rounds} interleaved rounds (ms); "
          f"{args.runs} runs, {args.metrics:,} metric rows")
    print(f"{'command':20} " + " ".join(f"{r['backend']:>10}" for r in results))
    for n in names:
        print(f"{n:20} " + " ".join(f"{r['fresh_ms'][n]:>10.0f}" for r in results))
    if any("base_fresh_ms" in r for r in results):
        print("--base-code, same rounds (ms), and the median per-round ratio new/base")
        for n in names:
            print(f"{n:20} " + " ".join(
                f"{r.get('base_fresh_ms', {}).get(n, float('nan')):>10.0f}"
                f" x{r.get('ratio_new_over_base', {}).get(n, float('nan')):.2f}"
                for r in results))
    print("CPU time (user + sys) of the same fresh processes, median (ms)")
    for n in names:
        print(f"{n:20} " + " ".join(
            f"{r['cpu_ms'][n]:>10.0f}" + (f" base {r['base_cpu_ms'][n]:>6.0f}"
                                          if n in r.get("base_cpu_ms", {}) else "")
            for r in results))
    print("in one warm process (ms)")
    for n in results[0]["in_process_ms"] if results else ():
        print(f"{n:20} " + " ".join(f"{r['in_process_ms'][n]:>10.0f}" for r in results))
    for r in results:
        print(f"{r['backend']}: load average {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}"
              f" on {os.cpu_count()} CPUs")
    ok = all(r["fresh_ms"][n] < TARGET_MS for r in results for n in TIMED)
    print(f"target fresh-process status/report < {TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'}")
    from bench.status_bench import write_results

    write_results(args.out, {"bench": "cli", "target_ms": TARGET_MS, "met": ok,
                             "rounds": args.rounds}, results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
