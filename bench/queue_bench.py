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
import math
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


# -- pgqueuer, the peer: same server, same process count, one job per transaction -------

def _pgq_worker(dsn: str, batch: int, barrier: Any, out: Any) -> None:
    """One pgqueuer QueueManager process draining the `bench` entrypoint."""
    import asyncio

    async def go() -> float:
        import psycopg
        from pgqueuer import PsycopgDriver, Queries, QueueManager
        from pgqueuer.types import QueueExecutionMode

        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        qm = QueueManager(Queries(PsycopgDriver(conn)))

        @qm.entrypoint("bench")
        async def job(_: Any) -> None:
            return None

        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, 120)
        await qm.run(batch_size=batch, mode=QueueExecutionMode.drain,
                     dequeue_timeout=timedelta(seconds=1))
        end = time.time()
        await conn.close()
        return end

    try:
        out.put((asyncio.run(go()), None))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        out.put((time.time(), f"{type(e).__name__}: {e}"))


def bench_pgqueuer(url: str, workers: int, jobs: int, batch: int) -> dict[str, Any] | None:
    """Jobs/s of `workers` pgqueuer processes draining `jobs` no-op jobs; None when pgqueuer
    is not installed (the optional `bench` extra)."""
    try:
        import asyncio
        import multiprocessing as mp

        import psycopg
        from pgqueuer import PsycopgDriver, Queries
    except ImportError:
        return None
    dsn = parse_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def prepare() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        q = Queries(PsycopgDriver(conn))
        if not await q.schema_is_installed():
            await q.install()
        await q.clear_queue()
        await q.enqueue(["bench"] * jobs, [None] * jobs, [0] * jobs)
        await conn.close()

    asyncio.run(prepare())
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_pgq_worker, args=(dsn, batch, barrier, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    t0 = time.time()
    got = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    errors = [e for _, e in got if e]
    if errors:
        raise RuntimeError(f"pgqueuer: {errors[0]}")
    # the drain includes each worker's final empty dequeue wait; subtract nothing (honest)
    wall = max(end for end, _ in got) - t0
    return {"workers": workers, "batch_size": batch, "jobs": jobs, "jobs_per_s": jobs / wall}


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
            from orchestrator.cli.render import make_console
            from orchestrator.cli.render.status import render_status
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
    """Claim runs at each claimer count (pgqueuer beside the 16-process PostgreSQL run), then
    the snapshot on a filled database (skipped with --no-snapshot)."""
    result: dict[str, Any] = {"claims": []}
    for claimers in args.claimers:
        with db() as url:
            row = bench_claims(url, claimers, args.attempts)
            result["claims"].append(row)
            print(f"  {name:8} claimers={claimers:<3} p50={row['p50_ms']:7.2f} ms  "
                  f"p99={row['p99_ms']:7.2f} ms  {row['claims_per_s']:8.1f} claims/s", flush=True)
            if name == "postgres" and claimers == 16 and not args.no_pgqueuer:
                result["pgqueuer"] = []
                for batch in (1, 10):
                    with db() as peer_url:
                        peer = bench_pgqueuer(peer_url, claimers, args.attempts, batch)
                    if peer is None:
                        print("  pgqueuer not installed (pip install '.[bench]'): peer skipped")
                        break
                    result["pgqueuer"].append(peer)
                    print(f"  pgqueuer workers={claimers:<3} batch={batch:<3} "
                          f"{peer['jobs_per_s']:8.1f} jobs/s", flush=True)
    if args.no_snapshot:
        return result
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
    p.add_argument("--no-snapshot", action="store_true", help="claims only")
    p.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    p.add_argument("--attempts", type=int, default=None, help="attempts per claim run")
    args = p.parse_args(argv)
    args.claimers = [int(c) for c in args.claimers.split(",")]
    args.attempts = args.attempts or (320 if args.quick else 2000)
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
    if not args.no_sqlite:
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
        if "snapshot" not in res:
            continue
        s = res["snapshot"]
        render = f"{s['snapshot_render_ms']:.1f}" if "snapshot_render_ms" in s else "-"
        print(f"{backend:9} {s['runs']:>6} {s['metric_rows']:>10,} {s['snapshot_ms']:>12.1f} "
              f"{render:>11}")
    def at(backend: str, n: int) -> dict[str, Any] | None:
        rows = results["backends"].get(backend, {}).get("claims", [])
        return next((r for r in rows if r["claimers"] == n), None)

    sqlite8 = at("sqlite", 8) or {"p50_ms": math.nan, "p99_ms": math.nan}
    pg8, pg16 = at("postgres", 8), at("postgres", 16)
    peer = next((r for r in results["backends"].get("postgres", {}).get("pgqueuer", [])
                 if r["batch_size"] == 1), None)
    for r in results["backends"].get("postgres", {}).get("pgqueuer", []):
        print(f"pgqueuer  {r['workers']:>8} batch {r['batch_size']:<3} {r['jobs_per_s']:>9.1f} jobs/s")
    results["targets"] = {
        "sqlite_claim_p50_ms_at_8_lt_20": sqlite8["p50_ms"] < 20,
        "sqlite_claim_p99_ms_at_8_lt_100": sqlite8["p99_ms"] < 100,
        "pg_claim_p99_ms_at_8_lt_100": None if pg8 is None else pg8["p99_ms"] < 100,
        "pg_16_processes_ge_pgqueuer_unbatched": None if pg16 is None or peer is None
        else pg16["claims_per_s"] >= peer["jobs_per_s"],
        "snapshot_lt_1s": all(r["snapshot"]["snapshot_ms"] < 1000
                              for r in results["backends"].values() if "snapshot" in r),
    }
    print(f"\ntargets: {results['targets']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
