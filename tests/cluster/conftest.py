"""Two emulated GPU boxes: a ray.cluster_utils.Cluster with a head and two nodes that
declare one GPU each, and `recip workers up` per box as a subprocess (docs/cluster.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from workers.pool import OBJECT_STORE_BYTES, QUIET_ENV

ROOT = Path(__file__).resolve().parents[2]
LEASE = 4.0


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[Any]]]:
    import ray._private.utils
    from ray.cluster_utils import Cluster

    for key, value in QUIET_ENV.items():
        monkeypatch.setenv(key, value)
    # Cluster advertises itself in /tmp/ray for address="auto": other Ray users of this
    # machine must not join it by accident
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
    temp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths
    common = {"temp_dir": temp, "object_store_memory": OBJECT_STORE_BYTES,
              "include_dashboard": False}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **common})
    try:
        boxes = [c.add_node(num_cpus=2, num_gpus=1, **common) for _ in range(2)]
        c.wait_for_nodes()
        yield c, boxes
    finally:
        c.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def raylet_pid(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def box_of(pid: int | None, boxes: list[Any]) -> int | None:
    """Which box's Ray node a worker process runs under (its raylet is an ancestor)."""
    if pid is None:
        return None
    try:
        ancestors = {p.pid for p in psutil.Process(pid).parents()}
    except psutil.NoSuchProcess:
        return None
    found = [i for i, b in enumerate(boxes) if raylet_pid(b) in ancestors]
    return found[0] if found else None


def attempt_row(url: str, attempt_id: int) -> Any:
    """pid and artifact_dir of an attempt (not in the read models)."""
    import sqlalchemy as sa

    from orchestrator.queue.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT pid, artifact_dir FROM attempts WHERE id = :i"),
                                {"i": attempt_id}).one()
    finally:
        engine.dispose()


def workers_up(address: str, node: Any, db: str, box: Path, storage: Path) -> subprocess.Popen[bytes]:
    """`recip workers up` as a user on that box types it (docs/cluster.md, step 4)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECIP_DATA_DIR": str(box / "data"),
           "RECIP_STORAGE": str(storage)}
    log = open(box / "workers-up.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli.app", "workers", "up", "--address", address,
         "--node", node.node_id, "--gpus", "all", "--db", db, "--runs-dir", str(box / "runs"),
         "--lease", str(LEASE), "--interval", "0.5"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


