"""`recip resume | rerun | show`: re-queue what did not succeed after a fix, force new
attempts, and show every attempt's provenance.

Resume and rerun only ever add attempts (attempt_no + 1 of the same run); nothing is deleted
or overwritten, and running either twice adds nothing the second time. They print, per run,
the commit its last attempt ran, the commit the new attempt will run, and the `git log` in
between. Git runs as argument lists on commits read from the database, checked to be hex.
"""

from __future__ import annotations

import enum
import re
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import (
    DbOption,
    JsonOption,
    StudyArgument,
    db_url,
    emit_json,
    say,
    split_csv,
)
from orchestrator.core.errors import QueueError, RecipError, UnknownStep
from orchestrator.core.states import LIVE

if TYPE_CHECKING:
    from orchestrator.queue.history import AttemptRecord, RunHistory, StudyHistory

_SHA = re.compile(r"^[0-9a-f]{7,64}$")
_LOG_MAX = 20

StudyArg = StudyArgument


class Code(enum.StrEnum):
    head = "head"
    pinned = "pinned"


CodeOption = Annotated[Code | None, typer.Option(
    "--code", help="head: the new attempts run this checkout's HEAD; pinned: the study's "
    "pinned commit (default: the study's own `code:` policy).", show_default=False)]
AllowDirtyOption = Annotated[bool, typer.Option(
    "--allow-dirty", help="Resume from a checkout with uncommitted changes (their diff hash "
    "is recorded with the new attempts).")]
CodeRootOption = Annotated[Path | None, typer.Option(
    "--code-root", help="The git checkout the workers run (default: the one recip runs from).",
    show_default=False)]


@dataclass(frozen=True)
class Checkout:
    """What the new attempts will run: a commit, and the state of the local tree."""

    root: Path
    policy: str
    sha: str | None
    dirty: bool | None
    diff_hash: str | None
    changed: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {"by": f"recip on {socket.gethostname()}", "code_policy": self.policy,
                "code_sha": self.sha, "code_dirty": self.dirty, "diff_hash": self.diff_hash}


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "?"


def git_log(root: Path, last: str | None, now: str | None) -> list[str]:
    """`git log --oneline LAST..NOW` in `root` as lines; one explanatory line when the range
    cannot be shown (unknown commit, same commit, commit missing from this checkout)."""
    if not last or not now:
        return ["(no commit recorded)" if not last else "(no commit to run)"]
    if not (_SHA.fullmatch(last) and _SHA.fullmatch(now)):
        return ["(not a commit id)"]
    if now.startswith(last) or last.startswith(now):
        return ["(same commit)"]
    for sha in (last, now):
        if _git(root, "cat-file", "-e", f"{sha}^{{commit}}") is None:
            return [f"({_short(sha)} is not in {root}: `git fetch`?)"]
    out = _git(root, "log", "--oneline", "--no-decorate", "--no-color", f"{last}..{now}")
    lines = (out or "").splitlines()
    if not lines:
        return [f"(no new commits: {_short(now)} is behind or beside {_short(last)})"]
    if len(lines) > _LOG_MAX:
        lines = lines[:_LOG_MAX] + [f"... {len(lines) - _LOG_MAX} more"]
    return lines


def checkout(root: Path | None, history: StudyHistory, code: str | None,
             allow_dirty: bool) -> Checkout:
    """Decide which commit the new attempts run; refuse a dirty tree unless allowed."""
    from workers import provenance

    policy = str(code) if code else history.code_policy
    if policy != history.code_policy:
        if policy == "pinned":
            raise QueueError(
                f"study {history.name} is not pinned: its attempts run whatever commit each "
                "worker has; to pin it, set `code: pinned` and `pinned_sha:` in its spec and "
                "submit it again")
        raise QueueError(
            f"study {history.name} is pinned to {_short(history.pinned_sha)}: only workers at "
            "that commit run its attempts; drop --code head, or change `pinned_sha:` in the "
            "spec and submit it again")
    where = (root or provenance.CODE_ROOT).resolve()
    if root is not None and not where.is_dir():
        raise RecipError(f"--code-root {root}: no such directory; name the checkout the "
                         "workers run (or drop --code-root for this one)")
    state = provenance.code_state(where)
    if policy == "pinned":
        return Checkout(where, policy, history.pinned_sha, state.dirty, state.diff_hash)
    changed: tuple[str, ...] = ()
    if state.dirty:
        status = _git(where, "status", "--porcelain", "--untracked-files=normal") or ""
        changed = tuple(line[3:] for line in status.splitlines() if line.strip())
        if not allow_dirty:
            listed = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)"
                                               if len(changed) > 5 else "")
            raise RecipError(
                f"{where} has uncommitted changes ({listed}): commit them (the new attempts "
                "record the commit they run), or pass --allow-dirty to record their diff hash")
    return Checkout(where, policy, state.sha, state.dirty, state.diff_hash, changed)


