"""Chaos: a real study (tiny models, iteration budgets, the real trainer) run by real
WorkerLoops in processes of their own, while a monkey SIGKILLs workers and attempt processes
at random moments and, on PostgreSQL, drops every database connection mid-study.

Asserted after each round:
- every run ends succeeded, within its max_attempts;
- no two attempts of one run ever ran at once: neither in the database (each attempt is
  claimed after the previous one ended) nor as processes (a /proc sampler every 50 ms);
- every succeeded attempt's metrics are complete: its metrics.jsonl and its rows in the
  database are the same (the study is small enough that no train metric is thinned) and
  cover the whole run from iteration 0, whichever attempts trained which part; no attempt
  has a row its metrics.jsonl lacks;
- a resumed run ends exactly where an uninterrupted one does (same final losses), and it
  resumed from the newest checkpoint any earlier attempt of the run wrote;
- no process is left behind.

The PostgreSQL outage is `pg_terminate_backend` on every connection to the test database:
the server is shared with other test sessions on this machine, so it is not restarted
(set RECIP_CHAOS_PG_RESTART=1 on a private cluster to restart it with pg_ctlcluster).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.queue_cmd import build_plan
from orchestrator.queue.repo import QueueRepo
from tests.chaos import worker_proc
from tests.e2e.helpers import CORPUS

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
STUDY = "chaos"
STEPS = ("V0", "V1")
ITERS = 60
LEASE = 4.0
WORKERS = 2
ROUND_TIMEOUT = 420.0
REFERENCE: dict[str, tuple[float, float]] = {}
"""step -> (final_val_loss, final_train_loss) of the first succeeded run seen this session."""


def write_study(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    path = tmp_path / "chaos.yaml"
    path.write_text(f"""\
study: {STUDY}
description: chaos test study
defaults:
  model: {{n_layer: 1, n_head: 2, n_embd: 32, block_size: 32}}
  data: {{dataset: 'text:{corpus}', tokenizer: byte}}
  train:
    budget: {{iters: {ITERS}}}
    batch_size: 4
    warmup: 4
    eval_every: 20
    eval_batches: 2
    log_every: 2
    checkpoint_every: 5
  optimizer: {{name: adamw}}
  wandb: {{mode: disabled}}
  seeds: [1]
  max_attempts: 30
steps:
  V0: {{description: baseline}}
  V1: {{parent: V0, mlp: {{rmlp: {{R_ff: 16}}}}}}
""")
    return path


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def processes_mentioning(text: str) -> dict[int, list[str]]:
    """Live processes whose command line mentions `text`."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            argv = _cmdline(int(entry))
            if any(text in a for a in argv) and _alive(int(entry)):
                out[int(entry)] = argv
    return out


