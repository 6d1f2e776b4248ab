"""Checkpoint storage any box can read: where attempts persist checkpoints and artifacts.

    --storage / RECIP_STORAGE = a local path (a shared filesystem mount) or an fsspec URI
    (s3://bucket/recip, gs://..., memory://... in tests); unset = the runs dir itself.

    <storage>/<study>/<step>/seed<k>/attempt<n>/checkpoint.pt   (the same layout as runs/)
                                                 result.json, metrics.jsonl, ... at the end

The local runs dir is then scratch: the trainer writes its atomic checkpoint there, the
worker copies it to storage (temp name + move, so a reader never sees half a file) and
records the location in the queue (a `checkpoint` event). A new attempt of the run, on
any box, resumes from the newest stored checkpoint: the highest attempt number that has
one, this attempt's own first (a preempted attempt given back keeps its number).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from workers.train import artifacts

logger = logging.getLogger(__name__)

STORAGE_ENV = "RECIP_STORAGE"
ARTIFACTS: tuple[str, ...] = (artifacts.CONFIG, artifacts.RESULT, artifacts.METRICS,
                              artifacts.PROGRESS, artifacts.LOG, "attempt.json")
"""What is copied to storage when an attempt ends (its checkpoint goes as it is written)."""


class Storage:
    """One storage root, through fsspec (a plain path is the local filesystem)."""

    def __init__(self, url: str) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url)
        self.fs: Any = fs
        self.root: str = str(root).rstrip("/")

    def uri(self, rel: str, name: str | None = None) -> str:
        path = f"{self.root}/{rel}" + (f"/{name}" if name else "")
        local = {"file", "local"} & set(_protocols(self.fs))
        return path if local else str(self.fs.unstrip_protocol(path))

    def _path(self, rel: str, name: str) -> str:
        return f"{self.root}/{rel}/{name}"

    def put(self, local: Path, rel: str, name: str | None = None) -> str:
        """Copy `local` to <rel>/<name> atomically; its address."""
        name = name or local.name
        dst = self._path(rel, name)
        tmp = self._path(rel, f".{name}.tmp.{os.getpid()}.{threading.get_ident()}")
        self.fs.makedirs(f"{self.root}/{rel}", exist_ok=True)
        self.fs.put_file(str(local), tmp)
        self.fs.mv(tmp, dst)
        return self.uri(rel, name)

    def newest_checkpoint(self, rels: Sequence[str]) -> str | None:
        """The first of `rels` (newest first) that holds a checkpoint; its storage path.
        OSError when the storage cannot be read (this box cannot reach it)."""
        try:
            for rel in rels:
                path = self._path(rel, artifacts.CHECKPOINT)
                if self.fs.exists(path):
                    return path
        except Exception as e:  # noqa: BLE001 - fsspec backends raise their own errors
            raise OSError(f"checkpoint storage {self.url}: {e}") from e
        return None

    def fetch(self, path: str, into: Path) -> Path:
        """Download a stored checkpoint into the directory `into`; the local file.
        OSError when it cannot (the attempt then fails to start: a box problem)."""
        into.mkdir(parents=True, exist_ok=True)
        local = into / artifacts.CHECKPOINT
        tmp = into / f".{artifacts.CHECKPOINT}.part"
        try:
            self.fs.get_file(path, str(tmp))
        except Exception as e:  # noqa: BLE001 - fsspec backends raise their own errors
            raise OSError(f"checkpoint storage {self.url}: cannot download {path}: {e}") from e
        os.replace(tmp, local)
        return local


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def open_storage(url: str | None) -> Storage | None:
    """The configured storage, or None: the runs dir is the storage (one box, no config)."""
    url = url or os.environ.get(STORAGE_ENV) or None
    return Storage(url) if url else None


@dataclass
class CheckpointSync:
    """Copies one attempt's checkpoint to storage whenever the trainer rewrote it, in a
    background thread so heartbeats never wait on an upload."""

    storage: Storage
    outdir: Path
    rel: str
    uploaded: list[tuple[str, int | None]] = field(default_factory=list)
    """(address, iteration) of every upload, oldest first."""
    recorded: int = 0
    """How many of `uploaded` the queue has recorded."""
    _seen: tuple[int, int] | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.outdir / artifacts.CHECKPOINT).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _upload(self, stamp: tuple[int, int]) -> None:
        progress = artifacts.read_json(self.outdir / artifacts.PROGRESS)
        it = progress.get("iter") if isinstance(progress, dict) else None
        with self._lock:
            try:
                address = self.storage.put(self.outdir / artifacts.CHECKPOINT, self.rel)
            except Exception as e:  # noqa: BLE001 - the next poll tries again
                logger.warning("checkpoint upload to %s failed: %s", self.storage.url, e,
                               extra={"action": "checkpoint_upload_failed"})
                return
            self._seen = stamp
            self.uploaded.append((address, it if isinstance(it, int) else None))

    def poll(self) -> None:
        """Start an upload if the checkpoint changed and none is running."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._upload, args=(stamp,), daemon=True,
                                        name=f"ckpt-sync-{self.rel}")
        self._thread.start()

    def step(self, record: Callable[[str, int | None], bool], *, final: bool = False) -> None:
        """poll() (or final()), then `record` each new upload until one is refused."""
        if final:
            self.final()
        else:
            self.poll()
        while self.recorded < len(self.uploaded):
            if not record(*self.uploaded[self.recorded]):
                return
            self.recorded += 1

    def final(self) -> None:
        """After the process ended: the last checkpoint and the attempt's artifacts."""
        if self._thread is not None:
            self._thread.join()
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            self._upload(stamp)
        for name in ARTIFACTS:
            if (self.outdir / name).exists():
                try:
                    self.storage.put(self.outdir / name, self.rel)
                except Exception as e:  # noqa: BLE001 - the attempt's end is recorded anyway
                    logger.warning("artifact upload of %s failed: %s", name, e,
                                   extra={"action": "artifact_upload_failed"})
