"""Upload a study's offline W&B runs with wandb's own `wandb sync`.

Each attempt's WandbSink writes `ARTIFACT_DIR/wandb/offline-run-*-RUN_ID/`; `wandb sync`
replays its `.wandb` file to the server and drops a `.wandb.synced` marker beside it, which
is how a second sync knows to skip it (W&B users hit duplicate runs without that).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import TrackerError
from orchestrator.tracking.runfile import offline_runs

SYNCED_SUFFIX = ".synced"


@dataclass(frozen=True)
class SyncItem:
    attempt_id: int
    step: str
    seed: int
    attempt_no: int
    run_dir: Path
    run_file: Path | None

    @property
    def run_id(self) -> str:
        return self.run_dir.name.rsplit("-", 1)[-1]

    @property
    def synced(self) -> bool:
        return self.run_file is not None and self.run_file.with_name(
            self.run_file.name + SYNCED_SUFFIX).exists()


@dataclass(frozen=True)
class SyncReport:
    items: tuple[SyncItem, ...]
    status: dict[Path, str]
    """run_dir -> `would sync`, `synced`, `already synced`, `failed`, `no run file`."""
    output: str
    """What `wandb sync` printed (stdout + stderr)."""


def collect(attempts: Sequence[tuple[int, str, int, int, str]]) -> list[SyncItem]:
    """SyncItems for (attempt_id, step, seed, attempt_no, artifact_dir) rows."""
    out = []
    for attempt_id, step, seed, attempt_no, artifact_dir in attempts:
        for run_dir in offline_runs(Path(artifact_dir)):
            files = sorted(run_dir.glob("*.wandb"))
            out.append(SyncItem(attempt_id=attempt_id, step=step, seed=seed,
                                attempt_no=attempt_no, run_dir=run_dir,
                                run_file=files[0] if files else None))
    return out


def wandb_command() -> list[str]:
    """The wandb CLI of this interpreter's environment."""
    return [sys.executable, "-m", "wandb"]


def sync(items: Sequence[SyncItem], *, dry_run: bool, project: str | None = None,
         entity: str | None = None, timeout: float = 600.0) -> SyncReport:
    """Run `wandb sync [--dry-run] DIR...` on the items not synced yet; raise TrackerError
    when wandb fails before uploading anything (no key, no network)."""
    status: dict[Path, str] = {}
    todo = []
    for it in items:
        if it.run_file is None:
            status[it.run_dir] = "no run file"
        elif it.synced:
            status[it.run_dir] = "already synced"
        else:
            todo.append(it)
    if not todo:
        return SyncReport(items=tuple(items), status=status, output="")
    cmd = [*wandb_command(), "sync", "--no-include-online"]
    if dry_run:
        cmd.append("--dry-run")
    if project:
        cmd += ["--project", project]
    if entity:
        cmd += ["--entity", entity]
    cmd += [str(it.run_dir) for it in todo]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as e:
        raise TrackerError(f"`wandb sync` did not finish within {timeout:.0f} s (network?); "
                           "runs already uploaded are marked synced, rerun to continue") from e
    output = (proc.stdout or "") + (proc.stderr or "")
    for it in todo:
        if dry_run:
            status[it.run_dir] = "would sync" if str(it.run_file) in output or \
                it.run_file.name in output else "not listed"  # type: ignore[union-attr]
        else:
            status[it.run_dir] = "synced" if it.synced else "failed"
    if not dry_run and proc.returncode != 0 and not any(s == "synced" for s in status.values()):
        reason = _last_error(output) or f"exit {proc.returncode}"
        raise TrackerError(f"`wandb sync` failed: {reason}")
    return SyncReport(items=tuple(items), status=status, output=output)


def _last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("Error:") or "ERROR" in ln:
            return ln.removeprefix("Error:").strip()
    return lines[-1] if lines else ""
