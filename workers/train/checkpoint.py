"""Atomic checkpoints: model, optimizer (with SPAM state), RNG, data position, clock, loop.

Written to a temp file in the same directory, fsynced, then os.replace'd, so a reader (or a
SIGKILL) never sees half a checkpoint. The checkpoint it replaces is kept as
`checkpoint.prev.pt`, so a newest checkpoint that turns out unreadable (a disk error, a
truncated copy) still leaves the one before it: `pick_readable` tries the newest, then the
previous one. A temp file is removed when the write fails (a full disk leaves nothing
behind). Everything that is not a tensor is stored as plain ints/floats/strings/lists/dicts,
so `torch.load(weights_only=True)` reads it back; a file that cannot be read raises
CheckpointCorrupt naming the file and the fix.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1
PREVIOUS_SUFFIX = ".prev"
FRESH_FIX = "`recip resume STUDY --fresh STEP` starts the run from scratch"


def previous_path(path: Path) -> Path:
    """checkpoint.pt -> checkpoint.prev.pt: the good checkpoint a new one replaced."""
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


class CheckpointCorrupt(RuntimeError):
    """A checkpoint file cannot be read or is not a recip checkpoint."""


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # the legacy tuple (name, keys, pos, gauss, cached)
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": [int(k) for k in np_state[1]], "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, model, optimizer, batches, clock, loop: dict[str, Any],
                    meta: dict[str, Any] | None = None) -> None:
    path = Path(path)
    ckpt = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "data": batches.state_dict(),
        "clock": clock.state_dict(),
        "loop": loop,
        "meta": meta or {},
    }
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():  # keep the last good one until the new one is in place
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle error, wrong file: one message
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointCorrupt(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {first}); {FRESH_FIX}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointCorrupt(f"{path} is not a recip checkpoint (format {FORMAT}); {FRESH_FIX}")
    return ckpt


def pick_readable(paths: list[Path]) -> tuple[Path | None, dict[str, Any] | None, list[dict[str, str]]]:
    """The first of `paths` that exists and reads as a checkpoint, its contents, and the
    ones skipped as unreadable ({path, error}); (None, None, skipped) when none is."""
    skipped: list[dict[str, str]] = []
    for path in paths:
        if not path.is_file():
            continue
        try:
            return path, read_checkpoint(path), skipped
        except (CheckpointCorrupt, OSError) as e:
            skipped.append({"path": str(path), "error": str(e)})
    return None, None, skipped


def load_checkpoint(path: str | Path, *, model, optimizer, batches, clock,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Restore everything into the given objects; returns the loop state."""
    return restore_checkpoint(read_checkpoint(path), path, model=model, optimizer=optimizer,
                              batches=batches, clock=clock, restore_rng=restore_rng)


def restore_checkpoint(ckpt: dict[str, Any], path: str | Path, *, model, optimizer, batches,
                       clock, restore_rng: bool = True) -> dict[str, Any]:
    """Restore a read checkpoint (`read_checkpoint`) into the given objects."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        batches.load_state_dict(ckpt["data"])
        clock.load_state_dict(ckpt["clock"])
        if restore_rng:
            set_rng_state(ckpt["rng"])
    except (KeyError, RuntimeError, ValueError, AssertionError) as e:
        raise CheckpointCorrupt(f"checkpoint {path} does not fit this run ({type(e).__name__}: "
                                f"{(str(e).splitlines() or [''])[0][:200]}); {FRESH_FIX}") from e
    return ckpt["loop"]
