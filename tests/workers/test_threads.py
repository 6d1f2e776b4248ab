"""CPU thread assignment: a CPU worker slot of k cores gives its attempts k torch threads
(RECIP_THREADS and OMP_NUM_THREADS in the slot's environment); GPU slots keep torch's own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.pool import PoolConfig, Slot, WorkerPool, slot_env
from workers.train.artifacts import THREADS_ENV


@pytest.fixture(autouse=True)
def _no_thread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_cpu_slots_split_the_cores(tmp_path: Path, workers: int) -> None:
    pool = WorkerPool(PoolConfig(db_url="sqlite:///x.db", runs_dir=tmp_path, gpus=None,
                                 cpu_workers=workers))
    slots, init = pool._plan_local()
    cpu = [s for s in slots if not s.gpu]
    assert len(cpu) == workers
    per = max(1, (os.cpu_count() or 1) // workers)
    assert {s.threads for s in cpu} == {per}
    assert init["num_cpus"] >= per * workers
    for s in cpu:
        env = slot_env(s, {"RECIP_DATA_DIR": "/data"})
        assert env == {"RECIP_DATA_DIR": "/data", THREADS_ENV: str(per), "OMP_NUM_THREADS": str(per),
                       "OMP_WAIT_POLICY": "PASSIVE"}


def test_gpu_slots_get_no_thread_env() -> None:
    assert Slot("gpu0", True, 1.0).threads is None
    assert slot_env(Slot("gpu0", True, 1.0), {"A": "1"}) == {"A": "1"}


def test_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    slot = Slot("cpu0", False, 4.0)
    assert slot_env(slot, {"OMP_NUM_THREADS": "2"}) == {
        "OMP_NUM_THREADS": "2", THREADS_ENV: "4", "OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv(THREADS_ENV, "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert slot_env(slot, {}) == {"OMP_NUM_THREADS": "4"}
