"""`--until-decided` end to end on a real SQLite file and a real PostgreSQL, with the real
analysis and a fake attempt runner (the one process boundary faked): seeds go only to the
steps of the open comparison, every addition is a recorded look, the report applies the
sequential correction to the grown comparison, and the loop says why it stopped."""

from __future__ import annotations

import random
from datetime import timedelta

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.cli.decide import Stopped, hours_per_seed, study_decision, until_decided
from orchestrator.core.loader import spec_from_text
from orchestrator.core.resolve import resolve
from orchestrator.core.states import AttemptState
from orchestrator.report.analysis import analyze

SPEC = """
study: grow
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 90}}
  seeds: [1, 2]
steps:
  V0: {description: baseline}
  V1: {parent: V0, mlp: {rmlp: {R_ff: 64}}}
  V2: {parent: V0, attention: {unified_ra: {R: 4}}}
"""
EFFECT = {"V0": 0.0, "V1": -0.04, "V2": 0.8}
"""True effect per step: V2 is far worse (decided at once), V1 a little better (needs seeds)."""


def loss(step: str, seed: int) -> float:
    shared = random.Random(seed).gauss(0.0, 0.3)  # what a seed does to every step alike
    own = random.Random(f"{step}/{seed}").gauss(0.0, 0.02)
    return 3.0 + shared + EFFECT[step] + own


class FakeRunner:
    """Finishes every queued attempt as `succeeded` with the synthetic metric."""

    def __init__(self, repo, clock) -> None:
        self.repo, self.clock, self.rounds = repo, clock, 0

    def run_round(self) -> bool:
        self.rounds += 1
        lease = timedelta(seconds=60)
        while (c := self.repo.claim("fake", self.clock.now(), lease)) is not None:
            self.repo.start(c.attempt_id, "fake", self.clock.now(), lease,
                            artifact_dir=f"/tmp/fake/{c.attempt_id}", code_sha="a" * 40,
                            code_dirty=False, diff_hash=None, host="h", gpu=None, pid=1,
                            env={})
            value = loss(c.step, c.seed)
            self.clock.advance(90)
            self.repo.finish(c.attempt_id, "fake", self.clock.now(), AttemptState.SUCCEEDED,
                             exit_code=0, result={"best_val_loss": value,
                                                  "final_val_loss": value, "train_s": 90.0,
                                                  "iters": 100, "tokens": 100_000})
        return True


def _plan():
    return resolve(spec_from_text(SPEC, file="grow.yaml"), presets=PRESETS,
                   vocab=TOKENIZER_VOCAB)


def _loop(repo, clock, runner, said):
    def add(counts):
        return repo.add_seeds("grow", clock.now(), counts=counts, max_seeds=8,
                              source="until-decided").added

    return until_decided(
        analyse=lambda: analyze(repo.study_results("grow")),
        steps=lambda: sorted({a.step for a in repo.study_results("grow").attempts}),
        add=add, run_round=runner.run_round, cap=8,
        hours=lambda: hours_per_seed(repo.study_results("grow")), say=said.append)


def _seeds(results):
    return {s: sorted({a.seed for a in results.attempts if a.step == s}) for s in EFFECT}


def test_a_declared_design_spends_seeds_where_they_decide(repo, fake_clock):
    repo.submit(_plan(), fake_clock.now())
    assert repo.declare_design("grow", fake_clock.now(), 8)  # what --until-decided does
    assert not repo.declare_design("grow", fake_clock.now(), 8)  # once
    runner = FakeRunner(repo, fake_clock)
    runner.run_round()
    first = {c.a: c for c in analyze(repo.study_results("grow")).comparisons}
    # look 0 is already a sequential look: at n = 2 nothing is decided, however large
    assert {c.verdict for c in first.values()} == {"inconclusive"}
    assert first["V1"].sequential.startswith("O'Brien-Fleming alpha spending")
    line = study_decision(repo.study_results("grow"))
    assert line is not None and line.startswith("0 of 2 comparisons decided; ")
    assert "GPU-hours" in line

    said: list[str] = []
    stop = _loop(repo, fake_clock, runner, said)
    results = repo.study_results("grow")
    seeds = _seeds(results)
    assert len(seeds["V2"]) < len(seeds["V1"])  # the large effect needed fewer seeds
    assert seeds["V1"] == seeds["V0"][:len(seeds["V1"])]  # paired seeds
    design, *added = results.looks
    assert design.seeds == () and design.max_seeds == 8
    assert added and stop.rounds == runner.rounds - 1 and said
    final = {c.a: c for c in analyze(results).comparisons}
    assert final["V2"].verdict == "worse" and len(final["V2"].looks) >= 2
    assert "no declared design" not in final["V1"].sequential
    # fixed RNG: both decide within the cap, V2 (the large effect) with fewer seeds
    assert stop == Stopped("all 2 comparisons decided", stop.rounds, True) and stop.rounds >= 1
    assert 2 < len(seeds["V2"]) < len(seeds["V1"]) <= 8
    assert said[0].startswith("round 2: 0 of 2 comparisons decided; ") and "adding V1 +" in said[0]
    assert final["V1"].verdict == "better"


def test_seeds_added_without_a_design_correct_only_the_grown_comparison(repo, fake_clock):
    repo.submit(_plan(), fake_clock.now())
    runner = FakeRunner(repo, fake_clock)
    runner.run_round()
    first = {c.a: c for c in analyze(repo.study_results("grow")).comparisons}
    assert (first["V1"].verdict, first["V2"].verdict) == ("inconclusive", "worse")
    assert first["V1"].sequential == ""  # the pre-registered sample: a fixed-sample test
    stop = _loop(repo, fake_clock, runner, [])
    results = repo.study_results("grow")
    seeds = _seeds(results)
    assert seeds["V2"] == [1, 2]  # decided at the first look: no seed spent on it
    assert len(seeds["V1"]) > 2 and seeds["V1"] == seeds["V0"]
    assert all(set(lk.steps) == {"V0", "V1"} and lk.max_seeds == 8 for lk in results.looks)
    assert stop.rounds == len(results.looks) == runner.rounds - 1
    final = {c.a: c for c in analyze(results).comparisons}
    assert final["V1"].sequential.startswith("O'Brien-Fleming alpha spending")
    assert "no declared design" in final["V1"].sequential
    assert final["V1"].looks[0] == 2 and len(final["V1"].looks) == stop.rounds + 1
    assert final["V2"].sequential == "" and final["V2"].verdict == "worse"


def test_status_prints_the_decision_line(repo, db_url, fake_clock, capsys):
    from orchestrator.cli.app import run

    repo.submit(_plan(), fake_clock.now())
    assert run(["status", "grow", "--db", db_url]) == 0
    assert "comparisons decided" not in capsys.readouterr().err  # nothing ran yet
    FakeRunner(repo, fake_clock).run_round()
    assert run(["status", "grow", "--db", db_url]) == 0
    err = capsys.readouterr().err.splitlines()
    line = next(x for x in err if x.startswith("grow: "))
    assert line.startswith("grow: 1 of 2 comparisons decided; V1 vs V0 needs ~")
    assert line.endswith("GPU-hours)")
