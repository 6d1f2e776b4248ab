"""The one canonical id builder: config and spec hashes, attempt directories, W&B run ids.

Upstream had four id builders that disagreed (upstream-orchestration.md §7.2 item 14); every
part of recip that needs one of these names calls this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

SHORT = 8
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def canonical_json(obj: Any) -> str:
    """Sorted, compact JSON: the byte-stable form every hash is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """sha256 (64 hex chars) of a resolved run config; equal hashes train the same thing."""
    return _sha256(config)


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 of a validated spec's JSON."""
    return _sha256(spec)


def short(digest: str, n: int = SHORT) -> str:
    """The first `n` characters of a hash, for humans."""
    return digest[:n]


def _safe(kind: str, name: str) -> str:
    if not _SAFE.fullmatch(name):
        raise ValueError(f"unsafe {kind} name {name!r} for a path")
    return name


def run_label(study: str, step: str, seed: int) -> str:
    """`study/step/seed<k>`: how a run is named in logs, W&B and the CLI."""
    return f"{study}/{step}/seed{seed}"


def attempt_label(study: str, step: str, seed: int, attempt_no: int) -> str:
    """`study/step/seed<k>/attempt<n>`."""
    return f"{run_label(study, step, seed)}/attempt{attempt_no}"


def attempt_dir(runs_dir: str | Path, *, study: str, step: str, seed: int, config_hash: str,
                run_id: int, attempt_no: int) -> Path:
    """`<runs_dir>/<study>/<step>/seed<k>/<hash12>-run<id>/attempt<n>`: where an attempt writes.

    The config hash and the run's database id make the directory the run's own: the same
    study/step/seed submitted again with other overrides (a smoke `--time 10` after the main
    job) is another run in another directory. Only a second database that gave the same run
    id to the same config can meet an existing directory; the worker refuses it by name."""
    if seed < 0 or attempt_no < 1 or run_id < 1:
        raise ValueError(f"bad seed {seed}, run id {run_id} or attempt number {attempt_no}")
    return Path(runs_dir) / _safe("study", study) / _safe("step", step) / f"seed{seed}" / \
        f"{_safe('config hash', short(config_hash, 12))}-run{run_id}" / f"attempt{attempt_no}"


def wandb_run_id(*, db_identity: str, study: str, step: str, seed: int, config_hash: str,
                 attempt_no: int) -> str:
    """The W&B run id of one attempt: 16 hex characters, deterministic from the database's
    identity (its redacted URL, or the absolute path of a SQLite file), the run (study, step,
    seed, config hash) and the attempt number, so a restart of the attempt logs into the same
    W&B run while two databases, or two configs of one step, never share an id."""
    return short(_sha256([db_identity, study, step, seed, config_hash, attempt_no]), 16)


def wandb_run_name(study: str, step: str, seed: int, attempt_no: int) -> str:
    """`study/step/seed<k>/attempt<n>`: the W&B display name, the attempt number `recip show`
    prints (never the database's internal attempt id)."""
    return attempt_label(study, step, seed, attempt_no)