@dataclass
class AttemptSampler:
    """Samples the attempt processes (`workers.run_attempt ... RUNS/...`) of this round."""

    runs_dir: Path
    every: float = 0.05
    seen: dict[int, str] = field(default_factory=dict)
    """pid -> attempt dir."""
    overlaps: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def current(self) -> dict[int, str]:
        """pid -> attempt dir of every live attempt process: its stdout goes to
        RUNS/.../attemptN/stdout.log (a fresh process or a warm spare alike)."""
        out = {}
        root = str(self.runs_dir.resolve())
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                log = os.readlink(f"/proc/{entry}/fd/1")
            except OSError:
                continue
            if log.startswith(root) and log.endswith("/stdout.log") and _alive(int(entry)):
                out[int(entry)] = str(Path(log).parent)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.current()
            self.seen.update(now)
            by_run: dict[str, list[str]] = {}
            for pid, outdir in now.items():
                run = str(Path(outdir).parent)  # runs/<study>/<step>/seed<k>
                by_run.setdefault(run, []).append(f"{pid}:{Path(outdir).name}")
            for run, procs in by_run.items():
                if len(procs) > 1 and all(_alive(int(p.split(":")[0])) for p in procs):
                    self.overlaps.append((run, tuple(sorted(procs))))
            self._stop.wait(self.every)

    def __enter__(self) -> AttemptSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Monkey:
    """Starts the worker processes and kills them, and their attempts, at random."""

    def __init__(self, db: str, tmp_path: Path, rng: random.Random, env: dict[str, str]) -> None:
        self.db = db
        self.tmp = tmp_path
        self.runs = tmp_path / "runs"
        self.rng = rng
        self.env = env
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.all_workers: list[subprocess.Popen[bytes]] = []
        self.log: list[str] = []
        self._n = 0

    def start_worker(self) -> None:
        self._n += 1
        name = f"chaos:w{self._n}"
        out = open(self.tmp / f"worker{self._n}.log", "wb")
        proc = subprocess.Popen(
            worker_proc.command("--db", self.db, "--runs-dir", str(self.runs), "--worker-id",
                                name, "--study", STUDY, "--until-empty", "--lease", str(LEASE)),
            cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.workers[name] = proc
        self.all_workers.append(proc)

    def live_workers(self) -> dict[str, subprocess.Popen[bytes]]:
        return {n: p for n, p in self.workers.items() if p.poll() is None}

    def kill_worker(self) -> bool:
        live = self.live_workers()
        if not live:
            return False
        name = self.rng.choice(sorted(live))
        os.kill(live[name].pid, signal.SIGKILL)
        live[name].wait()
        self.log.append(f"{time.monotonic():.1f} SIGKILL worker {name}")
        self.start_worker()
        return True

    def kill_attempt(self, sampler: AttemptSampler) -> bool:
        current = sampler.current()
        if not current:
            return False
        pid = self.rng.choice(sorted(current))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.log.append(f"{time.monotonic():.1f} SIGKILL attempt {current[pid]}")
        return True

    def stop(self) -> None:
        for proc in self.all_workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.all_workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def drop_connections(pg_admin: Any, url: str) -> int:
    """Terminate every connection to the test database (or restart the cluster)."""
    import sqlalchemy as sa

    from orchestrator.queue.db import parse_url

    if os.environ.get("RECIP_CHAOS_PG_RESTART") == "1":
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"],
                       check=True, timeout=120)
        return -1
    name = parse_url(url).database
    with pg_admin.engine.connect() as conn:
        return len(conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).all())


def all_succeeded(repo: QueueRepo) -> bool:
    return all(any(a.state == "succeeded" for a in r.attempts)
               for r in repo.history(STUDY).runs)


def jsonl_rows(path: Path) -> dict[tuple[str, int], float]:
    rows: dict[tuple[str, int], float] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        for name, value in record["values"].items():
            if isinstance(value, int | float) and not isinstance(value, bool) and \
                    value == value and abs(value) != float("inf"):
                rows[(name, record["iter"])] = float(value)
    return rows


def checkpoint_iter(attempt_dir: Path) -> int:
    """The iteration of the attempt's checkpoint (0 when it has none)."""
    import torch

    path = attempt_dir / "checkpoint.pt"
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["loop"]["it"])


