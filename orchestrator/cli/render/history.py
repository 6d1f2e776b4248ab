"""`recip show` as text: one step's runs, newest first, each config as its difference from
the parent step's (pure: takes the history, returns lines; no rich, no database)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator.queue.history import AttemptRecord, RunHistory, StudyHistory

AttemptJson = Callable[[RunHistory, AttemptRecord, StudyHistory], dict[str, Any]]


def newest_first(runs: Sequence[RunHistory]) -> list[RunHistory]:
    """Current runs before superseded ones; within each, the newest run first."""
    return sorted(runs, key=lambda r: (not r.current, -r.run_id))


def config_diff(config: Mapping[str, Any], base: Mapping[str, Any] | None,
                prefix: str = "") -> list[str]:
    """`train.lr 6e-4 -> 1e-3` lines: the leaves of `config` that differ from `base` (every
    leaf when there is no base); `study`, `step` and `seed` are the run's name, not config."""
    out: list[str] = []
    skip = {"study", "step", "seed"} if not prefix else set()
    for key in sorted(set(config) | set(base or {})):
        if key in skip:
            continue
        path = f"{prefix}{key}"
        mine = config.get(key, "<unset>")
        theirs = (base or {}).get(key, "<unset>") if base is not None else None
        if isinstance(mine, Mapping) and (base is None or isinstance(theirs, Mapping)):
            out += config_diff(mine, theirs if base is not None else None, f"{path}.")
        elif base is None:
            out.append(f"{path} {_json(mine)}")
        elif mine != theirs:
            out.append(f"{path} {_json(theirs)} -> {_json(mine)}")
    return out


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "?"


def show_lines(history: StudyHistory, runs: Sequence[RunHistory],
               parents: Mapping[str, Mapping[str, Any]], attempt_json: AttemptJson) -> list[str]:
    """The `recip show` text. `parents` maps a parent step to its current config (seed-free
    fields compared); a run of a root step lists its whole config once."""
    lines = [f"study {history.name}   spec {history.spec_hash[:12]}   code {history.code_policy}"
             + (f" {history.pinned_sha}" if history.pinned_sha else "")]
    for run in newest_first(runs):
        lines.append("")
        lines.append(f"{run.step} seed {run.seed}   run {run.run_id}"
                     f"{'' if run.current else ' (superseded by a changed config)'}   "
                     f"config {run.config_hash[:12]}   {len(run.attempts)} attempt"
                     f"{'s' if len(run.attempts) != 1 else ''} (max {run.max_attempts} "
                     "automatic)")
        base = parents.get(run.parent) if run.parent else None
        diff = config_diff(run.config, base)
        if base is not None:
            lines.append(f"  config vs {run.parent}: " + ("same" if not diff else diff[0]))
            lines += [f"    {d}" for d in diff[1:]]
        else:
            lines.append("  config " + "  ".join(diff))
        for a in sorted(run.attempts, key=lambda a: -a.attempt_no):
            d = attempt_json(run, a, history)
            state = a.state + (f": {a.failure_kind}" if a.failure_kind else "")
            dirty = ("" if a.code_dirty is None else
                     f" (dirty, diff {a.diff_hash})" if a.code_dirty else " (clean)")
            lines.append(f"  attempt {a.attempt_no}  {state}   commit {a.code_sha or '-'}{dirty}")
            why = a.queued.get("reason")
            queued_by = f"queued {_fmt_time(a.created_at)}" + (f" ({why}" if why else "")
            if why and a.queued.get("code_sha"):
                queued_by += f" at {_short(str(a.queued['code_sha']))}"
                if a.queued.get("diff_hash"):
                    queued_by += f", diff {a.queued['diff_hash']}"
            queued_by += ")" if why else ""
            lines.append(f"    {queued_by}   started {_fmt_time(a.started_at)}   "
                         f"finished {_fmt_time(a.finished_at)}")
            lines.append(f"    worker {a.worker_id or '-'}   host {a.host or '-'}   "
                         f"device {a.device or '-'}   pid {a.pid or '-'}")
            if a.env:
                lines.append("    versions " + "  ".join(f"{k} {v}" for k, v in
                                                       sorted(a.env.items())))
            if a.artifact_dir:
                lines.append(f"    artifacts {a.artifact_dir}")
            if a.error_type or a.error_message:
                first = (a.error_message or "").splitlines()[0] if a.error_message else ""
                lines.append(f"    error {': '.join(p for p in (a.error_type, first) if p)}")
            if d["advice"]:
                lines.append(f"    advice: {d['advice']}")
            if isinstance(a.result.get("checkpoint_fallback"), dict):
                lines.append("    " + checkpoint_note(a.result["checkpoint_fallback"]))
            if d["result"]:
                lines.append("    result " + "  ".join(
                    f"{k} {_fmt_value(v)}" for k, v in d["result"].items() if k != "status"))
    return lines


def checkpoint_note(fallback: dict[str, Any]) -> str:
    """One line for an attempt that passed over unreadable checkpoints."""
    bad = ", ".join(str(b.get("path")) for b in fallback.get("skipped", []) if isinstance(b, dict))
    used = fallback.get("resumed_from")
    then = f"resumed from the previous checkpoint {used}" if used else "started from scratch"
    return f"checkpoint: unreadable {bad or '?'}: {then}"
