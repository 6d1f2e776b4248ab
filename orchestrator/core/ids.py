"""The one canonical id builder: config and spec hashes, attempt directories, W&B run ids.

Upstream had four id builders that disagreed (upstream-orchestration.md §7.2 item 14); every
part of recip that needs one of these names calls this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath
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


def attempt_dir(study: str, step: str, seed: int, attempt_no: int,
                root: str = "runs") -> PurePosixPath:
    """`<root>/<study>/<step>/seed<k>/attempt<n>`, relative to the runs root."""
    if seed < 0 or attempt_no < 1:
        raise ValueError(f"bad seed {seed} or attempt number {attempt_no}")
    return PurePosixPath(root) / _safe("study", study) / _safe("step", step) / \
        f"seed{seed}" / f"attempt{attempt_no}"


def wandb_run_id(study: str, step: str, seed: int, attempt_no: int, chash: str) -> str:
    """A deterministic W&B run id per attempt (stable across restarts of that attempt)."""
    return short(_sha256([study, step, seed, attempt_no, chash]), 16)
