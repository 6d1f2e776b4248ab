"""Synthetic StudyResults for the analysis tests: built in memory, no database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.core.results import AttemptResult, StudyResults

SEED000_RULES = [
    {"step": "step1", "worse_than": "baseline", "say": "check mechanism 1 init and gate_alpha"},
    {"step": "step2", "not_better_than": "step1", "say": "verify attention weights are reused"},
    {"step": "step3", "worse_than": "step2", "say": "try recip_alpha 0.1"},
    {"step": "step5", "not_better_than": "step3", "say": "SPAM may add nothing"},
]


def seed000_spec(noise_floor: float = 0.0) -> dict[str, Any]:
    parents = {"baseline": None, "step1": "baseline", "step2": "step1", "step3": "step2",
               "step4": "step2", "step5": "step3"}
    expect = {"baseline": [3.6154, 3.6154], "step1": [3.56, 3.59], "step2": [3.51, 3.56],
              "step3": [3.46, 3.51], "step4": [3.51, 3.56], "step5": [3.40, 3.50]}
    return {
        "study": "ra_mla_reciprocal",
        "steps": {s: {"parent": p, "description": s, "expect": {"best_val_loss": expect[s]}}
                  for s, p in parents.items()},
        "analysis": {"metric": "best_val_loss", "noise_floor": noise_floor,
                     "pairs": [{"a": "step4", "b": "step2", "label": "optimizer (2 vs 4)"},
                               {"a": "step5", "b": "step3", "label": "optimizer (3 vs 5)"}],
                     "rules": SEED000_RULES},
    }


def result_dict(loss: float, **over: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "status": "succeeded", "best_val_loss": loss, "final_val_loss": loss + 0.01,
        "iters": 100, "tokens": 819200, "tokens_per_s": 10000.0, "train_s": 81.92,
        "effective_batch_tokens": 8192, "device": "cpu",
        "params": {"total": 1_000_000, "attention": 200_000, "mlp": 400_000, "mechanism": 0},
    }
    res.update(over)
    return res


CONFIG = {"model": {"block_size": 128, "attn": "causal", "attn_knobs": {}, "mlp": "gelu",
                    "mlp_knobs": {}},
          "data": {"dataset": "kjv", "tokenizer": "gpt2"},
          "train": {"budget": {"seconds": 60.0, "iters": None, "tokens": None},
                    "batch_size": 8, "grad_accum": 8}}


Builder = Callable[..., StudyResults]


@pytest.fixture
def spec000() -> Callable[..., dict[str, Any]]:
    """seed000_spec(noise_floor=0.0): the seed-000 study as a validated-spec dict."""
    return seed000_spec


@pytest.fixture
def build() -> Builder:
    """build(spec, {step: [loss per seed] | [(loss, {result overrides}, {attempt fields})]})."""

    def _build(spec: dict[str, Any], data: dict[str, list[Any]],
               steps: list[str] | None = None) -> StudyResults:
        attempts = []
        next_id = 1
        for step, entries in data.items():
            for seed, entry in enumerate(entries, start=1):
                if isinstance(entry, tuple):
                    loss, over, fields = (list(entry) + [{}, {}])[:3]
                else:
                    loss, over, fields = entry, {}, {}
                fields = dict(fields)
                state = fields.pop("state", "succeeded")
                result = {} if loss is None else result_dict(loss, **over)
                attempts.append(AttemptResult(
                    study=spec["study"], step=step, seed=seed, run_id=next_id,
                    attempt_id=next_id, attempt_no=fields.pop("attempt_no", 1), state=state,
                    config_hash=f"h{step}", config=fields.pop("config", CONFIG), result=result,
                    code_sha=fields.pop("code_sha", "1e1859e0000"), **fields))
                next_id += 1
        return StudyResults(name=spec["study"], description="", spec=spec, spec_hash="x",
                            steps=tuple(steps or spec["steps"]), attempts=tuple(attempts))

    return _build
