"""`recip status` benchmark: snapshot + render of a 1,000-run study with 1,000,000 metric rows.

    python -m bench.status_bench [--runs 1000] [--metrics 1000000] [--repeats 7] [--pg-url URL]

Builds the database through the real path: a spec of 100 steps x 10 seeds resolved by
`orchestrator.core.resolve` and submitted with `QueueRepo.submit`; workers claim, start and
heartbeat 200 attempts and finish 600 (succeeded, failed, lost), the rest stay queued; then
the metrics table gets N rows spread over the started attempts (bulk SQL insert). It then
times, median of `--repeats`: `QueueRepo.open`, `reap_expired`, `snapshot`, `render_status`
printed into a 100-column console, and the whole `recip status STUDY` command in-process.
PostgreSQL (in a temporary database dropped afterwards) runs when --pg-url /
$RECIP_TEST_PG_URL is given. Target (design.md §7): snapshot + render under 1 s.
Prints a table; writes bench/results/status.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.cli.app import run as cli
from orchestrator.cli.render import make_console
from orchestrator.cli.render.status import render_status
from orchestrator.core.loader import spec_from_text
from orchestrator.core.plan import StudyPlan
from orchestrator.core.resolve import Overrides, resolve
from orchestrator.core.states import AttemptState, FailureKind
from orchestrator.queue import migrate
from orchestrator.queue.db import make_engine, parse_url, redact_url
from orchestrator.queue.repo import QueueRepo

RESULTS = Path(__file__).parent / "results" / "status.json"
STUDY = "status_bench"
LEASE = timedelta(hours=1)
METRIC_NAMES = ("loss", "lr", "grad_norm", "tokens_per_s", "val_loss", "w_rec", "gate_mean",
                "spam_spikes", "mem_gb", "ratio")


def bench_plan(runs: int) -> StudyPlan:
    """A real spec: `runs // 10` steps (each a mechanism variant) x 10 seeds."""
    steps = max(1, runs // 10)
    lines = [f"study: {STUDY}", "defaults:", "  model: {preset: tiny}",
             "  train: {budget: {seconds: 3600}}", "steps:", "  S0000: {description: baseline}"]
    for i in range(1, steps):
        mech = (f"mlp: {{rmlp: {{R_ff: {16 * i}}}}}" if i % 2
                else f"attention: {{unified_ra: {{R: {1 + i % 16}}}}}")
        lines.append(f"  S{i:04d}: {{parent: S0000, {mech}}}")
    spec = spec_from_text("\n".join(lines) + "\n", file="bench")
    seeds = tuple(range(1, runs // steps + 1))
    return resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB, overrides=Overrides(seeds=seeds))


def populate(url: str, runs: int, metrics: int) -> dict[str, Any]:
    """Submit, drive attempts through their states, bulk-insert metric rows."""
    t0 = time.perf_counter()
    plan = bench_plan(runs)
    now = datetime.now(UTC)
    rng = random.Random(0)
    started: list[int] = []
    with QueueRepo.open(url) as repo:
        repo.submit(plan, now)
        workers = [f"gpu-{h}:{g}" for h in "ab" for g in range(4)]
        for w in workers:
            repo.register_worker(w, now, host=w.split(":")[0], gpu=w.split(":")[1], pid=1000)
        n_running, n_finished = runs // 5, (runs * 3) // 5
        for i in range(n_running + n_finished):
            w = workers[i % len(workers)]
            claimed = repo.claim(w, now, LEASE)
            assert claimed is not None
            a = claimed.attempt_id
            repo.start(a, w, now, LEASE, artifact_dir=f"runs/{a}", code_sha="1e1859e",
                       code_dirty=False, diff_hash=None, host=w.split(":")[0],
                       gpu=w.split(":")[1], pid=2000 + i, env={})
            started.append(a)
            it = rng.randint(100, 5000)
            progress = {"iter": it, "tokens": it * 8192, "train_s": it * 0.7,
                        "fraction": min(1.0, it * 0.7 / 3600), "loss": 3 + rng.random(),
                        "val_loss": 3.2 + rng.random(), "best_val_loss": 3.1 + rng.random()}
            # running ones heartbeat at various ages, some past 2x the interval
            beat = now - timedelta(seconds=rng.choice([2, 5, 30, 900, 1500]))
            repo.heartbeat(a, w, beat, LEASE, progress)
            if i >= n_running:
                state, kind = rng.choice([
                    (AttemptState.SUCCEEDED, None), (AttemptState.SUCCEEDED, None),
                    (AttemptState.FAILED, FailureKind.OOM), (AttemptState.LOST, None)])
                repo.finish(a, w, now, state, failure_kind=kind,
                            result={"iters": it, "best_val_loss": 3.0 + rng.random(),
                                    "final_val_loss": 3.1 + rng.random()})
    built_runs_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    per = max(1, metrics // (len(started) * len(METRIC_NAMES)))
    engine = make_engine(url)
    try:
        def rows() -> Iterator[dict[str, Any]]:
            for a in started:
                for name in METRIC_NAMES:
                    for s in range(per):
                        yield {"a": a, "n": name, "s": s * 10, "v": rng.random()}

        stored = insert_metrics(engine, rows(), limit=metrics)
    finally:
        engine.dispose()
    return {"runs": len(plan.runs), "started_attempts": len(started), "metric_rows": stored,
            "build_runs_s": round(built_runs_s, 2),
            "build_metrics_s": round(time.perf_counter() - t1, 2)}


def insert_metrics(engine: Engine, rows: Iterable[dict[str, Any]], *, limit: int,
                   batch: int = 50_000) -> int:
    """Insert at most `limit` metric rows ({a, n, s, v}) in batches; the table's row count."""
    insert = sa.text("INSERT INTO metrics (attempt_id, name, step, value) VALUES (:a, :n, :s, :v)")
    with engine.begin() as conn:
        buf: list[dict[str, Any]] = []
        for row in itertools.islice(rows, limit):
            buf.append(row)
            if len(buf) >= batch:
                conn.execute(insert, buf)
                buf.clear()
        if buf:
            conn.execute(insert, buf)
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM metrics")).scalar_one())


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times), out


