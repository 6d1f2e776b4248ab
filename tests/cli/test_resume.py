"""`recip resume | rerun | show`, and the acceptance test of issue 7: a step fails until a
fix is committed in the checkout the workers run; `recip resume` re-queues only that step,
the new attempt records the new commit, the report flags the mixed commits, and both
attempts stay in the history.

The fast tests drive attempts through the real queue (QueueRepo on SQLite and PostgreSQL);
the acceptance test runs real worker processes and the real trainer from a temporary git
checkout holding a copy of the package, so the code change is a real commit that the
attempt process imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.app import run
from orchestrator.core.states import AttemptState, FailureKind
from orchestrator.queue.repo import QueueRepo
from tests.chaos import worker_proc
from tests.e2e.helpers import ProcessWatcher, write_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "models", "workers", "migrations")
LEASE = timedelta(seconds=30)
GIT_ID = ["-c", "user.name=recip tests", "-c", "user.email=tests@recip.invalid",
          "-c", "commit.gpgsign=false"]


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), *GIT_ID, *args], capture_output=True,
                          text=True, check=True)
    return proc.stdout.strip()


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A small git repository standing in for the code root (two commits)."""
    root = tmp_path / "code"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "model.py").write_text("SCALE = 1\n")
    commit_all(root, "first version")
    (root / "model.py").write_text("SCALE = 2\n")
    commit_all(root, "fix the scale")
    return root


def _finish(repo: QueueRepo, clock: Any, state: AttemptState, *, sha: str,
            kind: FailureKind | None = None, worker: str = "w1") -> int:
    """Claim the next attempt and end it in `state`, as a worker at commit `sha` would."""
    claimed = repo.claim(worker, clock.now(), LEASE)
    assert claimed is not None
    repo.start(claimed.attempt_id, worker, clock.now(), LEASE, artifact_dir=f"/runs/{claimed.attempt_id}",
               code_sha=sha, code_dirty=False, diff_hash=None, host="box", gpu=None, pid=123,
               env={"python": "3.11", "torch": "2.13.0"})
    clock.advance(5)
    if state is AttemptState.LOST:
        clock.advance(60)
        assert repo.reap_expired(clock.now()) == [claimed.attempt_id]
    else:
        repo.finish(claimed.attempt_id, worker, clock.now(), state, failure_kind=kind,
                    exit_code=0 if state is AttemptState.SUCCEEDED else 1,
                    error_type="OutOfMemoryError" if kind is FailureKind.OOM else None,
                    error_message="CUDA out of memory" if kind is FailureKind.OOM else None,
                    result={"status": "succeeded", "best_val_loss": 3.5}
                    if state is AttemptState.SUCCEEDED else {"status": str(kind)})
    clock.advance(1)
    return claimed.attempt_id


def _history(repo: QueueRepo, study: str = "study") -> dict[tuple[str, int], list[tuple[int, str]]]:
    h = repo.history(study)
    return {(r.step, r.seed): [(a.attempt_no, a.state) for a in r.attempts] for r in h.runs}


@pytest.fixture
def study(repo: QueueRepo, plan_factory: Any, fake_clock: Any,
          checkout: Path) -> Iterator[QueueRepo]:
    """V0 succeeded, V1 failed (oom), V2 lost for good (max_attempts 1), V3 still queued."""
    first = git(checkout, "rev-parse", "HEAD~1")
    repo.submit(plan_factory(steps=("V0", "V1", "V2", "V3"), max_attempts=1), fake_clock.now())
    _finish(repo, fake_clock, AttemptState.SUCCEEDED, sha=first)
    _finish(repo, fake_clock, AttemptState.FAILED, sha=first, kind=FailureKind.OOM)
    _finish(repo, fake_clock, AttemptState.LOST, sha=first)
    yield repo