def _check_steps(history: StudyHistory, steps: list[str] | None) -> None:
    if steps is None:
        return
    known = history.steps
    missing = [s for s in steps if s not in known]
    if missing:
        raise UnknownStep(f"no step {', '.join(map(repr, missing))} in study {history.name!r} "
                          f"(steps: {', '.join(known)})")


def _describe(a: AttemptRecord | None) -> str:
    if a is None:
        return "no attempt"
    kind = f":{a.failure_kind}" if a.failure_kind else ""
    return f"#{a.attempt_no} {a.state}{kind}"


def _requeue(study: str, *, steps: str | None, states: list[str] | None, force: bool,
             code: str | None, allow_dirty: bool, code_root: Path | None,
             db: str | None, verb: str, fresh: bool = False) -> None:
    from orchestrator.queue.repo import QueueRepo

    step_list = split_csv(steps)
    with QueueRepo.open(db_url(db)) as repo:
        history = repo.history(study)
        _check_steps(history, step_list)
        pending = repo.resumable(study, steps=step_list, states=states, force=force)
        # the code policy is checked always; a dirty tree matters only when attempts are queued
        co = checkout(code_root, history, code, allow_dirty or not pending)
        if not pending:
            say(_nothing_message(history, verb, states))
            return
        created = repo.new_attempts(study, datetime.now(UTC), steps=step_list, states=states,
                                    force=force, payload={**co.payload(), "by_command": verb,
                                                          **({"fresh": True} if fresh else {})})
        runs = {(r.step, r.seed): r for r in history.runs if r.current}
    if co.dirty and co.policy == "head":
        say(f"warning: {co.root} has uncommitted changes; recorded as diff {co.diff_hash}")
    if co.sha is None and co.policy == "head":
        say(f"warning: {co.root} is not a git checkout; each worker records the commit it runs")
    if not created:
        say(_nothing_message(history, verb, states))
        return
    for step, seed, attempt_no in created:
        run = runs.get((step, seed))
        last = run.last_commit if run else None
        before = _describe(run.latest if run else None)
        typer.echo(f"{step} seed {seed}: {before} -> attempt {attempt_no} queued   "
                   f"commit {_short(last)} -> {_short(co.sha)}"
                   + (" (dirty)" if co.dirty and co.policy == "head" else "")
                   + ("   from scratch (--fresh)" if fresh else ""))
        for line in git_log(co.root, last, co.sha):
            typer.echo(f"    {line}")
    where = (f"workers at the pinned commit {_short(co.sha)}" if co.policy == "pinned"
             else "the next free workers (each records the commit it runs)")
    say(f"{verb}: {len(created)} attempt{'s' if len(created) != 1 else ''} queued for "
        f"{where}; history kept; watch with `recip status {study}`")


def _nothing_message(history: StudyHistory, verb: str, states: list[str] | None) -> str:
    current = [r for r in history.runs if r.current]
    live = sum(1 for r in current if r.latest and r.latest.state in LIVE)
    done = sum(1 for r in current if any(a.state == "succeeded" for a in r.attempts))
    which = f" in state {', '.join(states)}" if states else ""
    return (f"{verb}: nothing to queue in study {history.name}{which} ({len(current)} runs: "
            f"{done} succeeded, {live} queued or running)")


def resume(
    study: StudyArg,
    failed: Annotated[bool, typer.Option("--failed", help="Runs whose last attempt failed.")
                      ] = False,
    lost: Annotated[bool, typer.Option("--lost", help="Runs whose last attempt was lost.")
                    ] = False,
    timed_out: Annotated[bool, typer.Option(
        "--timed-out", help="Runs whose last attempt timed out.")] = False,
    cancelled: Annotated[bool, typer.Option(
        "--cancelled", help="Runs whose last attempt was cancelled.")] = False,
    steps: Annotated[str | None, typer.Option(
        "--steps", help="Only these steps, comma-separated (e.g. V1,V3).",
        show_default=False)] = None,
    code: CodeOption = None,
    allow_dirty: AllowDirtyOption = False,
    code_root: CodeRootOption = None,
    fresh: Annotated[str | None, typer.Option(
        "--fresh", metavar="STEPS",
        help="Start the runs of these steps (comma-separated) from scratch: their new "
             "attempts ignore earlier checkpoints (e.g. one that no longer fits the model).",
        show_default=False)] = None,
    db: DbOption = None,
) -> None:
    """Queue a new attempt for every run that has not succeeded (none live), e.g. after a
    fix and `git pull`; without state flags, whatever way its last attempt ended."""
    picked = [s for s, on in (("failed", failed), ("lost", lost), ("timed_out", timed_out),
                              ("cancelled", cancelled)) if on]
    if fresh is not None:
        fresh_steps = split_csv(fresh)
        if not fresh_steps:
            raise typer.BadParameter("name at least one step, e.g. --fresh V1",
                                     param_hint="--fresh")
        if steps is not None and set(split_csv(steps) or []) != set(fresh_steps):
            raise typer.BadParameter("--fresh STEPS already selects the steps; drop --steps",
                                     param_hint="--fresh")
        steps = ",".join(fresh_steps)
    _requeue(study, steps=steps, states=picked or None, force=False, code=code,
             allow_dirty=allow_dirty, code_root=code_root, db=db, verb="resume",
             fresh=fresh is not None)


