"""A full disk (ENOSPC, EDQUOT) anywhere in an attempt: found, described, cleaned up.

Stdlib only: the trainer (`run_attempt`) and the worker (`workers.loop`) both use it. A full
disk is an environment problem, not a code problem, and retrying on the same disk fails the
same way, so the attempt ends `failed:disk_full` with the path and the free space in its
message and is never retried automatically.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
MIN_FREE_ENV = "RECIP_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 200.0
TEMP_PATTERNS = (".*.tmp.*", ".*.copy.*")


def find_disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError in `exc`'s cause/context chain (torch wraps it in a
    RuntimeError), or None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in DISK_ERRNOS:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def free_bytes(path: Path) -> int | None:
    """Free bytes (for this user) on the filesystem holding `path` or its nearest existing
    parent; None when that cannot be read."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def describe(path: Path | str, where: Path | None = None) -> str:
    """One line: what could not be written and how much space is left."""
    free = free_bytes(Path(where or path))
    return (f"disk full writing {path} ({fmt_bytes(free)} free on its filesystem): free space "
            "there or give the worker another --runs-dir, then `recip resume STUDY`")


def min_free_bytes() -> int:
    """The free space a worker needs to claim an attempt: $RECIP_MIN_FREE_MB, else 200 MB."""
    raw = os.environ.get(MIN_FREE_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MIN_FREE_MB
    except ValueError:
        mb = DEFAULT_MIN_FREE_MB
    return int(max(mb, 0.0) * 2**20)


def remove_temp_files(outdir: Path) -> list[Path]:
    """Delete the half-written temp files of an attempt dir (`.checkpoint.pt.tmp.PID`, ...);
    returns what was removed."""
    removed: list[Path] = []
    for pattern in TEMP_PATTERNS:
        for path in Path(outdir).glob(pattern):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed
