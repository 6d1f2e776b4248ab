"""Queue benchmark: claim latency and throughput, and dashboard snapshot time.

    python -m bench.queue_bench [--quick] [--pg-url URL]

Claims: 1, 8 and 32 concurrent claimers (threads, each with its own engine and connection)
drain a freshly submitted queue; p50/p99 latency of a successful claim and claims/s over the
whole drain. Snapshot: `QueueRepo.snapshot()` (and, when the CLI renderer is importable,
snapshot + `render_status` into a string) on a database with 1,000 runs whose attempts
carry progress, and 1,000,000 metric rows (100,000 with --quick). PostgreSQL runs in a
temporary database created on the server of --pg-url / $RECIP_BENCH_PG_URL /
$RECIP_TEST_PG_URL and dropped afterwards; without one, only SQLite runs.

Targets (design.md §7): SQLite claim p50 < 20 ms with 8 claimers; snapshot far under 1 s.
Prints a table; writes bench/results/queue.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator.core.plan import RunPlan, StudyPlan
from orchestrator.queue import migrate
from orchestrator.queue.db import parse_url, redact_url
from orchestrator.queue.repo import QueueRepo

RESULTS = Path(__file__).parent / "results" / "queue.json"
LEASE = timedelta(hours=1)


def plan(name: str, n_steps: int, n_seeds: int) -> StudyPlan:
    runs = tuple(
        RunPlan(step=f"S{i:04d}", seed=s, config={"step": i, "seed": s, "lr": 6e-4},
                config_hash=f"{name}-{i}-{s}", budget_seconds=60.0)
        for i in range(n_steps) for s in range(n_seeds)
    )
    spec = {"steps": {f"S{i:04d}": {} for i in range(n_steps)}}
    return StudyPlan(name=name, description="bench", spec_hash=name, spec=spec, runs=runs)


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values` (numpy's default linear interpolation)."""
    import numpy as np

    return float(np.quantile(np.asarray(values), q))


def _claimer(url: str, i: int, barrier: Any, out: Any) -> None:
    """One claimer process: its own interpreter, engine and connection; drains the queue."""
    try:
        repo = QueueRepo.open(url)
        repo.study_names()  # connect before the clock starts
        lat: list[float] = []
        barrier.wait(timeout=120)
        while True:
            t0 = time.perf_counter()
            got = repo.claim(f"bench-{i}", datetime.now(UTC), LEASE)
            if got is None:
                break
            lat.append(time.perf_counter() - t0)
        end = time.time()
        repo.close()
        out.put((i, lat, end, None))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        out.put((i, [], time.time(), f"{type(e).__name__}: {e}"))