def rerun(
    study: StudyArg,
    steps: Annotated[str, typer.Option(
        "--steps", help="Steps to run again, comma-separated (e.g. V1,V3), succeeded or not.",
        show_default=False)],
    code: CodeOption = None,
    allow_dirty: AllowDirtyOption = False,
    code_root: CodeRootOption = None,
    db: DbOption = None,
) -> None:
    """Queue a new attempt for each run of these steps, even succeeded ones (the analysis
    then uses the newest success; earlier attempts stay in the history)."""
    if not split_csv(steps):
        raise typer.BadParameter("name at least one step, e.g. --steps V1", param_hint="--steps")
    _requeue(study, steps=steps, states=None, force=True, code=code, allow_dirty=allow_dirty,
             code_root=code_root, db=db, verb="rerun")


# --- show --------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def attempt_json(run: RunHistory, a: AttemptRecord, history: StudyHistory) -> dict[str, Any]:
    """One attempt's provenance as JSON-ready data."""
    from orchestrator.core.states import FailureKind

    advice = FailureKind(a.failure_kind).advice if a.failure_kind else None
    summary = {k: a.result.get(k) for k in _RESULT_SUMMARY if a.result.get(k) is not None}
    return {
        "study": history.name, "step": run.step, "seed": run.seed, "run_id": run.run_id,
        "current_run": run.current, "attempt_id": a.attempt_id, "attempt_no": a.attempt_no,
        "state": a.state, "failure_kind": a.failure_kind, "advice": advice,
        "exit_code": a.exit_code, "error_type": a.error_type, "error_message": a.error_message,
        "code_sha": a.code_sha, "code_dirty": a.code_dirty, "diff_hash": a.diff_hash,
        "queued": a.queued, "config_hash": run.config_hash, "config": run.config,
        "spec_hash": history.spec_hash, "code_policy": history.code_policy,
        "pinned_sha": history.pinned_sha, "versions": a.env, "device": a.device,
        "host": a.host, "worker": a.worker_id, "pid": a.pid, "artifact_dir": a.artifact_dir,
        "created_at": _iso(a.created_at), "claimed_at": _iso(a.claimed_at),
        "started_at": _iso(a.started_at), "finished_at": _iso(a.finished_at),
        "result": summary, "checkpoint_fallback": a.result.get("checkpoint_fallback"),
    }


_RESULT_SUMMARY = ("status", "best_val_loss", "final_val_loss", "final_train_loss", "iters",
                   "tokens", "train_s", "eval_s", "wall_s", "tokens_per_s", "final_lr", "peak_mem_mb",
                   "resumed_from_iter", "torch_version")


def show(
    study: StudyArg,
    step: Annotated[str, typer.Argument(help="Step id, e.g. V1.", show_default=False)],
    seed: Annotated[int | None, typer.Option("--seed", help="Only this seed.",
                                             show_default=False)] = None,
    json_out: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Every attempt of a step with its provenance: state, failure and advice, commit and
    diff hash, config and spec hashes, versions, device, host, artifacts, times, result."""
    from orchestrator.cli.render.history import show_lines
    from orchestrator.queue.repo import QueueRepo

    with QueueRepo.open(db_url(db)) as repo:
        history = repo.history(study, [step])
        runs = [r for r in history.runs if seed is None or r.seed == seed]
        wanted = sorted({r.parent for r in runs if r.parent})
        parents: dict[str, dict[str, Any]] = {}
        if wanted:
            for r in sorted(repo.history(study, wanted).runs, key=lambda r: r.seed):
                if r.current:  # the parent's current config (the lowest seed's)
                    parents.setdefault(r.step, r.config)
    if not runs:
        seeds = sorted({r.seed for r in history.runs})
        raise UnknownStep(f"step {step!r} of study {study!r} has no seed {seed} "
                          f"(seeds: {', '.join(map(str, seeds))})")
    if json_out:
        emit_json([attempt_json(r, a, history) for r in runs for a in r.attempts])
        return
    for line in show_lines(history, runs, parents, attempt_json):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add `recip resume`, `recip rerun` and `recip show` to the root app."""
    app.command("resume")(resume)
    app.command("rerun")(rerun)
    app.command("show")(show)

