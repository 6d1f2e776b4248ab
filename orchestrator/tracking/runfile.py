"""Read a local W&B run (`offline-run-*/run-ID.wandb`) with the wandb package's own records.

A `.wandb` file is W&B's transaction log: a 7-byte header (`:W&B`, magic 0xBEE1, version),
then 32 KiB blocks of chunks, each `crc32 (4) | length (2) | type (1) | data` (FULL, FIRST,
MIDDLE, LAST, as in LevelDB's log); a record is one serialized
`wandb.proto.wandb_internal_pb2.Record`. This module does the framing and leaves the decoding
to wandb's protobuf classes, so what it reads is what `wandb sync` would upload.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.core.errors import TrackerError
from orchestrator.tracking.model import TrackedRun

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
IDENT, MAGIC = b":W&B", 0xBEE1
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def chunks(data: bytes, where: str) -> Iterator[bytes]:
    """The record payloads of a transaction log (CRC-checked); stops at a torn tail."""
    if len(data) < HEADER.size:
        raise TrackerError(f"{where}: not a W&B run file (too short)")
    ident, magic, _version = HEADER.unpack_from(data)
    if ident != IDENT or magic != MAGIC:
        raise TrackerError(f"{where}: not a W&B run file (header {data[:7]!r})")
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        body = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if kind == 0 and length == 0:
            break
        if len(body) < length or zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF != crc:
            break  # a run still writing, or killed mid-write: keep what is whole
        pos += CHUNK.size + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body
            pending = b""


def records(path: Path) -> Iterator[Any]:
    """Every `wandb_internal_pb2.Record` in the run file at `path`."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError as e:  # pragma: no cover - wandb is a dependency
        raise TrackerError("reading W&B runs needs the `wandb` package: pip install wandb") from e
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TrackerError(f"{path}: cannot read ({e.strerror or e})") from e
    for body in chunks(data, str(path)):
        rec = pb.Record()  # type: ignore[attr-defined]
        try:
            rec.ParseFromString(body)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError; one line for the user
            raise TrackerError(f"{path}: corrupt record ({e})") from e
        yield rec


def find_run_file(path: Path) -> Path:
    """The `.wandb` file of `path`: the file itself, a run directory, or an attempt
    directory holding exactly one run under `wandb/`."""
    if path.is_file():
        if path.suffix != ".wandb":
            raise TrackerError(f"{path}: not a W&B run file (expected run-ID.wandb)")
        return path
    if not path.is_dir():
        raise TrackerError(f"{path}: no such file or directory")
    found = sorted(path.glob("*.wandb")) or sorted(path.glob("wandb/*run-*/*.wandb"))
    if not found:
        raise TrackerError(f"{path}: no W&B run here (looked for *.wandb and "
                           "wandb/offline-run-*/*.wandb)")
    if len(found) > 1:
        names = ", ".join(str(f.relative_to(path)) for f in found[:5])
        raise TrackerError(f"{path}: {len(found)} W&B runs ({names}); name one run directory")
    return found[0]


def offline_runs(root: Path) -> list[Path]:
    """The offline run directories under an attempt directory (`wandb/offline-run-*`)."""
    return sorted(p for p in root.glob("wandb/offline-run-*") if p.is_dir())


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return raw


def _key(item: Any) -> str:
    return ".".join(item.nested_key) if item.nested_key else str(item.key)


def _set(d: dict[str, Any], item: Any) -> None:
    d[_key(item)] = _value(item.value_json)


def read_offline_run(path: Path) -> TrackedRun:
    """A TrackedRun from a local W&B run (config, tags, summary, every history row)."""
    file = find_run_file(path)
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    finished = False
    for rec in records(file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            info.update(run_id=r.run_id, project=r.project or None, entity=r.entity or None,
                        name=r.display_name or None, tags=tuple(r.tags),
                        host=r.host or None, commit=r.git.commit or None)
            if r.HasField("start_time"):
                info["started_at"] = datetime.fromtimestamp(r.start_time.seconds, UTC)
            for item in r.config.update:
                _set(config, item)
        elif kind == "config":
            for item in rec.config.update:
                _set(config, item)
            for item in rec.config.remove:
                config.pop(_key(item), None)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _set(row, item)
            if rec.history.HasField("step"):
                row.setdefault("_step", rec.history.step.num)
            history.append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                _set(summary, item)
            for item in rec.summary.remove:
                summary.pop(_key(item), None)
        elif kind == "environment":
            env = rec.environment
            if env.host and not info.get("host"):
                info["host"] = env.host
            if env.gpu_type:
                info["gpu"] = env.gpu_type
        elif kind == "exit":
            finished = True
    if "run_id" not in info:
        raise TrackerError(f"{file}: the run file holds no run record (an empty or torn run)")
    config.pop("_wandb", None)
    summary = {k: v for k, v in summary.items() if not k.startswith("_wandb")}
    tagged = next((t.split(":", 1)[1] for t in info.get("tags", ()) if t.startswith("commit:")),
                  None)  # recip's own record; wandb's git probe sees the cwd's checkout
    git = info.get("commit")
    commit = git if tagged in (None, "unknown") or (git and git.startswith(tagged)) else tagged
    return TrackedRun(
        source="wandb-offline", ref=str(file.parent), run_id=info["run_id"],
        project=info.get("project"), entity=info.get("entity"), name=info.get("name"),
        config=config, tags=info.get("tags", ()), summary=summary, history=tuple(history),
        commit=None if commit in (None, "unknown") else commit, host=info.get("host"),
        gpu=info.get("gpu"),
        state="finished" if finished else "unfinished", started_at=info.get("started_at"),
        local_dir=str(file.parent))
