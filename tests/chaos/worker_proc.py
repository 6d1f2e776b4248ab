"""One real WorkerLoop in a process of its own, for the resume and chaos tests (no Ray).

Started with `python -c BOOT ARGS` (see `command()`), so the packages come from the child's
working directory: a test can run a worker from another git checkout. SIGTERM stops the loop
cleanly (the running attempt checkpoints and goes back to queued); SIGKILL is the chaos.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOT = ("import sys; sys.path.insert(1, {here!r}); import worker_proc; "
        "sys.exit(worker_proc.main(sys.argv[1:]))")


def command(*args: str) -> list[str]:
    """argv that starts a worker process with `args` (packages from the child's cwd)."""
    return [sys.executable, "-c", BOOT.format(here=str(HERE)), *args]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="worker_proc")
    p.add_argument("--db", required=True)
    p.add_argument("--runs-dir", type=Path, required=True)
    p.add_argument("--worker-id", required=True)
    p.add_argument("--study")
    p.add_argument("--lease", type=float, default=4.0)
    p.add_argument("--poll", type=float, default=0.2)
    p.add_argument("--idle-poll", type=float, default=0.3)
    p.add_argument("--grace", type=float, default=120.0)
    p.add_argument("--kill-after", type=float, default=10.0)
    p.add_argument("--until-empty", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.worker_id} %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)

    from orchestrator.queue.db import redact_url
    from orchestrator.queue.repo import QueueRepo
    from workers.loop import WorkerLoop, WorkerSettings

    settings = WorkerSettings(
        worker_id=args.worker_id, runs_dir=args.runs_dir, lease_s=args.lease,
        poll_s=args.poll, idle_poll_s=args.idle_poll, grace_s=args.grace,
        kill_after_s=args.kill_after, until_empty=args.until_empty, study=args.study,
        db_label=redact_url(args.db), backoff_s=0.2, backoff_max_s=2.0)
    repo = QueueRepo.open(args.db)
    loop = WorkerLoop(repo, settings)
    signal.signal(signal.SIGTERM, lambda signum, frame: loop.stop())
    try:
        report = loop.run()
    finally:
        repo.close()
    print(f"worker {args.worker_id} pid {os.getpid()}: {len(report.outcomes)} attempts, "
          f"{report.succeeded} succeeded ({report.reason})", file=sys.stderr, flush=True)
    return 0
