"""The decision line of `recip status`, cached by the content it is computed from.

`4 of 6 comparisons decided; ...` needs every comparison's t test (orchestrator.report.stats,
scipy): importing scipy.special and running the analysis is ~0.3 s of a ~0.6 s status at
1,000 runs (bench/cli_bench.py), paid on every refresh although the line only changes when
a result does. This cache keys the line by a hash of everything it is computed from:

- the study's results as read (spec, steps, looks, overrides, and every attempt's step,
  seed, state, result, failure, code and times; a run's config by its config hash, which is
  the hash of that config), and
- the source of the code that computes it (orchestrator/report, the decision summary, the
  spec model, the results types), so a `git pull` that changes the analysis misses.

Content-addressed, so an entry is never stale: a different input is a different key. One
small JSON file per key under `$RECIP_CACHE_DIR` (default `$XDG_CACHE_HOME/recip`, else
`~/.cache/recip`), written atomically, the oldest pruned past `MAX_ENTRIES`. Derived data
only: deleting the folder costs one slower status. A cache that cannot be read or written
is skipped, never an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

from orchestrator.core.results import StudyResults

CACHE_ENV = "RECIP_CACHE_DIR"
MAX_ENTRIES = 512
FORMAT = 1
"""Bump when the entry layout changes."""
_ORCHESTRATOR = Path(__file__).resolve().parent.parent
SOURCES = ("report/*.py", "cli/decide.py", "cli/decision_cache.py", "core/spec.py",
           "core/results.py")
"""The code the line is computed by (globs under orchestrator/)."""


def cache_dir() -> Path:
    """Where entries live: $RECIP_CACHE_DIR, else $XDG_CACHE_HOME/recip, else ~/.cache/recip."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "decisions"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recip" / "decisions"


@functools.cache
def code_version() -> str:
    """Hash of the source files in SOURCES (read once per process, ~1 ms)."""
    h = hashlib.sha256(f"format {FORMAT}".encode())
    for pattern in SOURCES:
        for path in sorted(_ORCHESTRATOR.glob(pattern)):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def key(results: StudyResults, *, cap: int | None = None) -> str:
    """The content hash of what `decide.study_decision(results, cap=cap)` reads."""
    h = hashlib.sha256()
    head = (code_version(), cap, results.name, results.spec_hash, results.spec, results.steps,
            results.looks, results.overrides)
    h.update(repr(head).encode())
    for a in results.attempts:
        h.update(repr((a.step, a.seed, a.run_id, a.attempt_id, a.attempt_no, a.state,
                       a.config_hash, a.result, a.failure_kind, a.error_type, a.error_message,
                       a.code_sha, a.code_dirty, a.diff_hash, a.device, a.host, a.started_at,
                       a.finished_at)).encode())
    return h.hexdigest()


def lookup(k: str) -> tuple[bool, str | None]:
    """(found, line); a missing, unreadable or foreign entry is not found."""
    try:
        data = json.loads((cache_dir() / f"{k}.json").read_text())
    except (OSError, ValueError):
        return False, None
    if not isinstance(data, dict) or data.get("key") != k or "line" not in data:
        return False, None
    line = data["line"]
    return (True, line) if line is None or isinstance(line, str) else (False, None)


def store(k: str, line: str | None) -> None:
    """Write the entry atomically and prune the oldest past MAX_ENTRIES; errors are ignored."""
    folder = cache_dir()
    tmp: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": k, "line": line}, f)
        os.replace(tmp, folder / f"{k}.json")
        tmp = None
        entries = list(folder.glob("*.json"))
        if len(entries) > MAX_ENTRIES:
            entries.sort(key=lambda p: p.stat().st_mtime)
            for old in entries[: len(entries) - MAX_ENTRIES]:
                with contextlib.suppress(OSError):
                    old.unlink()
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def study_decision(results: StudyResults, *, cap: int | None = None) -> str | None:
    """`decide.study_decision`, from the cache when these results were decided before."""
    k = key(results, cap=cap)
    found, line = lookup(k)
    if found:
        return line
    from orchestrator.cli.decide import study_decision as compute

    line = compute(results, cap=cap)
    store(k, line)
    return line
