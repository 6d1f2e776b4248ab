"""A REAL attempt with W&B offline: `python -m workers.run_attempt` on a tiny CPU config, once
per test session, and a queue whose attempt row points at its directory (as a worker leaves
it). Used by test_wandb.py and test_baseline.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDY, STEP, SEED = "wbstudy", "V0", 7
CODE_SHA = "0123456789abcdef0123456789abcdef01234567"
TEXT = "\n\n".join(f"In the beginning {i} was the word and the word was {i % 7}." for i in range(300))


@dataclass(frozen=True)
class OfflineAttempt:
    outdir: Path
    config: dict[str, Any]
    attempt_id: int
    seconds: float


_CACHE: dict[str, OfflineAttempt] = {}


def run_config(data_file: Path) -> dict[str, Any]:
    """A resolved run config: 2 layers x 64 wide, T=32, byte tokenizer, 20 iterations."""
    return {
        "study": STUDY, "step": STEP, "seed": SEED,
        "model": {"preset": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32,
                  "attn": "causal", "attn_knobs": {}, "mlp": "gelu", "mlp_knobs": {}},
        "data": {"dataset": f"text:{data_file}", "tokenizer": "byte"},
        "train": {"budget": {"seconds": None, "iters": 20, "tokens": None}, "batch_size": 4,
                  "grad_accum": 1, "lr": 3e-3, "min_lr": 3e-4, "warmup": 2, "eval_every": 10,
                  "eval_batches": 2, "log_every": 5, "stats_every": 10, "device": "cpu"},
        "optimizer": {"name": "adamw"},
        "wandb": {"mode": "offline", "project": None, "entity": None},
    }


def offline_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with no W&B key and W&B's own files kept inside the test dirs."""
    env = dict(os.environ if base is None else base)
    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY"):
        env.pop(k, None)
    return env


def make_offline_attempt(tmp_path_factory: pytest.TempPathFactory) -> OfflineAttempt:
    """Run the attempt once per session (about 10 s on 2 shared cores)."""
    if "attempt" in _CACHE:
        return _CACHE["attempt"]
    import time

    base = tmp_path_factory.mktemp("wandb-attempt")
    data_file = base / "corpus.txt"
    data_file.write_text(TEXT)
    outdir = base / "runs" / STUDY / STEP / f"seed{SEED}" / "attempt1"
    outdir.mkdir(parents=True)
    config = run_config(data_file)
    (outdir / "config.json").write_text(json.dumps(config))
    (outdir / "attempt.json").write_text(json.dumps(
        {"attempt_id": 1, "attempt_no": 1, "study": STUDY, "step": STEP, "seed": SEED,
         "code_sha": CODE_SHA}))
    env = offline_env()
    env.update(RECIP_DATA_DIR=str(base / "data"), WANDB_DIR=str(base / "wandb-home"),
               WANDB_CONFIG_DIR=str(base / "wandb-config"), WANDB_CACHE_DIR=str(base / "cache"),
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "workers.run_attempt", str(outdir / "config.json"),
                           str(outdir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((outdir / "result.json").read_text())
    assert result["status"] == "succeeded", result
    _CACHE["attempt"] = OfflineAttempt(outdir=outdir, config=config, attempt_id=1, seconds=seconds)
    return _CACHE["attempt"]


def queue_with_attempt(url: str, attempt: OfflineAttempt, clock: Any) -> int:
    """Submit a one-run study and take its attempt through claim/start/finish as a worker
    does, with `attempt.outdir` as the artifact dir; returns the attempt id."""
    from orchestrator.core.ids import config_hash
    from orchestrator.core.plan import RunPlan, StudyPlan
    from orchestrator.core.states import AttemptState
    from orchestrator.queue.repo import QueueRepo

    cfg = attempt.config
    spec = {"study": STUDY, "steps": {STEP: {"description": "baseline GPT-2"}}}
    plan = StudyPlan(name=STUDY, description="W&B test", spec_hash="0" * 64, spec=spec,
                     runs=(RunPlan(step=STEP, seed=SEED, config=cfg,
                                   config_hash=config_hash(cfg), budget_seconds=None),))
    result = json.loads((attempt.outdir / "result.json").read_text())
    with QueueRepo.open(url) as repo:
        repo.submit(plan, clock.now())
        claimed = repo.claim("w1", clock.now(), timedelta(seconds=30))
        assert claimed is not None
        repo.start(claimed.attempt_id, "w1", clock.now(), timedelta(seconds=30),
                   artifact_dir=str(attempt.outdir), code_sha=CODE_SHA, code_dirty=False,
                   diff_hash=None, host="testhost", gpu=None, pid=1, env={})
        repo.finish(claimed.attempt_id, "w1", clock.advance(5), AttemptState.SUCCEEDED,
                    exit_code=0, result=result)
        return claimed.attempt_id
