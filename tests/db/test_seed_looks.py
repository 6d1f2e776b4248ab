"""Seeds added after a look, on a real SQLite file and a real PostgreSQL: new runs copy the
step's config with only the seed changed, stored runs never change, adding the same seeds
twice adds nothing, and every addition is one study-level look the report reads back."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.core import ids
from orchestrator.core.errors import QueueError, UnknownStep, UnknownStudy
from orchestrator.queue.looks import choose_seeds
from orchestrator.queue.schema import RUNS, STUDY_EVENTS


def _runs(repo):
    with repo.engine.connect() as conn:
        return {(r.step_key, r.seed): r for r in conn.execute(sa.select(RUNS))}


def test_added_seeds_copy_the_steps_config_and_queue_attempts(repo, plan_factory, fake_clock):
    plan = plan_factory(steps=("V0", "V1"), seeds=(1, 2), configs={"V1": {"lr": 1e-3}})
    repo.submit(plan, fake_clock.now())
    before = _runs(repo)
    fake_clock.advance(60)
    out = repo.add_seeds("study", fake_clock.now(), counts={"V0": 2, "V1": 2}, max_seeds=6)
    assert out.added == {"V0": (3, 4), "V1": (3, 4)} and out.runs == 4 and out.look is not None
    after = _runs(repo)
    for key, row in before.items():  # stored runs are untouched
        assert after[key].config_json == row.config_json
        assert after[key].config_hash == row.config_hash
        assert after[key].superseded_at is None
    for step in ("V0", "V1"):
        for seed in (3, 4):
            new = after[(step, seed)]
            expected = {**before[(step, 1)].config_json, "seed": seed}
            assert new.config_json == expected
            assert new.config_hash == ids.config_hash(expected)
            assert new.budget_seconds == before[(step, 1)].budget_seconds
    snap = repo.snapshot(fake_clock.now(), "study")
    states = {(r.step, r.seed): r.state for r in snap.studies[0].runs}
    assert states[("V1", 4)] == "queued" and len(states) == 8
    claimed = [repo.claim("w", fake_clock.now(), timedelta(seconds=30)) for _ in range(8)]
    assert sorted((c.step, c.seed) for c in claimed if c) == sorted(states)
    new_attempt = next(c for c in claimed if c and c.seed == 4)
    assert repo.events(new_attempt.attempt_id)[0]["payload"]["reason"] == "seeds"


def test_the_look_is_recorded_and_read_back_with_the_results(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1", "V2"), seeds=(1, 2)), fake_clock.now())
    assert repo.study_results("study").looks == ()
    t1 = fake_clock.advance(10)
    repo.add_seeds("study", t1, counts={"V0": 1, "V1": 1}, max_seeds=4)
    t2 = fake_clock.advance(10)
    repo.add_seeds("study", t2, seeds={"V2": [3, 4]})
    looks = repo.study_results("study").looks
    assert [(lk.at, lk.steps, lk.seeds, lk.max_seeds) for lk in looks] == [
        (t1, ("V0", "V1"), (3,), 4), (t2, ("V2",), (3, 4), None)]
    with repo.engine.connect() as conn:
        payloads = list(conn.execute(sa.select(STUDY_EVENTS.c.kind, STUDY_EVENTS.c.payload_json)
                                     .order_by(STUDY_EVENTS.c.id)))
    assert payloads[0] == ("seeds_added", {"source": "seeds add", "max_seeds": 4,
                                           "before": {"V0": 2, "V1": 2},
                                           "added": {"V0": [3], "V1": [3]}})


def test_adding_present_seeds_again_adds_nothing_and_records_no_look(repo, plan_factory,
                                                                      fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1"), seeds=(1, 2)), fake_clock.now())
    first = repo.add_seeds("study", fake_clock.now(), seeds={"V0": [2, 3], "V1": [3]})
    assert first.added == {"V0": (3,), "V1": (3,)} and first.present["V0"] == (2,)
    again = repo.add_seeds("study", fake_clock.advance(5), seeds={"V0": [2, 3], "V1": [3]})
    assert again.added == {} and again.look is None and again.runs == 0
    assert len(repo.study_results("study").looks) == 1
    assert len(_runs(repo)) == 6


def test_counts_fill_the_seeds_other_steps_have_first_and_stop_at_the_cap():
    current = {"V0": [1, 2], "V1": [1, 2, 3, 4], "V2": [1, 2]}
    seeds, capped = choose_seeds(current, {"V0": 3, "V2": 1}, max_seeds=4)
    assert seeds == {"V0": [3, 4], "V2": [3]} and capped == ["V0"]
    seeds, capped = choose_seeds(current, {"V1": 2})
    assert seeds == {"V1": [5, 6]} and capped == []
    assert choose_seeds(current, {"V1": 2}, max_seeds=4) == ({"V1": []}, ["V1"])


def test_a_resubmit_keeps_the_added_seeds(repo, plan_factory, fake_clock):
    plan = plan_factory(steps=("V0", "V1"), seeds=(1, 2))
    repo.submit(plan, fake_clock.now())
    repo.add_seeds("study", fake_clock.advance(5), counts={"V1": 1})
    result = repo.submit(plan, fake_clock.advance(5))
    assert not result.changed
    assert ("V1", 3) in _runs(repo) and _runs(repo)[("V1", 3)].superseded_at is None


def test_a_changed_step_supersedes_its_added_seeds_too(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1"), seeds=(1, 2)), fake_clock.now())
    repo.add_seeds("study", fake_clock.advance(5), counts={"V0": 1, "V1": 1})
    changed = plan_factory(steps=("V0", "V1"), seeds=(1, 2), configs={"V1": {"lr": 1e-3}})
    result = repo.submit(changed, fake_clock.advance(5))
    assert result.changed_steps == ("V1",) and result.superseded_runs == 3
    assert result.cancelled_attempts == 3  # all three were still queued
    runs = _runs(repo)
    assert runs[("V1", 3)].superseded_at is not None  # the old config's added seed
    assert runs[("V0", 3)].superseded_at is None  # V0 did not change: its seed stays
    current = {(a.step, a.seed) for a in repo.study_results("study").attempts}
    assert current == {("V0", 1), ("V0", 2), ("V0", 3), ("V1", 1), ("V1", 2)}


def test_bad_requests_change_nothing(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1"), seeds=(1, 2)), fake_clock.now())
    before = _runs(repo)
    with pytest.raises(UnknownStudy):
        repo.add_seeds("nope", fake_clock.now(), counts={"V0": 1})
    with pytest.raises(UnknownStep, match="'V9'"):
        repo.add_seeds("study", fake_clock.now(), counts={"V0": 1, "V9": 1})
    with pytest.raises(QueueError, match=">= 1"):
        repo.add_seeds("study", fake_clock.now(), counts={"V0": 0})
    with pytest.raises(QueueError, match=">= 0"):
        repo.add_seeds("study", fake_clock.now(), seeds={"V0": [-1]})
    with pytest.raises(QueueError, match="max-seeds 3"):
        repo.add_seeds("study", fake_clock.now(), seeds={"V0": [3, 4]}, max_seeds=3)
    with pytest.raises(QueueError, match="exactly one"):
        repo.add_seeds("study", fake_clock.now())
    assert _runs(repo).keys() == before.keys()
    assert repo.study_results("study").looks == ()