def measure(url: str, repeats: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    res["open_ms"], repo = timed(lambda: QueueRepo.open(url), 1)
    try:
        now = datetime.now(UTC)
        res["reap_ms"], _ = timed(lambda: repo.reap_expired(now), repeats)
        res["snapshot_ms"], snap = timed(lambda: repo.snapshot(now, STUDY), repeats)

        def draw() -> str:
            console = make_console(io.StringIO(), width=100)
            console.print(render_status(snap, now=now))
            return str(console.file.getvalue())  # type: ignore[attr-defined]

        res["render_ms"], text = timed(draw, repeats)
        res["snapshot_plus_render_ms"] = res["snapshot_ms"] + res["render_ms"]
        res["output_lines"] = text.count("\n")
    finally:
        repo.close()

    def command() -> int:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return cli(["status", STUDY, "--db", url])

    res["recip_status_ms"], rc = timed(command, repeats)
    assert rc == 0, "recip status failed"
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}


@contextlib.contextmanager
def sqlite_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="recip-status-bench-") as d:
        url = f"sqlite:///{d}/bench.db"
        migrate.upgrade(url)
        yield url


@contextlib.contextmanager
def pg_db(server: str) -> Iterator[str]:
    base = parse_url(server)
    admin = sa.create_engine(base, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    name = f"recip_status_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_results(out: Path, head: dict[str, Any], results: Any, **machine: Any) -> None:
    """The benchmark's JSON record at `out`: `head` (bench, target, met, sample size), this
    machine (python, platform, cpus, plus `machine` extras such as the load average), the time
    and `results`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        **head,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), **machine},
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "results": results,
    }, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--metrics", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pg-url", default=os.environ.get("RECIP_TEST_PG_URL"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.getLogger("orchestrator").setLevel(logging.ERROR)

    backends: list[tuple[str, Callable[[], contextlib.AbstractContextManager[str]]]] = [
        ("sqlite", sqlite_db)]
    if args.pg_url:
        backends.append(("postgres", lambda: pg_db(args.pg_url)))
    results = []
    for backend, make in backends:
        with make() as url:
            print(f"{backend}: building {args.runs} runs, {args.metrics:,} metric rows in "
                  f"{redact_url(url)} ...", file=sys.stderr)
            built = populate(url, args.runs, args.metrics)
            results.append({"backend": backend, **built, **measure(url, args.repeats)})

    print(f"{'backend':9} {'runs':>5} {'metrics':>9} {'open':>6} {'reap':>6} {'snapshot':>9} "
          f"{'render':>7} {'snap+render':>11} {'recip status':>12}  (ms, median)")
    for r in results:
        print(f"{r['backend']:9} {r['runs']:>5} {r['metric_rows']:>9,} {r['open_ms']:>6.1f} "
              f"{r['reap_ms']:>6.1f} {r['snapshot_ms']:>9.1f} {r['render_ms']:>7.1f} "
              f"{r['snapshot_plus_render_ms']:>11.1f} {r['recip_status_ms']:>12.1f}")
    ok = all(r["snapshot_plus_render_ms"] < 1000 for r in results)
    print(f"target snapshot + render < 1000 ms: {'met' if ok else 'MISSED'}")
    write_results(args.out, {"bench": "status", "target_ms": 1000, "met": ok,
                             "repeats": args.repeats}, results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
