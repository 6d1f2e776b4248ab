"""Where an attempt runs: code commit, dirty flag and diff hash, host, GPU, versions.

Git runs as an argument list in the tree the worker imports its code from (never a shell
string); outside a git checkout the code fields are None. The GPU name comes from
`nvidia-smi`, so the worker process never creates a CUDA context of its own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CodeState:
    sha: str | None
    dirty: bool | None
    diff_hash: str | None
    """sha256 of `git diff HEAD` plus the untracked file names; None when clean."""


@dataclass(frozen=True)
class Provenance:
    code: CodeState
    host: str
    gpu: str | None
    """The GPU name (e.g. "NVIDIA H100 80GB HBM3"), or None on a CPU worker."""
    versions: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """What goes into the attempt's `env` column."""
        out = dict(self.versions)
        for key in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"):
            if key in os.environ:
                out[key] = os.environ[key]
        return out


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def code_state(root: Path = CODE_ROOT) -> CodeState:
    """The commit and dirty state of the git tree at `root` (None fields outside git)."""
    sha = _git(root, "rev-parse", "HEAD")
    if sha is None:
        return CodeState(sha=None, dirty=None, diff_hash=None)
    diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard") or ""
    dirty = bool(diff.strip() or untracked.strip())
    diff_hash = None
    if dirty:
        digest = hashlib.sha256(diff.encode())
        digest.update(b"\0untracked\0" + untracked.encode())
        diff_hash = digest.hexdigest()[:16]
    return CodeState(sha=sha.strip(), dirty=dirty, diff_hash=diff_hash)


def gpu_name(visible: str | None = None) -> str | None:
    """Name of the first GPU in CUDA_VISIBLE_DEVICES (or `visible`), via nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible or visible.strip() in ("", "-1", "NoDevFiles"):
        return None
    device = visible.split(",")[0].strip()
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", device],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return f"cuda:{device}"
    name = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    return name or f"cuda:{device}"


def gpu_indices() -> list[int]:
    """Indices of the GPUs on this machine (empty without nvidia-smi or GPUs)."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    return [int(line) for line in proc.stdout.split() if line.strip().isdigit()]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    """Versions of python, torch and recip, read without importing torch."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "recip"):
        v = _version(dist)
        if v is not None:
            out[dist] = v
    return out


def collect(root: Path = CODE_ROOT) -> Provenance:
    """Everything an attempt records about where it runs."""
    return Provenance(code=code_state(root), host=socket.gethostname(), gpu=gpu_name(),
                      versions=versions())
