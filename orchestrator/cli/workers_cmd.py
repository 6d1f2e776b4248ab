"""`recip workers up | ls | down | release`: run a pool of workers in the foreground, list,
stop them, and let quarantined ones claim again.

`up` writes a pidfile `<runs-dir>/.workers/<pid>.json` while it runs; `down` sends SIGTERM
to every live `up` (and `recip run`) listed there, which asks each worker to stop cleanly:
its running attempt checkpoints and goes back to the queue, not to failed. A first Ctrl-C
does the same; a second one kills the workers at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import DbOption, JsonOption, db_url, emit_json, redact_url, say
from orchestrator.core.errors import WorkerError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from orchestrator.core.views import Snapshot
    from orchestrator.queue.repo import QueueRepo
    from workers.pool import PoolConfig, WorkerPool

app = typer.Typer(help="Run workers that pull attempts from the queue; list and stop them.",
                  no_args_is_help=True)

PIDFILES = ".workers"
DEFAULT_RUNS_DIR = "runs"

GpusOption = Annotated[str | None, typer.Option(
    "--gpus", help="GPUs to run one worker each on: `all` or indices like 0,1 "
    "(default: all GPUs, or CPU workers when there is none).", show_default=False)]
CpuWorkersOption = Annotated[int | None, typer.Option(
    "--cpu-workers", help="Number of CPU workers (default 1 when there is no GPU).",
    show_default=False, min=0)]
AddressOption = Annotated[str | None, typer.Option(
    "--address", help="Join a Ray cluster (`auto` or ray://host:10001) instead of starting "
    "a local Ray.", show_default=False)]
RunsDirOption = Annotated[Path, typer.Option(
    "--runs-dir", help="Where attempt directories go (runs/<study>/<step>/seed<k>/attempt<n>).")]
LeaseOption = Annotated[float, typer.Option(
    "--lease", help="Lease in seconds; workers heartbeat every third of it.", min=1.0)]
StorageOption = Annotated[str | None, typer.Option(
    "--storage", envvar="RECIP_STORAGE", help="Checkpoint storage every box can read: a "
    "shared path or an fsspec URI like s3://bucket/recip (default: the runs dir only).",
    show_default=False)]
NodeOption = Annotated[str | None, typer.Option(
    "--node", help="With --address: the Ray node id to run this box's workers on (default: "
    "the node this command runs on).", show_default=False)]
GraceOption = Annotated[float, typer.Option(
    "--grace", help="Seconds an attempt may run past its time budget before it is timed_out.",
    min=0.0)]


def absolute_db_url(url: str) -> str:
    """A SQLite URL with an absolute path (workers run in other processes); others as is."""
    from orchestrator.queue.db import parse_url, sqlite_path

    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    path = sqlite_path(parsed)
    if str(path) in ("", ":memory:"):
        raise WorkerError(f"--db {url}: workers need a database file or server, not memory")
    return f"sqlite:///{path.resolve()}"


def open_repo(url: str) -> QueueRepo:
    """The queue at `url`, checked before any worker starts (clear error if not usable)."""
    from orchestrator.queue.repo import QueueRepo

    return QueueRepo.open(url)


# --- pidfiles ---------------------------------------------------------------------------


@contextmanager
def pidfile(runs_dir: Path, db: str, what: str) -> Iterator[Path]:
    """Advertise this process to `recip workers down` while the block runs."""
    folder = runs_dir / PIDFILES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.json"
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "db": redact_url(db), "what": what,
                                "started_at": datetime.now(UTC).isoformat()}))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """True while `pid` is a live (not zombie) process on this host."""
    import psutil

    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def live_pidfiles(runs_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The pidfiles of live `workers up`/`run` processes on this host (stale ones removed)."""
    out: list[tuple[Path, dict[str, Any]]] = []
    folder = runs_dir / PIDFILES
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if info.get("host") not in (None, socket.gethostname()):
            continue
        if _alive(pid):
            out.append((path, info))
        else:
            path.unlink(missing_ok=True)
    return out


# --- the foreground driver shared with `recip run` ---------------------------------------