def test_resume_queues_only_unsucceeded_runs_once(study: QueueRepo, db_url: str, checkout: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    first, head = git(checkout, "rev-parse", "HEAD~1"), git(checkout, "rev-parse", "HEAD")
    assert run(["resume", "study", "--db", db_url, "--code-root", str(checkout)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"V1 seed 1: #1 failed:oom -> attempt 2 queued   commit {first[:7]} -> {head[:7]}",
        f"    {head[:7]} fix the scale",
        f"V2 seed 1: #1 lost -> attempt 2 queued   commit {first[:7]} -> {head[:7]}",
        f"    {head[:7]} fix the scale",
    ]
    assert "resume: 2 attempts queued" in err and "history kept" in err
    assert _history(study) == {("V0", 1): [(1, "succeeded")],
                               ("V1", 1): [(1, "failed"), (2, "queued")],
                               ("V2", 1): [(1, "lost"), (2, "queued")],
                               ("V3", 1): [(1, "queued")]}
    # the second resume finds every run succeeded or live: nothing new
    assert run(["resume", "study", "--db", db_url, "--code-root", str(checkout)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("resume: nothing to queue in study study (4 runs: 1 succeeded, "
                   "3 queued or running)\n")
    assert len(_history(study)[("V1", 1)]) == 2
    # the queued event of the new attempt records the checkout it was resumed from
    [v1] = [r for r in study.history("study").runs if r.step == "V1"]
    queued = v1.attempts[-1].queued
    assert queued["reason"] == "resume" and queued["code_sha"] == head
    assert queued["code_dirty"] is False and queued["diff_hash"] is None


def test_resume_filters_by_state_and_step(study: QueueRepo, db_url: str, checkout: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--db", db_url, "--code-root", str(checkout)]
    assert run(["resume", "study", "--timed-out", *args]) == 0
    assert "nothing to queue in study study in state timed_out" in capsys.readouterr().err
    assert run(["resume", "study", "--lost", *args]) == 0
    assert [ln.split(":")[0] for ln in capsys.readouterr().out.splitlines()
            if not ln.startswith(" ")] == ["V2 seed 1"]
    assert run(["resume", "study", "--steps", "V0,V1", *args]) == 0
    assert [ln.split(":")[0] for ln in capsys.readouterr().out.splitlines()
            if not ln.startswith(" ")] == ["V1 seed 1"]
    assert run(["resume", "study", "--steps", "V9", *args]) == 1
    assert capsys.readouterr().err == ("error: no step 'V9' in study 'study' "
                                       "(steps: V0, V1, V2, V3)\n")
    assert run(["resume", "nope", *args]) == 1
    assert capsys.readouterr().err.startswith("error: no study 'nope' in ")


def test_resume_refuses_a_dirty_tree_unless_allowed(study: QueueRepo, db_url: str,
                                                    checkout: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (checkout / "model.py").write_text("SCALE = 3\n")
    (checkout / "notes.txt").write_text("wip\n")
    before = _history(study)
    assert run(["resume", "study", "--db", db_url, "--code-root", str(checkout)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"error: {checkout.resolve()} has uncommitted changes (model.py, notes.txt): "
                   "commit them (the new attempts record the commit they run), or pass "
                   "--allow-dirty to record their diff hash\n")
    assert _history(study) == before
    assert run(["resume", "study", "--db", db_url, "--code-root", str(checkout),
                "--allow-dirty"]) == 0
    out, err = capsys.readouterr()
    assert "(dirty)" in out.splitlines()[0]
    from workers.provenance import code_state

    diff = code_state(checkout).diff_hash
    assert diff and f"recorded as diff {diff}" in err
    [v1] = [r for r in study.history("study").runs if r.step == "V1"]
    assert v1.attempts[-1].queued["code_dirty"] is True
    assert v1.attempts[-1].queued["diff_hash"] == diff


def test_rerun_forces_new_attempts_once(study: QueueRepo, db_url: str, checkout: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--db", db_url, "--code-root", str(checkout)]
    assert run(["rerun", "study", "--steps", "V0", *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("V0 seed 1: #1 succeeded -> attempt 2 queued")
    assert run(["rerun", "study", "--steps", "V0", *args]) == 0
    assert "nothing to queue" in capsys.readouterr().err
    assert _history(study)[("V0", 1)] == [(1, "succeeded"), (2, "queued")]
    assert study.history("study").runs[0].attempts[-1].queued["reason"] == "rerun"
    # --steps is required: a usage error, exit 2
    assert run(["rerun", "study", *args]) == 2
    assert "Missing option '--steps'" in capsys.readouterr().err


def test_show_prints_provenance_per_attempt(study: QueueRepo, db_url: str, checkout: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    first = git(checkout, "rev-parse", "HEAD~1")
    assert run(["resume", "study", "--steps", "V1", "--db", db_url,
                "--code-root", str(checkout)]) == 0
    capsys.readouterr()
    assert run(["show", "study", "V1", "--db", db_url]) == 0
    out = capsys.readouterr().out
    h = study.history("study")
    assert out.splitlines()[0] == f"study study   spec {h.spec_hash[:12]}   code head"
    assert f"  attempt 1  failed: oom   commit {first} (clean)" in out
    assert "    error OutOfMemoryError: CUDA out of memory" in out
    assert f"    advice: {FailureKind.OOM.advice}" in out
    assert "    versions python 3.11  torch 2.13.0" in out
    assert "  attempt 2  queued   commit -" in out
    assert "(resume at " in out
    assert run(["show", "study", "V1", "--json", "--db", db_url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["attempt_no"], d["state"], d["failure_kind"]) for d in data] == [
        (1, "failed", "oom"), (2, "queued", None)]
    one = data[0]
    assert one["advice"] == FailureKind.OOM.advice
    assert one["code_sha"] == first and one["code_dirty"] is False
    assert one["spec_hash"] == h.spec_hash and one["config_hash"] == h.runs[1].config_hash
    assert one["config"]["step"] == "V1" and one["versions"]["torch"] == "2.13.0"
    assert one["host"] == "box" and one["artifact_dir"] and one["started_at"]
    assert run(["show", "study", "V0", "--seed", "7", "--db", db_url]) == 1
    assert capsys.readouterr().err == ("error: step 'V0' of study 'study' has no seed 7 "
                                       "(seeds: 1)\n")
    assert run(["show", "study", "V7", "--db", db_url]) == 1
    assert "error: no step 'V7' in study 'study'" in capsys.readouterr().err


def test_pinned_study(repo: QueueRepo, db_url: str, plan_factory: Any, fake_clock: Any,
                      checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, head = git(checkout, "rev-parse", "HEAD~1"), git(checkout, "rev-parse", "HEAD")
    repo.submit(plan_factory(steps=("V0",), code_policy="pinned", pinned_sha=first[:10],
                             name="pinned"), fake_clock.now())
    repo.submit(plan_factory(steps=("V0",), name="free"), fake_clock.now())
    # a worker at another commit skips the pinned study's attempt; one at the pinned commit
    # (abbreviated in the spec, full in the worker) claims it
    other = repo.claim("w-head", fake_clock.now(), LEASE, code_sha=head)
    assert other is not None and other.study == "free"
    assert repo.claim("w-head", fake_clock.now(), LEASE, code_sha=head) is None
    assert repo.claim("w-nogit", fake_clock.now(), LEASE, code_sha=None) is None
    pinned = repo.claim("w-pinned", fake_clock.now(), LEASE, code_sha=first)
    assert pinned is not None and pinned.study == "pinned"
    repo.start(pinned.attempt_id, "w-pinned", fake_clock.now(), LEASE, artifact_dir="/r",
               code_sha=first, code_dirty=False, diff_hash=None, host="box", gpu=None,
               pid=1, env={})
    repo.finish(pinned.attempt_id, "w-pinned", fake_clock.now(), AttemptState.FAILED,
                failure_kind=FailureKind.DIVERGED, exit_code=1, error_type="Diverged",
                error_message="loss is nan at iteration 7", result={"status": "diverged"})
    args = ["--db", db_url, "--code-root", str(checkout)]
    assert run(["resume", "pinned", "--code", "head", *args]) == 1
    assert capsys.readouterr().err == (
        f"error: study pinned is pinned to {first[:7]}: only workers at that commit run its "
        "attempts; drop --code head, or change `pinned_sha:` in the spec and submit it again\n")
    assert run(["resume", "free", "--code", "pinned", *args]) == 1
    assert "error: study free is not pinned" in capsys.readouterr().err
    assert run(["resume", "pinned", "--code", "bogus", *args]) == 2
    capsys.readouterr()
    # a dirty checkout does not matter for a pinned study: the commit is the pinned one
    (checkout / "model.py").write_text("SCALE = 5\n")
    assert run(["resume", "pinned", "--code", "pinned", *args]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"pinned V0 seed 1: #1 failed:diverged -> attempt 2 queued   commit {first[:7]} -> "
        f"{first[:7]}".removeprefix("pinned "), "    (same commit)"]
    assert f"workers at the pinned commit {first[:7]}" in err
    assert repo.claim("w-head", fake_clock.now(), LEASE, code_sha=head) is None
    again = repo.claim("w-pinned", fake_clock.now(), LEASE, code_sha=first)
    assert again is not None and again.attempt_no == 2
    assert run(["show", "pinned", "V0", *args[:2]]) == 0
    out = capsys.readouterr().out
    assert f"code pinned {first[:10]}" in out and f"advice: {FailureKind.DIVERGED.advice}" in out


def test_automatic_retries_are_bounded_per_cause(repo: QueueRepo, plan_factory: Any,
                                                 fake_clock: Any) -> None:
    """lost and crashed attempts are retried up to the run's max_attempts (they resume from
    their checkpoint); exceptions, OOM and divergence are not retried (the same code would
    fail the same way) until `recip resume`; resume itself is not bounded."""
    repo.submit(plan_factory(steps=("lost", "crash", "boom", "oom", "nan"), max_attempts=3),
                fake_clock.now())
    kinds = {"crash": FailureKind.CRASHED, "boom": FailureKind.EXCEPTION,
             "oom": FailureKind.OOM, "nan": FailureKind.DIVERGED}
    for _ in range(20):
        claimed = repo.claim("w", fake_clock.now(), LEASE)
        if claimed is None:
            break
        repo.start(claimed.attempt_id, "w", fake_clock.now(), LEASE, artifact_dir="/r",
                   code_sha="a" * 40, code_dirty=False, diff_hash=None, host="h", gpu=None,
                   pid=1, env={})
        if claimed.step == "lost":
            fake_clock.advance(60)
            repo.reap_expired(fake_clock.now())
        else:
            repo.finish(claimed.attempt_id, "w", fake_clock.now(), AttemptState.FAILED,
                        failure_kind=kinds[claimed.step], exit_code=1, error_type="E",
                        error_message="m", result=None)
    h = _history(repo)
    assert h == {("lost", 1): [(1, "lost"), (2, "lost"), (3, "lost")],
                 ("crash", 1): [(1, "failed"), (2, "failed"), (3, "failed")],
                 ("boom", 1): [(1, "failed")], ("oom", 1): [(1, "failed")],
                 ("nan", 1): [(1, "failed")]}
    created = repo.new_attempts("study", fake_clock.now())
    assert sorted(created) == [("boom", 1, 2), ("crash", 1, 4), ("lost", 1, 4), ("nan", 1, 2),
                               ("oom", 1, 2)]


# --- the acceptance test -----------------------------------------------------------------

BUG = '        if self.training:\n            raise RuntimeError("R-MLP: wrong fold of the reciprocal branch")\n'
FORWARD = "    def forward(self, x, ctx: BlockContext):\n"


def make_code_checkout(root: Path) -> Path:
    """A git checkout holding a copy of the package as it is in this working tree."""
    for pkg in PACKAGES:
        shutil.copytree(REPO_ROOT / pkg, root / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / ".gitignore").write_text("__pycache__/\n*.pyc\n")
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "recip as tested")
    return root


def recip(code: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`recip ARGS` run from the checkout `code` (its own copy of the package)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.app", *args], cwd=code,
                          env=env, capture_output=True, text=True, timeout=120)


def run_worker(code: Path, db: str, runs: Path, env: dict[str, str], name: str) -> None:
    """One worker process from the checkout `code`, until the study has nothing left."""
    proc = subprocess.run(
        worker_proc.command("--db", db, "--runs-dir", str(runs), "--worker-id", name,
                            "--study", "fix", "--until-empty", "--lease", "10"),
        cwd=code, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fix_commit_resume(tmp_path: Path, sqlite_url: str) -> None:
    code = make_code_checkout(tmp_path / "checkout")
    rmlp = code / "models" / "mechanisms" / "rmlp.py"
    text = rmlp.read_text()
    assert text.count(FORWARD) == 1
    rmlp.write_text(text.replace(FORWARD, FORWARD + BUG))
    broken = commit_all(code, "R-MLP: fold the reciprocal branch")
    env = {**os.environ, "RECIP_DATA_DIR": str(tmp_path / "data"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("RECIP_DB_URL", None)
    spec = write_spec(tmp_path, study="fix", steps=("V0", "V1"), iters=8)
    runs = tmp_path / "runs"
    repo = QueueRepo.open(sqlite_url)

    with ProcessWatcher() as watcher:
        sub = recip(code, "queue", "submit", str(spec), "--no-check", "--db", sqlite_url, env=env)
        assert sub.returncode == 0, sub.stderr
        run_worker(code, sqlite_url, runs, env, "box:cpu0")
        assert _history(repo, "fix") == {("V0", 1): [(1, "succeeded")],
                                         ("V1", 1): [(1, "failed")]}
        [v0, v1] = repo.history("fix").runs
        assert v0.attempts[0].code_sha == broken and v1.attempts[0].code_sha == broken
        assert v1.attempts[0].failure_kind == "exception"
        assert "wrong fold of the reciprocal branch" in (v1.attempts[0].error_message or "")

        # the fix, not yet committed: resume refuses and changes nothing
        rmlp.write_text(text)
        refused = recip(code, "resume", "fix", "--db", sqlite_url, env=env)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith(f"error: {code.resolve()} has uncommitted changes "
                                         "(models/mechanisms/rmlp.py)")
        assert "Traceback" not in refused.stderr
        assert len(_history(repo, "fix")[("V1", 1)]) == 1

        fixed = commit_all(code, "R-MLP: fix the fold")
        resumed = recip(code, "resume", "fix", "--db", sqlite_url, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.splitlines() == [
            f"V1 seed 1: #1 failed:exception -> attempt 2 queued   commit {broken[:7]} -> "
            f"{fixed[:7]}",
            f"    {fixed[:7]} R-MLP: fix the fold",
        ]
        again = recip(code, "resume", "fix", "--db", sqlite_url, env=env)
        assert again.returncode == 0 and again.stdout == ""
        assert "nothing to queue" in again.stderr

        run_worker(code, sqlite_url, runs, env, "box:cpu1")
    assert watcher.leftovers() == set()

    assert _history(repo, "fix") == {("V0", 1): [(1, "succeeded")],
                                     ("V1", 1): [(1, "failed"), (2, "succeeded")]}
    [v0, v1] = repo.history("fix").runs
    assert [a.code_sha for a in v1.attempts] == [broken, fixed]
    assert v1.attempts[1].queued["code_sha"] == fixed
    assert v1.attempts[1].artifact_dir != v1.attempts[0].artifact_dir
    assert Path(v1.attempts[0].artifact_dir or "", "result.json").exists()

    report = recip(code, "report", "fix", "--format", "json", "--db", sqlite_url, env=env)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    confounders = [c for cmp in data["comparisons"] for c in cmp["confounders"]]
    assert f"code commits differ: V1 {fixed[:7]} vs V0 {broken[:7]}" in confounders
    table = recip(code, "report", "fix", "--db", sqlite_url, env=env)
    assert "code commits differ" in table.stdout

    shown = recip(code, "show", "fix", "V1", "--db", sqlite_url, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"  attempt 1  failed: exception   commit {broken} (clean)" in shown.stdout
    assert f"  attempt 2  succeeded   commit {fixed} (clean)" in shown.stdout
    assert f"(resume at {fixed[:7]})" in shown.stdout

    rerun = recip(code, "rerun", "fix", "--steps", "V0", "--db", sqlite_url, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines()[0] == (f"V0 seed 1: #1 succeeded -> attempt 2 queued   "
                                            f"commit {broken[:7]} -> {fixed[:7]}")
    assert _history(repo, "fix")[("V0", 1)] == [(1, "succeeded"), (2, "queued")]
    repo.close()



def test_resume_outside_git(study: QueueRepo, db_url: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert run(["resume", "study", "--steps", "V1", "--db", db_url, "--code-root",
                str(plain)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "    (no commit to run)"
    assert f"warning: {plain.resolve()} is not a git checkout" in err


def test_a_dirty_tree_does_not_matter_when_nothing_would_be_queued(
        repo: QueueRepo, db_url: str, plan_factory: Any, fake_clock: Any, checkout: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    repo.submit(plan_factory(steps=("V0",), name="done"), fake_clock.now())
    claimed = repo.claim("w", fake_clock.now(), LEASE)
    assert claimed is not None
    repo.start(claimed.attempt_id, "w", fake_clock.now(), LEASE, artifact_dir="/r",
               code_sha=None, code_dirty=None, diff_hash=None, host="box", gpu=None, pid=1,
               env={})
    repo.finish(claimed.attempt_id, "w", fake_clock.now(), AttemptState.SUCCEEDED,
                result={"status": "succeeded"})
    (checkout / "model.py").write_text("SCALE = 7\n")  # uncommitted
    assert run(["resume", "done", "--db", db_url, "--code-root", str(checkout)]) == 0
    assert capsys.readouterr().err == (
        "resume: nothing to queue in study done (1 runs: 1 succeeded, 0 queued or running)\n")
