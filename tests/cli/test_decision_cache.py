"""The decision line of `recip status` from the content-addressed cache: the same line as
computed, a miss whenever anything it reads changes (a result, a new attempt, the analysis
code), never an error when the cache cannot be used, and no scipy on a hit."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta

import pytest

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.cli import decide, decision_cache
from orchestrator.core.loader import spec_from_text
from orchestrator.core.resolve import resolve
from orchestrator.core.states import AttemptState

SPEC = """
study: cached
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 90}}
  seeds: [1, 2, 3]
steps:
  V0: {description: baseline}
  V1: {parent: V0, mlp: {rmlp: {R_ff: 64}}}
"""
LOSS = {("V0", 1): 3.00, ("V0", 2): 3.10, ("V0", 3): 2.95,
        ("V1", 1): 3.50, ("V1", 2): 3.61, ("V1", 3): 3.44}
LEASE = timedelta(seconds=60)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(decision_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "decisions"


def _finish_all(repo, clock, loss=LOSS) -> None:
    while (c := repo.claim("w", clock.now(), LEASE)) is not None:
        repo.start(c.attempt_id, "w", clock.now(), LEASE, artifact_dir=f"/tmp/c/{c.attempt_id}",
                   code_sha="a" * 40, code_dirty=False, diff_hash=None, host="h", gpu=None,
                   pid=1, env={})
        clock.advance(90)
        v = loss[(c.step, c.seed)]
        repo.finish(c.attempt_id, "w", clock.now(), AttemptState.SUCCEEDED, exit_code=0,
                    result={"best_val_loss": v, "final_val_loss": v, "train_s": 90.0,
                            "iters": 100, "tokens": 100_000})


@pytest.fixture
def study(repo, fake_clock):
    plan = resolve(spec_from_text(SPEC, file="cached.yaml"), presets=PRESETS,
                   vocab=TOKENIZER_VOCAB)
    repo.submit(plan, fake_clock.now())
    _finish_all(repo, fake_clock)
    return repo


def test_a_hit_gives_the_computed_line_and_a_change_misses(study, cache):
    results = study.study_results("cached")
    computed = decide.study_decision(results)
    assert computed and computed == "1 of 1 comparison decided", computed
    assert decision_cache.study_decision(results) == computed          # miss: computed, stored
    assert len(list(cache.glob("*.json"))) == 1
    again = study.study_results("cached")                               # a second read
    assert decision_cache.key(again) == decision_cache.key(results)
    assert decision_cache.lookup(decision_cache.key(again)) == (True, computed)

    changed = replace(results, attempts=(
        replace(results.attempts[0], result={**results.attempts[0].result,
                                             "best_val_loss": 9.0}),
        *results.attempts[1:]))
    assert decision_cache.key(changed) != decision_cache.key(results)
    assert decision_cache.key(results, cap=4) != decision_cache.key(results)


def test_a_new_attempt_and_new_analysis_code_miss(study, cache, fake_clock, monkeypatch):
    before = study.study_results("cached")
    study.add_seeds("cached", fake_clock.now(), counts={"V0": 1, "V1": 1}, max_seeds=8,
                    source="test")
    queued = study.study_results("cached")
    assert decision_cache.key(queued) != decision_cache.key(before)
    _finish_all(study, fake_clock, {**LOSS, ("V0", 4): 3.02, ("V1", 4): 3.52})
    assert decision_cache.key(study.study_results("cached")) != decision_cache.key(queued)

    old = decision_cache.key(before)
    monkeypatch.setattr(decision_cache, "code_version", lambda: "another checkout")
    assert decision_cache.key(before) != old


def test_an_unusable_cache_is_skipped(study, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(decision_cache.CACHE_ENV, str(blocker))       # mkdir fails
    results = study.study_results("cached")
    assert decision_cache.study_decision(results) == decide.study_decision(results)

    folder = tmp_path / "ok"
    monkeypatch.setenv(decision_cache.CACHE_ENV, str(folder))
    k = decision_cache.key(results)
    (folder / "decisions").mkdir(parents=True)
    (folder / "decisions" / f"{k}.json").write_text("{not json")
    assert decision_cache.lookup(k) == (False, None)
    (folder / "decisions" / f"{k}.json").write_text(json.dumps({"key": "other", "line": "x"}))
    assert decision_cache.lookup(k) == (False, None)
    decision_cache.store(k, None)                                      # no comparisons: None
    assert decision_cache.lookup(k) == (True, None)


def test_the_cache_is_pruned_to_its_size(cache, monkeypatch):
    monkeypatch.setattr(decision_cache, "MAX_ENTRIES", 3)
    for i in range(5):
        decision_cache.store(f"k{i}", f"line {i}")
    assert len(list(cache.glob("*.json"))) == 3
    assert not list(cache.glob(".tmp-*"))


PROBE = """
import sys
from orchestrator.cli.app import run
rc = run(sys.argv[1:])
print("PROBE", int("scipy" in sys.modules), rc)
"""


def test_status_on_a_hit_prints_the_line_without_scipy(study, db_url, cache):
    def status() -> tuple[str, str]:
        proc = subprocess.run([sys.executable, "-c", PROBE, "status", "cached", "--db", db_url],
                              capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ,
                                   decision_cache.CACHE_ENV: str(cache.parent)})
        probe = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE "))
        line = next(ln for ln in proc.stderr.splitlines() if "comparison decided" in ln)
        return probe, line

    first, line1 = status()
    second, line2 = status()
    assert first == "PROBE 1 0" and second == "PROBE 0 0", (first, second)
    assert line1 == line2
    assert line1 == f"cached: {decide.study_decision(study.study_results('cached'))}"
