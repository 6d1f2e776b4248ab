"""Workers whose process is gone: found on this host by pid, marked stopped.

A worker killed with its driver (SIGKILL, a crashed box) never writes `stopped_at`, so its
row would go on reading as a running worker. `recip status` (like the lease reaper for
attempts) marks the workers registered on this host whose pid is no longer a live process
as stopped, and says so; workers on other hosts keep their row until their own host sees it,
and their heartbeat age shows how long they have been silent.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.core.views import Snapshot
    from orchestrator.queue.repo import QueueRepo


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live (non-zombie) process on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True
    except OSError:
        return True


def dead_workers(snapshot: Snapshot, host: str | None = None) -> list[tuple[str, int]]:
    """(worker id, pid) of the snapshot's running workers on `host` (this one by default)
    whose process is gone."""
    here = host or socket.gethostname()
    return [(w.id, w.pid) for w in snapshot.workers
            if w.stopped_at is None and w.host == here and w.pid is not None
            and not pid_alive(w.pid)]


def mark_dead_workers(repo: QueueRepo, snapshot: Snapshot, now: datetime) -> list[str]:
    """Mark this host's dead workers stopped; returns their ids (nothing on a read-only db)."""
    if repo.read_only:
        return []
    gone = dead_workers(snapshot)
    for worker_id, _ in gone:
        repo.worker_stopped(worker_id, now)
    return [w for w, _ in gone]