@pytest.fixture(params=["sqlite", "postgres"])
def chaos_db(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url"), None
    else:
        yield request.getfixturevalue("pg_url"), request.getfixturevalue("pg_admin")


def test_chaos_round(chaos_db: tuple[str, Any], chaos_round: int, tmp_path: Path) -> None:
    db, pg_admin = chaos_db
    rng = random.Random(f"{chaos_round}-{db.split(':')[0]}-{time.time_ns()}")
    env = {**os.environ, "RECIP_DATA_DIR": str(tmp_path / "data"), "PYTHONDONTWRITEBYTECODE": "1"}
    repo = QueueRepo.open(db)
    repo.submit(build_plan(write_study(tmp_path)), datetime.now(UTC))
    monkey = Monkey(db, tmp_path, rng, env)
    kills = rng.randint(3, 5)
    outage_at = rng.randint(1, kills) if pg_admin is not None else None
    started = time.monotonic()
    with AttemptSampler(monkey.runs) as sampler:
        try:
            for _ in range(WORKERS):
                monkey.start_worker()
            done_kills = 0
            while done_kills < kills and not all_succeeded(repo):
                time.sleep(rng.uniform(1.0, 5.0))
                if outage_at == done_kills + 1:
                    n = drop_connections(pg_admin, db)
                    monkey.log.append(f"{time.monotonic():.1f} dropped {n} connections")
                    outage_at = None
                hit = (monkey.kill_worker() if rng.random() < 0.5 else
                       monkey.kill_attempt(sampler) or monkey.kill_worker())
                done_kills += int(hit)
            while not all_succeeded(repo):
                assert time.monotonic() - started < ROUND_TIMEOUT, (
                    f"round {chaos_round}: not done after {ROUND_TIMEOUT:.0f}s; "
                    f"kills: {monkey.log}; history: {repo.history(STUDY)}")
                if not monkey.live_workers():
                    monkey.start_worker()
                time.sleep(0.5)
            for proc in monkey.all_workers:  # --until-empty: they end by themselves
                proc.wait(timeout=60)
        finally:
            monkey.stop()
            deadline = time.monotonic() + 30
            while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
                time.sleep(0.2)
    elapsed = time.monotonic() - started
    leftovers = processes_mentioning(str(tmp_path))
    assert leftovers == {}, f"processes left behind: {leftovers}"
    assert sampler.overlaps == [], f"attempts of one run at once: {sampler.overlaps[:5]}"

    history = repo.history(STUDY)
    attempts_total = sum(len(r.attempts) for r in history.runs)
    for r in history.runs:
        assert r.latest is not None and r.latest.state == "succeeded", (r.step, r.attempts)
        assert all(a.state in ("lost", "failed") for a in r.attempts[:-1]), r.attempts
        assert all(a.failure_kind in (None, "crashed") for a in r.attempts), r.attempts
        for before, after in zip(r.attempts, r.attempts[1:], strict=False):
            assert before.finished_at is not None and after.claimed_at is not None
            assert after.claimed_at >= before.finished_at, (r.step, before, after)
        ids = [a.attempt_id for a in r.attempts]
        series = repo.metric_series(ids)
        for a in r.attempts:
            assert a.artifact_dir is not None, a
            from_file = jsonl_rows(Path(a.artifact_dir) / "metrics.jsonl")
            in_db = {(name, step): value for name, points in series[a.attempt_id].items()
                     for step, value in points}
            if a.state == "succeeded":
                assert in_db == from_file, (r.step, a.attempt_no,
                                            set(in_db) ^ set(from_file))
                assert a.result["iters"] == ITERS
                # the whole run's series, whichever attempt trained which part of it
                assert {("loss", i) for i in range(2, ITERS + 1, 2)} <= set(in_db), r.step
                assert {("val_loss", i) for i in (20, 40, 60)} <= set(in_db), r.step
            else:
                assert set(in_db) <= set(from_file), (r.step, a.attempt_no)
                assert all(from_file[k] == v for k, v in in_db.items())
        final = r.attempts[-1].result
        saved = [checkpoint_iter(Path(a.artifact_dir or "")) for a in r.attempts[:-1]]
        assert (final.get("resumed_from_iter") or 0) >= max(saved, default=0), (
            f"{r.step}: resumed from {final.get('resumed_from_iter')}, but earlier attempts "
            f"had checkpoints at {saved}")
        got = (final["final_val_loss"], final["final_train_loss"])
        expected = REFERENCE.setdefault(r.step, got)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-7), (
            f"{r.step}: resumed result {got} differs from {expected}")
    resumed = sum(1 for r in history.runs if (r.latest and r.latest.result.get(
        "resumed_from_iter") or 0) > 0)
    fenced = sum(p.read_text().count("still running as pid")
                 for p in tmp_path.glob("worker*.log"))
    repo.close()
    print(f"chaos round {chaos_round} on {db.split(':')[0].split('+')[0]}: {elapsed:.0f}s, "
          f"{len(monkey.log)} events ({'; '.join(monkey.log)}), {attempts_total} attempts "
          f"for {len(history.runs)} runs, {resumed} finished from a checkpoint, "
          f"{fenced} orphaned attempt processes stopped by the next worker")