@dataclass
class StopSignals:
    """SIGINT/SIGTERM -> a clean stop; a second one -> kill now."""

    count: int = 0
    names: list[str] = field(default_factory=list)

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.names.append(signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        old = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@dataclass(frozen=True)
class DriveResult:
    snapshot: Snapshot | None
    stopped_by_signal: bool
    deaths: tuple[str, ...]


def drive(pool: WorkerPool, repo: QueueRepo, *,
          render: Callable[[Snapshot, WorkerPool], RenderableType],
          study: str | None = None, interval: float = 2.0,
          live: bool = True) -> DriveResult:
    """Run the pool in the foreground with a live view until its workers end, `study` is
    done, or a signal asks to stop (then stop cleanly; a second signal kills)."""
    from orchestrator.cli.render import live as live_view
    from orchestrator.cli.render import make_console
    from orchestrator.cli.status_cmd import take_snapshot

    signals = StopSignals()
    state: dict[str, Any] = {"stopping_at": None, "snap": None}
    grace = pool.config.kill_after_s + 15.0

    def frame() -> tuple[RenderableType, bool]:
        done = pool.wait(timeout=0.0)
        if signals.count and state["stopping_at"] is None:
            say(f"{signals.names[0]}: stopping the workers; running attempts checkpoint and "
                "go back to the queue (again to kill them now)")
            state["stopping_at"] = time.monotonic()
            pool.stop()
        if signals.count > 1 or (state["stopping_at"] is not None
                                 and time.monotonic() - state["stopping_at"] > grace):
            pool.shutdown(grace=0.0)
            done = True
        snap = take_snapshot(repo, study, reap=True)
        state["snap"] = snap
        if study is not None and snap.studies and all(s.done for s in snap.studies):
            if state["stopping_at"] is None:
                state["stopping_at"] = time.monotonic()
                pool.stop()
        return render(snap, pool), done

    with signals.installed():
        if live:
            live_view(frame, interval=interval, console=make_console(wide=True))
        else:
            while True:
                _, done = frame()
                if done:
                    break
                pool.wait(timeout=interval)
    return DriveResult(state["snap"], signals.count > 0, tuple(pool.deaths))


def pool_config(*, db: str, runs_dir: Path, gpus: str | None, cpu_workers: int | None,
                address: str | None, until_empty: bool, study: str | None, lease: float,
                grace: float, storage: str | None = None,
                node_id: str | None = None) -> PoolConfig:
    from workers.pool import PoolConfig
    from workers.train import disk

    need, free = disk.min_free_bytes(), disk.free_bytes(runs_dir)
    if need and free is not None and free < need:  # the workers would refuse every claim
        raise WorkerError(
            f"only {disk.fmt_bytes(free)} free in {runs_dir.resolve()}: a worker needs "
            f"{disk.fmt_bytes(need)} to claim an attempt (${disk.MIN_FREE_ENV}); free space "
            "there or pass another --runs-dir")
    env = {}
    if os.environ.get(disk.MIN_FREE_ENV):
        env[disk.MIN_FREE_ENV] = os.environ[disk.MIN_FREE_ENV]
    if os.environ.get("RECIP_DATA_DIR"):
        env["RECIP_DATA_DIR"] = str(Path(os.environ["RECIP_DATA_DIR"]).resolve())
    else:
        env["RECIP_DATA_DIR"] = str(Path("data").resolve())
    storage = storage or os.environ.get("RECIP_STORAGE") or None
    if storage is not None and "://" not in storage:
        storage = str(Path(storage).resolve())
    return PoolConfig(db_url=db, runs_dir=runs_dir.resolve(), gpus=gpus, cpu_workers=cpu_workers,
                      address=address, until_empty=until_empty, study=study, lease_s=lease,
                      grace_s=grace, env=env, db_label=redact_url(db), storage=storage,
                      node_id=node_id)


@app.command("up")
def up(
    gpus: GpusOption = None,
    cpu_workers: CpuWorkersOption = None,
    address: AddressOption = None,
    db: DbOption = None,
    runs_dir: RunsDirOption = Path(DEFAULT_RUNS_DIR),
    until_empty: Annotated[bool, typer.Option(
        "--until-empty", help="Exit once nothing is queued or running.")] = False,
    lease: LeaseOption = 30.0,
    grace: GraceOption = 120.0,
    storage: StorageOption = None,
    node: NodeOption = None,
    interval: Annotated[float, typer.Option(hidden=True)] = 2.0,
) -> None:
    """Start workers (one per GPU, or N CPU workers) that run queued attempts; foreground.

    With --address each box runs its own `workers up`: its workers stay on its own Ray
    node and use its own checkout, runs dir and data (docs/cluster.md)."""
    from orchestrator.cli.render.workers import render_pool
    from workers.pool import WorkerPool

    url = absolute_db_url(db_url(db))
    config = pool_config(db=url, runs_dir=runs_dir, gpus=gpus, cpu_workers=cpu_workers,
                         address=address, until_empty=until_empty, study=None, lease=lease,
                         grace=grace, storage=storage, node_id=node)
    with open_repo(url) as repo, pidfile(config.runs_dir, url, "workers up"):
        pool = WorkerPool(config)
        try:
            slots = pool.start()
            where = f"Ray node {pool.node_id} at {address}" if address else "local Ray"
            noun = "worker" if len(slots) == 1 else "workers"
            title = (f"{len(slots)} {noun} ({', '.join(s.name for s in slots)}) on {where}; "
                     f"{redact_url(url)}; runs in {config.runs_dir}")
            say(title)
            result = drive(pool, repo, interval=interval,
                           render=lambda snap, p: render_pool(snap, title=title))
        finally:
            pool.shutdown()
    done = sum(r.succeeded for r in pool.reports)
    ran = sum(len(r.outcomes) for r in pool.reports)
    say(f"workers stopped: {ran} attempts run, {done} succeeded"
        + (f"; {len(result.deaths)} worker processes died and were replaced"
           if result.deaths else ""))


@app.command("ls")
def ls(
    json_out: JsonOption = False,
    db: DbOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Include stopped workers.")] = False,
) -> None:
    """List the workers registered in the queue (live ones unless --all)."""
    with open_repo(db_url(db)) as repo:
        snap = repo.snapshot(datetime.now(UTC))
    workers = [w for w in snap.workers if all_ or w.stopped_at is None]
    if json_out:
        emit_json([{"id": w.id, "host": w.host, "gpu": w.gpu, "pid": w.pid,
                    "started_at": w.started_at, "last_heartbeat": w.last_heartbeat,
                    "stopped_at": w.stopped_at, "current_attempt": w.current_attempt,
                    "quarantined": w.quarantined}
                   for w in workers])
        return
    if not workers:
        say(f"no {'' if all_ else 'live '}workers in {snap.db}; start some with "
            "`recip workers up`")
        return
    from orchestrator.cli.render import print_renderable
    from orchestrator.cli.render.workers import attempt_names, render_workers

    table = render_workers(workers, now=snap.taken_at, names=attempt_names(snap),
                           include_stopped=all_)
    if table is not None:
        print_renderable(table)
    from orchestrator.core.unclaimed import quarantined

    for line in quarantined(snap):
        say(line)


@app.command("release")
def release(
    worker: Annotated[str | None, typer.Argument(
        help="A worker id, or its host:slot (every restart of that slot).",
        show_default=False)] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Release every quarantined worker of this host.",
        show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Release every quarantined worker.")
                    ] = False,
    db: DbOption = None,
) -> None:
    """Let quarantined workers claim attempts again (after fixing or checking the box)."""
    if worker is None and host is None and not all_:
        raise WorkerError("recip workers release: name a WORKER, --host HOST or --all "
                          "(quarantined workers are listed by `recip workers ls`)")
    with open_repo(db_url(db)) as repo:
        released = repo.release_workers(datetime.now(UTC), worker=worker, host=host)
    if not released:
        what = worker or (f"host {host}" if host else "any worker")
        raise WorkerError(f"no quarantined worker matches {what}; see `recip workers ls --all`")
    say(f"released {len(released)} worker(s): {', '.join(released)}")


@app.command("down")
def down(
    runs_dir: RunsDirOption = Path(DEFAULT_RUNS_DIR),
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Seconds to wait for the workers to stop.", min=0.0)] = 120.0,
) -> None:
    """Ask the local `recip workers up` / `recip run` processes to stop cleanly."""
    found = live_pidfiles(runs_dir)
    if not found:
        say(f"no running workers found under {runs_dir / PIDFILES}")
        return
    for _, info in found:
        os.kill(int(info["pid"]), signal.SIGTERM)
        say(f"asked pid {info['pid']} ({info.get('what')}, {info.get('db')}) to stop")
    deadline = time.monotonic() + timeout
    left = [int(info["pid"]) for _, info in found]
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p for p in left if _alive(p)]
    if left:
        raise WorkerError(f"still running after {timeout:.0f}s: pid {', '.join(map(str, left))}"
                          "; wait, or send SIGTERM again to kill their attempts")
    say("all workers stopped")
