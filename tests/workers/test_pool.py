"""The pool refuses clearly (WorkerError, one line, no hang) what it cannot start; the CLI
turns that into `error: ...` and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import app as cli
from orchestrator.core.errors import WorkerError
from workers.pool import PoolConfig, WorkerPool
from workers.provenance import gpu_indices


def test_more_gpus_than_the_machine_has_is_refused(tmp_path: Path) -> None:
    have = gpu_indices()
    asked = ",".join(str(i) for i in range(len(have) + 1))
    pool = WorkerPool(PoolConfig(db_url="sqlite:///x.db", runs_dir=tmp_path, gpus=asked))
    with pytest.raises(WorkerError, match=rf"asked for {len(have) + 1} GPU\(s\) but this "
                                          rf"machine has {len(have)}"):
        pool.start()


@pytest.mark.parametrize("gpus", ["abc", "0,0", "-1"])
def test_bad_gpu_lists_are_refused(tmp_path: Path, gpus: str) -> None:
    with pytest.raises(WorkerError, match="--gpus"):
        WorkerPool(PoolConfig(db_url="sqlite:///x.db", runs_dir=tmp_path, gpus=gpus)).start()


def test_cli_refusal_is_one_line(sqlite_url: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.run(["workers", "up", "--gpus", "0,1,2,3,4,5,6,7,8", "--db", sqlite_url,
                  "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: --gpus 0,1,2,3,4,5,6,7,8: asked for 9 GPU(s)")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_workers_down_without_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["workers", "down", "--runs-dir", str(tmp_path)]) == 0
    assert "no running workers" in capsys.readouterr().err


def test_no_gpu_refusals_suggest_what_works_here(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.pool as pool_module

    monkeypatch.setattr(pool_module, "gpu_indices", lambda: [])
    with pytest.raises(WorkerError) as e:
        WorkerPool(PoolConfig(db_url="sqlite:///x.db", runs_dir=tmp_path, gpus="0,1")).start()
    assert str(e.value) == ("--gpus 0,1: asked for 2 GPU(s) but this machine has 0; "
                            "use --cpu-workers N")  # not `--gpus all`, which fails here too
    monkeypatch.setattr(pool_module.shutil, "which", lambda name: None)
    with pytest.raises(WorkerError, match=r"there is no nvidia-smi, so no NVIDIA driver"):
        WorkerPool(PoolConfig(db_url="sqlite:///x.db", runs_dir=tmp_path, gpus="all")).start()
