"""`python -m workers.run_attempt CONFIG.json OUTDIR` as a real subprocess on kjv/byte:
the 30 s budget run, SIGKILL + resume, SIGTERM, --resume-from, exceptions in result.json."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.workers.train.conftest import run_config
from workers.train import artifacts

ROOT = Path(__file__).resolve().parents[3]


def _env(data_root: Path) -> dict[str, str]:
    return {**os.environ, "RECIP_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def _cmd(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workers.run_attempt", str(cfg), str(out), *extra]


def _attempt(data_root: Path, cfg: Path, out: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(cfg, out, *extra), env=_env(data_root), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _losses(out: Path) -> dict[int, float]:
    """Train loss per iteration; after a resume the later record of an iteration wins."""
    curve: dict[int, float] = {}
    for line in (out / artifacts.METRICS).read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec["values"]:
            curve[rec["iter"]] = rec["values"]["loss"]
    return curve


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not pred():
        assert proc.poll() is None, f"attempt exited early ({proc.returncode})"
        assert time.monotonic() - t0 < timeout, "timed out waiting for the attempt"
        time.sleep(0.05)


@pytest.mark.slow
def test_tiny_kjv_30s_budget(kjv_byte, data_root, tmp_path):
    cfg = run_config(budget={"seconds": 30.0, "iters": None, "tokens": None}, batch_size=8,
                     lr=2e-3, min_lr=2e-4, warmup=20, eval_every=100, eval_batches=4,
                     log_every=25, stats_every=100)
    cfg["model"] = {"preset": "tiny"}
    out = tmp_path / "a1"
    proc = _attempt(data_root, _write(out / "config.json", cfg), out, timeout=150)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / artifacts.RESULT).read_text())
    progress = json.loads((out / artifacts.PROGRESS).read_text())
    print(f"tiny/kjv/byte 30s: iters {result['iters']}, val {result['final_val_loss']:.3f}, "
          f"train_s {result['train_s']}, wall_s {result['wall_s']}, tok/s {result['tokens_per_s']}")
    assert result["status"] == "succeeded"
    assert set(artifacts.RESULT_KEYS) <= set(result)
    assert abs(result["train_s"] - 30.0) < 2.0
    assert result["final_val_loss"] < math.log(320) - 2.0          # uniform: ln(vocab) = 5.77
    assert abs(result["final_lr"] - 2e-4) / 2e-4 < 0.10
    assert result["params"]["total"] > 0 and result["device"] == "cpu"
    assert result["precision"]["autocast_dtype"] is None and result["precision"]["threads"] == 1
    assert progress["iter"] == result["iters"] and progress["phase"] == "succeeded"
    assert result["eval_s"] > 0 and progress["eval_s"] == result["eval_s"]
    assert (out / artifacts.METRICS).stat().st_size > 0 and (out / artifacts.CHECKPOINT).exists()
    assert "step " in proc.stdout and "| tok/s " in proc.stdout


@pytest.mark.slow
def test_sigkill_and_resume_continue_the_same_curve(kjv_byte, data_root, tmp_path):
    cfg = _write(tmp_path / "config.json", run_config(budget={"iters": 40}, log_every=1, eval_every=10))
    full = tmp_path / "full"
    assert _attempt(data_root, cfg, full).returncode == 0
    reference = _losses(full)
    assert sorted(reference) == list(range(1, 41))

    # kill -9 once a checkpoint past iteration 20 exists
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(cfg, killed), env=_env(data_root), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def checkpointed_past_20() -> bool:
            p = artifacts.read_json(killed / artifacts.PROGRESS)
            return bool(p) and p.get("iter", 0) >= 21 and (killed / artifacts.CHECKPOINT).exists()
        _wait_for(checkpointed_past_20, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / artifacts.RESULT).exists()
    source_sha = _sha(killed / artifacts.CHECKPOINT)

    # another attempt continues from the killed one's checkpoint (copied, never modified)
    other = tmp_path / "other"
    r = _attempt(data_root, cfg, other, "--resume-from", str(killed))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _sha(killed / artifacts.CHECKPOINT) == source_sha
    res_other = json.loads((other / artifacts.RESULT).read_text())
    start = res_other["resumed_from_iter"]
    assert start >= 20 and start % 10 == 0 and res_other["iters"] == 40
    # its metrics carry the killed attempt's records up to the checkpoint: the whole curve
    assert _losses(other) == reference

    # the killed attempt itself resumes from its own OUTDIR
    r = _attempt(data_root, cfg, killed)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((killed / artifacts.RESULT).read_text())
    assert res["resumed_from_iter"] == start and res["iters"] == 40
    assert _losses(killed) == reference
    full_res = json.loads((full / artifacts.RESULT).read_text())
    assert res["final_val_loss"] == full_res["final_val_loss"]


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_interrupted(kjv_byte, data_root, tmp_path):
    cfg = _write(tmp_path / "config.json", run_config(budget={"iters": 100000}, eval_every=1000))
    out = tmp_path / "a"
    proc = subprocess.Popen(_cmd(cfg, out), env=_env(data_root), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (artifacts.read_json(out / artifacts.PROGRESS) or {}).get("iter", 0) >= 5, proc)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == artifacts.EXIT_INTERRUPTED, stdout[-2000:]
    result = json.loads((out / artifacts.RESULT).read_text())
    assert result["status"] == artifacts.STATUS_INTERRUPTED
    from workers.train.checkpoint import read_checkpoint
    assert read_checkpoint(out / artifacts.CHECKPOINT)["loop"]["it"] == result["iters"] >= 5


@pytest.mark.slow
def test_an_exception_is_recorded_and_exits_1(data_root, tmp_path):
    cfg = run_config()
    cfg["train"]["learning_rate"] = 1e-3       # a typo: unknown key
    out = tmp_path / "bad"
    r = _attempt(data_root, _write(out / "config.json", cfg), out)
    assert r.returncode == artifacts.EXIT_FAILED
    result = json.loads((out / artifacts.RESULT).read_text())
    assert result["status"] == artifacts.STATUS_FAILED
    assert result["error_type"] == "ValueError"
    assert "train.learning_rate" in result["error_message"]
    assert "Traceback" in result["traceback"] and "from_dict" in result["traceback"]


@pytest.mark.slow
def test_an_unreadable_checkpoint_starts_the_attempt_fresh_and_says_so(kjv_byte, data_root,
                                                                       tmp_path):
    out = tmp_path / "c"
    cfg = _write(out / "config.json", run_config(budget={"iters": 3}))
    (out / artifacts.CHECKPOINT).write_bytes(b"garbage" * 100)
    r = _attempt(data_root, cfg, out)
    assert r.returncode == artifacts.EXIT_OK, r.stdout[-2000:]
    result = json.loads((out / artifacts.RESULT).read_text())
    fallback = result["checkpoint_fallback"]
    assert fallback["fresh_start"] is True and fallback["resumed_from"] is None
    assert [s["path"] for s in fallback["skipped"]] == [str(out / artifacts.CHECKPOINT)]
    assert result["resumed_from_iter"] is None and result["iters"] == 3
    assert (out / "checkpoint.pt.unreadable").read_bytes() == b"garbage" * 100
    assert "falling back to a fresh start" in r.stdout


def test_a_stop_signal_turned_into_another_error_by_an_import_still_counts_as_a_stop():
    # SIGTERM while numpy's C extension imports: numpy re-raises our Interrupted as an
    # ImportError; the attempt must still end `interrupted` (exit 3), not `failed`, and the
    # OOM classifier must not import the half-imported module again
    from workers.run_attempt import Interrupted, _caused_by_interrupt, _is_oom

    try:
        try:
            raise Interrupted(15)
        except Interrupted as stop:
            raise ImportError('PyCapsule_Import could not import module "datetime"') from stop
    except ImportError as err:
        assert _caused_by_interrupt(err)
        assert not _is_oom(err)
    assert not _caused_by_interrupt(ValueError("a real failure"))
    assert _is_oom(MemoryError()) and _is_oom(RuntimeError("CUDA out of memory. Tried ..."))
