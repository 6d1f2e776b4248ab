"""QueueRepo on a real SQLite file and a real PostgreSQL database (the `repo` fixture runs
each test on both)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.core.errors import (
    LeaseLost,
    QueueError,
    StaleTransition,
    UnknownStep,
    UnknownStudy,
)
from orchestrator.core.states import AttemptState, FailureKind
from orchestrator.queue.repo import QueueRepo

LEASE = timedelta(seconds=60)
TABLES = ("studies", "runs", "attempts", "events", "metrics", "workers")


def counts(repo: QueueRepo) -> dict[str, int]:
    with repo.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def attempts_of(repo: QueueRepo, step: str | None = None) -> list[dict[str, Any]]:
    sql = ("SELECT a.id, a.attempt_no, a.state, a.worker_id, r.step_key, r.seed, a.failure_kind "
           "FROM attempts a JOIN runs r ON r.id = a.run_id ORDER BY a.id")
    with repo.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(sql))]
    return [r for r in rows if step is None or r["step_key"] == step]


def start(repo: QueueRepo, claimed: Any, worker: str, clock: Any, artifact_dir: str = "/tmp/a") -> None:
    repo.start(claimed.attempt_id, worker, clock.now(), LEASE, artifact_dir=artifact_dir,
               code_sha="abc123", code_dirty=False, diff_hash=None, host="box", gpu="0",
               pid=4242, env={"torch": "2.13"})


# -- submit -------------------------------------------------------------------------------


def test_submit_creates_study_runs_and_queued_attempts(repo, plan_factory, fake_clock):
    plan = plan_factory(steps=("V0", "V1", "V2"), seeds=(1, 2))
    result = repo.submit(plan, fake_clock.now())
    assert result.study_created
    assert result.queued_attempts == 6
    assert sorted((s, seed) for s, seed, _ in result.new_runs) == sorted(
        (s, seed) for s in ("V0", "V1", "V2") for seed in (1, 2))
    assert result.unchanged_runs == 0 and result.changed_steps == ()
    assert counts(repo) == {"studies": 1, "runs": 6, "attempts": 6, "events": 6, "metrics": 0,
                            "workers": 0}
    assert {a["state"] for a in attempts_of(repo)} == {"queued"}
    assert repo.study_names() == ["study"]


def test_submitting_the_same_plan_twice_adds_nothing(repo, plan_factory, fake_clock):
    plan = plan_factory(steps=("V0", "V1"), seeds=(1, 2))
    repo.submit(plan, fake_clock.now())
    before = counts(repo)
    fake_clock.advance(30)
    again = repo.submit(plan, fake_clock.now())
    assert not again.changed
    assert again.new_runs == () and again.queued_attempts == 0 and again.unchanged_runs == 4
    assert counts(repo) == before


def test_a_changed_step_config_adds_a_new_run_and_says_so(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1"), seeds=(1, 2)), fake_clock.now())
    old_hashes = {(v.step, v.seed): v.config_hash
                  for v in repo.snapshot(fake_clock.now()).studies[0].runs}
    changed = plan_factory(steps=("V0", "V1"), seeds=(1, 2), configs={"V1": {"lr": 1e-3}})
    result = repo.submit(changed, fake_clock.advance(10))
    assert result.changed_steps == ("V1",)
    assert sorted((s, seed) for s, seed, _ in result.new_runs) == [("V1", 1), ("V1", 2)]
    assert result.unchanged_runs == 2 and result.queued_attempts == 2
    assert result.superseded_runs == 2 and result.cancelled_attempts == 2
    view = {(v.step, v.seed): v for v in repo.snapshot(fake_clock.now()).studies[0].runs}
    assert len(view) == 4
    assert view[("V0", 1)].config_hash == old_hashes[("V0", 1)]
    assert view[("V1", 1)].config_hash != old_hashes[("V1", 1)]
    assert view[("V1", 1)].state == "queued"
    # The superseded runs keep their history; their queued attempts were cancelled.
    v1 = attempts_of(repo, "V1")
    assert sorted(a["state"] for a in v1) == ["cancelled", "cancelled", "queued", "queued"]
    # Resubmitting the changed plan is a no-op; going back re-activates the old runs.
    assert not repo.submit(changed, fake_clock.advance(10)).changed
    back = repo.submit(plan_factory(steps=("V0", "V1"), seeds=(1, 2)), fake_clock.advance(10))
    assert back.new_runs == () and back.changed_steps == ("V1",)
    view = {(v.step, v.seed): v for v in repo.snapshot(fake_clock.now()).studies[0].runs}
    assert view[("V1", 1)].config_hash == old_hashes[("V1", 1)]
    assert counts(repo)["runs"] == 6


def test_submit_keeps_spec_order_and_updates_the_spec(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V3", "V0", "V1")), fake_clock.now())
    repo.submit(plan_factory(steps=("V3", "V0", "V1"), description="new words"),
                fake_clock.advance(1))
    results = repo.study_results("study")
    assert results.steps == ("V3", "V0", "V1")
    assert results.description == "new words"
    assert [v.step for v in repo.snapshot(fake_clock.now()).studies[0].runs] == ["V3", "V0", "V1"]


def test_a_plan_with_a_step_seed_twice_is_refused(repo, plan_factory, fake_clock):
    plan = plan_factory(steps=("V0",))
    doubled = type(plan)(**{**plan.__dict__, "runs": plan.runs + plan.runs})
    with pytest.raises(QueueError, match="V0.*twice"):
        repo.submit(doubled, fake_clock.now())
    assert counts(repo)["studies"] == 0


# -- claim --------------------------------------------------------------------------------


def test_claim_follows_priority_then_submission_order(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("A", "B", "C"), priority={"C": 5}), fake_clock.now())
    got = [repo.claim(f"w{i}", fake_clock.now(), LEASE) for i in range(4)]
    assert [c.step for c in got[:3]] == ["C", "A", "B"]
    assert got[3] is None
    c = got[0]
    assert c.study == "study" and c.seed == 1 and c.attempt_no == 1 and c.max_attempts == 3
    assert c.config["step"] == "C" and c.budget_seconds == 60.0
    assert c.previous_artifact_dir is None
    assert c.lease_expires_at == fake_clock.now() + LEASE


def test_claim_skips_studies_pinned_to_another_commit(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("P",), name="pinned", code_policy="pinned",
                             pinned_sha="feed"), fake_clock.now())
    assert repo.claim("w", fake_clock.now(), LEASE) is None
    assert repo.claim("w", fake_clock.now(), LEASE, code_sha="beef") is None
    got = repo.claim("w", fake_clock.now(), LEASE, code_sha="feed")
    assert got is not None and got.study == "pinned"


def test_a_full_attempt_life(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    repo.register_worker("w1", fake_clock.now(), host="box", gpu="0", pid=1)
    c = repo.claim("w1", fake_clock.now(), LEASE)
    start(repo, c, "w1", fake_clock)
    fake_clock.advance(20)
    repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE,
                   {"iter": 50, "tokens": 3200, "train_s": 12.5, "fraction": 0.2, "loss": 4.5,
                    "val_loss": 4.6, "best_val_loss": 4.6, "lr": 6e-4, "phase": "train"})
    repo.worker_heartbeat("w1", fake_clock.now(), current_attempt=c.attempt_id)
    assert repo.record_metrics(c.attempt_id, "w1", [("loss", 0, 5.0), ("loss", 10, 4.8),
                                                    ("val_loss", 50, 4.6)]) == 3
    # Upsert: a replayed row replaces, never duplicates.
    assert repo.record_metrics(c.attempt_id, "w1", [("loss", 10, 4.7), ("loss", 10, 4.75)]) == 1

    run = repo.snapshot(fake_clock.now()).studies[0].runs[0]
    assert (run.state, run.worker, run.iter, run.tokens, run.val_loss) == (
        "running", "w1", 50, 3200, 4.6)
    assert run.heartbeat_at == fake_clock.now()
    assert run.lease_expires_at == fake_clock.now() + LEASE

    fake_clock.advance(40)
    result = {"status": "succeeded", "best_val_loss": 4.2, "final_val_loss": 4.25,
              "iters": 200, "tokens": 12800, "train_s": 60.0, "device": "cpu"}
    repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.SUCCEEDED, exit_code=0,
                result=result)
    repo.worker_stopped("w1", fake_clock.now())

    snap = repo.snapshot(fake_clock.now())
    run = snap.studies[0].runs[0]
    assert (run.state, run.best_val_loss, run.val_loss, run.iter) == ("succeeded", 4.2, 4.25, 200)
    assert snap.studies[0].counts == {"succeeded": 1}
    assert snap.workers[0].id == "w1" and snap.workers[0].stopped_at == fake_clock.now()
    res = repo.study_results("study")
    (a,) = res.attempts
    assert a.state == "succeeded" and a.result == result and a.code_sha == "abc123"
    assert a.device == "cpu" and a.host == "box" and a.config["step"] == "V0"
    assert repo.attempt(c.attempt_id) == a
    assert [e["kind"] for e in repo.events(c.attempt_id)] == [
        "queued", "claimed", "started", "finished"]
    series = repo.metric_series([c.attempt_id])
    assert series[c.attempt_id]["loss"] == [(0, 5.0), (10, 4.75)]
    assert repo.metric_series([c.attempt_id], names=["val_loss"]) == {
        c.attempt_id: {"val_loss": [(50, 4.6)]}}
    assert repo.metric_series([c.attempt_id], prefix="val_") == {
        c.attempt_id: {"val_loss": [(50, 4.6)]}}


def test_heartbeats_carry_the_phase_and_eval_seconds_into_the_snapshot(repo, plan_factory,
                                                                      fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    c = repo.claim("w1", fake_clock.now(), LEASE)
    start(repo, c, "w1", fake_clock)

    def run() -> Any:
        return repo.snapshot(fake_clock.now()).studies[0].runs[0]

    assert (run().phase, run().eval_s) == (None, None)
    repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE,
                   {"phase": "preparing_data", "iter": 0, "train_s": 0.0})
    assert (run().phase, run().eval_s) == ("preparing_data", None)
    fake_clock.advance(10)
    repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE,
                   {"phase": "eval", "iter": 20, "train_s": 8.0, "eval_s": 1.25})
    assert (run().phase, run().eval_s, run().train_s) == ("eval", 1.25, 8.0)
    # a phase that is not a string is dropped, an over-long one cut to the column
    repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE, {"phase": 7, "eval_s": "x"})
    assert (run().phase, run().eval_s) == (None, None)
    repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE, {"phase": "p" * 50})
    assert run().phase == "p" * 32
    repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.SUCCEEDED, exit_code=0,
                result={"status": "succeeded", "iters": 40, "train_s": 16.0, "eval_s": 2.5})
    assert (run().state, run().eval_s, run().train_s) == ("succeeded", 2.5, 16.0)


def test_nan_metrics_read_back_as_nan_and_nan_results_are_stored(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    c = repo.claim("w1", fake_clock.now(), LEASE)
    start(repo, c, "w1", fake_clock)
    repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE, {"loss": float("nan")})
    repo.record_metrics(c.attempt_id, "w1", [("loss", 1, float("nan")), ("loss", 2, math.inf)])
    repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.FAILED,
                failure_kind=FailureKind.DIVERGED, result={"status": "diverged",
                                                           "final_train_loss": float("nan")})
    (step1, v1), (step2, v2) = repo.metric_series([c.attempt_id])[c.attempt_id]["loss"]
    assert math.isnan(v1) and v2 == math.inf
    a = repo.attempt(c.attempt_id)
    assert a.failure_kind == "diverged" and a.result == {"status": "diverged",
                                                         "final_train_loss": None}


def test_timestamps_come_back_aware_utc_and_naive_ones_are_refused(repo, plan_factory, fake_clock):
    from datetime import datetime, timezone

    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    tz = timezone(timedelta(hours=5))
    c = repo.claim("w1", fake_clock.now().astimezone(tz), LEASE)
    run = repo.snapshot(fake_clock.now()).studies[0].runs[0]
    assert run.heartbeat_at == fake_clock.now()
    assert run.heartbeat_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        repo.heartbeat(c.attempt_id, "w1", datetime(2026, 1, 1), LEASE)


# -- leases, reaping, fencing -------------------------------------------------------------


def test_heartbeat_extends_the_lease(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    c = repo.claim("w1", fake_clock.now(), LEASE)
    for _ in range(5):
        fake_clock.advance(50)
        repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE)
        assert repo.reap_expired(fake_clock.now()) == []
    fake_clock.advance(61)
    assert repo.reap_expired(fake_clock.now()) == [c.attempt_id]


def test_an_expired_lease_is_reaped_and_retried_within_max_attempts(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",), max_attempts=2), fake_clock.now())
    first = repo.claim("w1", fake_clock.now(), LEASE)
    start(repo, first, "w1", fake_clock, artifact_dir="/runs/V0-1/a1")
    fake_clock.advance(61)
    second = repo.claim("w2", fake_clock.now(), LEASE)
    assert second is not None and second.attempt_no == 2 and second.run_id == first.run_id
    assert second.previous_artifact_dir == "/runs/V0-1/a1"
    assert [(a["attempt_no"], a["state"]) for a in attempts_of(repo)] == [
        (1, "lost"), (2, "claimed")]
    assert [e["kind"] for e in repo.events(first.attempt_id)] == [
        "queued", "claimed", "started", "lost"]
    fake_clock.advance(61)
    assert repo.claim("w3", fake_clock.now(), LEASE) is None  # max_attempts=2 reached
    run = repo.snapshot(fake_clock.now()).studies[0].runs[0]
    assert run.state == "lost" and run.attempts == 2 and "retried" in run.flags


def test_snapshot_flags_an_expired_lease_before_it_is_reaped(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    repo.claim("w1", fake_clock.now(), LEASE)
    fake_clock.advance(61)
    run = repo.snapshot(fake_clock.now()).studies[0].runs[0]
    assert run.state == "claimed" and "lease_expired" in run.flags


def test_every_write_of_a_fenced_out_worker_is_rejected_and_changes_nothing(
        repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    a = repo.claim("worker-a", fake_clock.now(), LEASE)
    start(repo, a, "worker-a", fake_clock)
    repo.record_metrics(a.attempt_id, "worker-a", [("loss", 0, 5.0)])
    fake_clock.advance(LEASE.total_seconds() + 1)  # worker-a stalls past its lease
    b = repo.claim("worker-b", fake_clock.now(), LEASE)
    assert b is not None and b.run_id == a.run_id and b.attempt_id != a.attempt_id
    start(repo, b, "worker-b", fake_clock)

    def state() -> tuple[Any, ...]:
        with repo.engine.connect() as conn:
            att = conn.execute(sa.text("SELECT * FROM attempts ORDER BY id")).all()
            met = conn.execute(sa.text("SELECT * FROM metrics ORDER BY attempt_id, name, step")).all()
            ev = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        return tuple(map(tuple, att)), tuple(map(tuple, met)), ev

    before = state()
    now = fake_clock.advance(1)
    writes = [
        lambda: repo.heartbeat(a.attempt_id, "worker-a", now, LEASE, {"iter": 99}),
        lambda: repo.record_metrics(a.attempt_id, "worker-a", [("loss", 1, 4.0)]),
        lambda: repo.finish(a.attempt_id, "worker-a", now, AttemptState.SUCCEEDED,
                            result={"best_val_loss": 1.0}),
        lambda: repo.finish(a.attempt_id, "worker-a", now, AttemptState.FAILED,
                            failure_kind=FailureKind.CRASHED),
        lambda: start(repo, a, "worker-a", fake_clock),
        lambda: repo.requeue(a.attempt_id, "worker-a", now),
        # worker-a also cannot touch worker-b's attempt
        lambda: repo.heartbeat(b.attempt_id, "worker-a", now, LEASE),
        lambda: repo.record_metrics(b.attempt_id, "worker-a", [("loss", 1, 4.0)]),
        lambda: repo.finish(b.attempt_id, "worker-a", now, AttemptState.CANCELLED),
    ]
    for write in writes:
        with pytest.raises(LeaseLost):
            write()
    assert state() == before
    repo.heartbeat(b.attempt_id, "worker-b", now, LEASE)  # the new holder is unaffected


def test_a_requeued_attempt_fences_out_its_old_worker(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    a = repo.claim("worker-a", fake_clock.now(), LEASE)
    start(repo, a, "worker-a", fake_clock, artifact_dir="/runs/V0/a1")
    repo.requeue(a.attempt_id, "worker-a", fake_clock.now())
    b = repo.claim("worker-b", fake_clock.now(), LEASE)
    assert b.attempt_id == a.attempt_id and b.attempt_no == 1
    assert b.previous_artifact_dir == "/runs/V0/a1"  # resumes from its own checkpoint
    with pytest.raises(LeaseLost):
        repo.heartbeat(a.attempt_id, "worker-a", fake_clock.now(), LEASE)
    with pytest.raises(LeaseLost):
        repo.finish(a.attempt_id, "worker-a", fake_clock.now(), AttemptState.FAILED)
    repo.heartbeat(b.attempt_id, "worker-b", fake_clock.now(), LEASE)


def test_guarded_transitions(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    c = repo.claim("w1", fake_clock.now(), LEASE)
    with pytest.raises(StaleTransition, match="claimed"):  # never started
        repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.SUCCEEDED)
    with pytest.raises(QueueError, match="terminal"):
        repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.RUNNING)
    start(repo, c, "w1", fake_clock)
    with pytest.raises(StaleTransition):
        start(repo, c, "w1", fake_clock)
    with pytest.raises(LeaseLost, match="does not exist"):
        repo.heartbeat(99999, "w1", fake_clock.now(), LEASE)
    repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.TIMED_OUT)
    with pytest.raises(LeaseLost):
        repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.SUCCEEDED)


def test_only_crashed_and_lost_attempts_retry_by_themselves(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("crash", "boom", "oom")), fake_clock.now())
    kinds = {"crash": FailureKind.CRASHED, "boom": FailureKind.EXCEPTION, "oom": FailureKind.OOM}
    for _ in range(3):
        c = repo.claim("w1", fake_clock.now(), LEASE)
        start(repo, c, "w1", fake_clock)
        repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.FAILED,
                    failure_kind=kinds[c.step], exit_code=-9, error_type="X", error_message="m")
    states = {(a["step_key"], a["attempt_no"]): a["state"] for a in attempts_of(repo)}
    assert states == {("crash", 1): "failed", ("crash", 2): "queued",
                      ("boom", 1): "failed", ("oom", 1): "failed"}


def test_new_attempts_resumes_what_did_not_succeed_once(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("ok", "bad", "live"), seeds=(1, 2)), fake_clock.now())
    while (c := repo.claim("w1", fake_clock.now(), LEASE)) is not None:
        if c.step == "live":
            continue
        start(repo, c, "w1", fake_clock)
        if c.step == "ok":
            repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.SUCCEEDED)
        else:
            repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.FAILED,
                        failure_kind=FailureKind.EXCEPTION)
    created = repo.new_attempts("study", fake_clock.now())
    assert sorted(created) == [("bad", 1, 2), ("bad", 2, 2)]
    assert repo.new_attempts("study", fake_clock.now()) == []
    assert repo.new_attempts("study", fake_clock.now(), steps=["ok"], states=["failed"]) == []
    forced = repo.new_attempts("study", fake_clock.now(), steps=["ok"], force=True)
    assert sorted(forced) == [("ok", 1, 2), ("ok", 2, 2)]
    assert repo.new_attempts("study", fake_clock.now(), force=True) == []  # all live now
    with pytest.raises(UnknownStep, match="nope"):
        repo.new_attempts("study", fake_clock.now(), steps=["nope"])
    with pytest.raises(QueueError, match="terminal"):
        repo.new_attempts("study", fake_clock.now(), states=["queued"])


def test_cancel_stops_queued_and_running_attempts(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1", "V2")), fake_clock.now())
    repo.submit(plan_factory(steps=("X",), name="other"), fake_clock.now())
    c = repo.claim("w1", fake_clock.now(), LEASE)
    start(repo, c, "w1", fake_clock)
    assert repo.cancel("study", fake_clock.now(), steps=["V1"]) == 1
    assert repo.cancel("study", fake_clock.now()) == 2
    assert repo.cancel("study", fake_clock.now()) == 0
    with pytest.raises(LeaseLost):
        repo.heartbeat(c.attempt_id, "w1", fake_clock.now(), LEASE)
    snap = repo.snapshot(fake_clock.now(), "study")
    assert [s.name for s in snap.studies] == ["study"]
    assert snap.studies[0].counts == {"cancelled": 3} and snap.studies[0].done
    assert repo.snapshot(fake_clock.now(), "other").studies[0].counts == {"queued": 1}
    with pytest.raises(UnknownStudy, match="nope.*other, study"):
        repo.cancel("nope", fake_clock.now())
    with pytest.raises(UnknownStep):
        repo.cancel("study", fake_clock.now(), steps=["V9"])


def test_unknown_names_raise(repo, fake_clock):
    with pytest.raises(UnknownStudy):
        repo.snapshot(fake_clock.now(), "nope")
    with pytest.raises(UnknownStudy):
        repo.study_results("nope")
    with pytest.raises(QueueError, match="no attempt 7"):
        repo.attempt(7)
    with pytest.raises(QueueError, match="not registered"):
        repo.worker_heartbeat("ghost", fake_clock.now())
    assert repo.snapshot(fake_clock.now()).studies == ()


def test_workers_show_in_the_snapshot(repo, fake_clock):
    repo.register_worker("box:0", fake_clock.now(), host="box", gpu="0", pid=10)
    repo.register_worker("box:1", fake_clock.now(), host="box", gpu="1", pid=11)
    repo.worker_heartbeat("box:0", fake_clock.advance(5), current_attempt=3)
    repo.worker_stopped("box:1", fake_clock.now())
    fake_clock.advance(3600)
    workers = repo.snapshot(fake_clock.now()).workers
    assert [(w.id, w.current_attempt) for w in workers] == [("box:0", 3)]
    repo.register_worker("box:1", fake_clock.now(), host="box", gpu="1", pid=12)
    assert {w.id: w.pid for w in repo.snapshot(fake_clock.now()).workers} == {
        "box:0": 10, "box:1": 12}


def test_the_database_keeps_one_live_attempt_per_run(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    with pytest.raises(sa.exc.IntegrityError), repo.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO attempts (run_id, attempt_no, state, priority, created_at) "
            "SELECT run_id, 2, 'queued', 0, created_at FROM attempts"))