def bench_claims(url: str, claimers: int, n_attempts: int) -> dict[str, Any]:
    """Drain `n_attempts` with `claimers` processes; latency of each successful claim,
    claims/s from the barrier to the last claimer's end."""
    import multiprocessing as mp

    with QueueRepo.open(url) as repo:
        seeds = 10
        repo.submit(plan(f"claims-{claimers}-{uuid.uuid4().hex[:6]}", n_attempts // seeds, seeds),
                    datetime.now(UTC))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(claimers + 1), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, i, barrier, out)) for i in range(claimers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    t0 = time.time()
    got = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    errors = [e for *_, e in got if e]
    if errors:
        raise RuntimeError(errors[0])
    wall = max(end for _, _, end, _ in got) - t0
    flat = [x for _, lat, _, _ in got for x in lat]
    assert len(flat) == n_attempts, (len(flat), n_attempts)
    return {"claimers": claimers, "claims": len(flat), "p50_ms": 1000 * pct(flat, 0.5),
            "p99_ms": 1000 * pct(flat, 0.99), "claims_per_s": len(flat) / wall}


def fill_for_snapshot(url: str, n_runs: int, n_metrics: int) -> None:
    """n_runs running attempts with progress, and n_metrics metric rows spread over them."""
    now = datetime.now(UTC)
    with QueueRepo.open(url) as repo:
        repo.submit(plan("snapshot", n_runs // 10, 10), now)
        repo.register_worker("bench-w", now, host="bench", gpu="0", pid=os.getpid())
        while (c := repo.claim("bench-w", now, LEASE)) is not None:
            repo.start(c.attempt_id, "bench-w", now, LEASE, artifact_dir=f"/runs/{c.attempt_id}",
                       code_sha="abc", code_dirty=False, diff_hash=None, host="bench", gpu="0",
                       pid=1, env={})
            repo.heartbeat(c.attempt_id, "bench-w", now, LEASE,
                           {"iter": 500, "tokens": 64000, "train_s": 30.0, "fraction": 0.5,
                            "loss": 3.9, "val_loss": 4.0, "best_val_loss": 3.95, "lr": 3e-4})
        per = n_metrics // n_runs
        with repo.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(
                    "INSERT INTO metrics (attempt_id, name, step, value) "
                    "SELECT a.id, 'loss', s, 1.0 / (s + 1) FROM attempts a, "
                    "generate_series(0, :n - 1) AS s"), {"n": per})
                conn.execute(sa.text("ANALYZE"))
            else:
                conn.execute(sa.text(
                    "INSERT INTO metrics (attempt_id, name, step, value) "
                    "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c "
                    "WHERE x < :n - 1) SELECT a.id, 'loss', c.x, 1.0 / (c.x + 1) "
                    "FROM attempts a, c"), {"n": per})
            total = conn.execute(sa.text("SELECT count(*) FROM metrics")).scalar_one()
        assert total >= n_metrics * 0.99, total


def bench_snapshot(url: str, repeats: int = 7) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with QueueRepo.open(url) as repo:
        now = datetime.now(UTC)
        snap = repo.snapshot(now)
        out["runs"] = sum(len(s.runs) for s in snap.studies)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            repo.snapshot(now, "snapshot")
            times.append(time.perf_counter() - t0)
        out["snapshot_ms"] = 1000 * statistics.median(times)
        try:
            from orchestrator.cli.render import make_console, render_status
        except ImportError:
            return out
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            console = make_console(io.StringIO(), width=100)
            console.print(render_status(repo.snapshot(now, "snapshot"), now=now))
            times.append(time.perf_counter() - t0)
        out["snapshot_render_ms"] = 1000 * statistics.median(times)
    return out


@contextmanager
def sqlite_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="recip-bench-") as d:
        url = f"sqlite:///{d}/bench.db"
        migrate.upgrade(url)
        yield url


@contextmanager
def pg_db(server: str) -> Iterator[str]:
    base = parse_url(server)
    admin = sa.create_engine(base, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    name = f"recip_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_backend(name: str, db: Any, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"claims": []}
    for claimers in args.claimers:
        with db() as url:
            row = bench_claims(url, claimers, args.attempts)
            result["claims"].append(row)
            print(f"  {name:8} claimers={claimers:<3} p50={row['p50_ms']:7.2f} ms  "
                  f"p99={row['p99_ms']:7.2f} ms  {row['claims_per_s']:8.1f} claims/s", flush=True)
    with db() as url:
        t0 = time.perf_counter()
        fill_for_snapshot(url, args.runs, args.metrics)
        result["fill_s"] = time.perf_counter() - t0
        result["snapshot"] = {"metric_rows": args.metrics, **bench_snapshot(url)}
        print(f"  {name:8} snapshot of {result['snapshot']['runs']} runs, {args.metrics:,} "
              f"metric rows: {result['snapshot']['snapshot_ms']:.1f} ms", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer attempts and metric rows")
    p.add_argument("--pg-url", default=os.environ.get("RECIP_BENCH_PG_URL")
                   or os.environ.get("RECIP_TEST_PG_URL"))
    p.add_argument("--claimers", default="1,8,16,32",
                   help="comma-separated claimer process counts (default 1,8,16,32)")
    p.add_argument("--no-pgqueuer", action="store_true", help="skip the pgqueuer peer run")
    args = p.parse_args(argv)
    args.claimers = [int(c) for c in args.claimers.split(",")]
    args.attempts = 320 if args.quick else 2000
    args.runs = 1000
    args.metrics = 100_000 if args.quick else 1_000_000

    results: dict[str, Any] = {
        "taken_at": datetime.now(UTC).isoformat(), "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "sqlite": __import__("sqlite3").sqlite_version, "sqlalchemy": sa.__version__},
        "attempts_per_claim_run": args.attempts, "backends": {},
    }
    print(f"queue bench ({'quick' if args.quick else 'full'}): {args.attempts} attempts per "
          f"claim run; snapshot on {args.runs} runs / {args.metrics:,} metric rows", flush=True)
    results["backends"]["sqlite"] = run_backend("sqlite", sqlite_db, args)
    if args.pg_url:
        results["backends"]["postgres"] = run_backend(
            "postgres", lambda: pg_db(args.pg_url), args)
        results["pg_server"] = redact_url(args.pg_url)
    else:
        print("  postgres skipped: set RECIP_BENCH_PG_URL or pass --pg-url", flush=True)

    print()
    print(f"{'backend':9} {'claimers':>8} {'p50 ms':>8} {'p99 ms':>8} {'claims/s':>9}")
    for backend, res in results["backends"].items():
        for row in res["claims"]:
            print(f"{backend:9} {row['claimers']:>8} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
                  f"{row['claims_per_s']:>9.1f}")
    print()
    print(f"{'backend':9} {'runs':>6} {'metrics':>10} {'snapshot ms':>12} {'+render ms':>11}")
    for backend, res in results["backends"].items():
        s = res["snapshot"]
        render = f"{s['snapshot_render_ms']:.1f}" if "snapshot_render_ms" in s else "-"
        print(f"{backend:9} {s['runs']:>6} {s['metric_rows']:>10,} {s['snapshot_ms']:>12.1f} "
              f"{render:>11}")
    sqlite8 = next(r for r in results["backends"]["sqlite"]["claims"] if r["claimers"] == 8)
    results["targets"] = {
        "sqlite_claim_p50_ms_at_8_lt_20": sqlite8["p50_ms"] < 20,
        "snapshot_lt_1s": all(r["snapshot"]["snapshot_ms"] < 1000
                              for r in results["backends"].values()),
    }
    print(f"\ntargets: {results['targets']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
