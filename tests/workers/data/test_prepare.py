"""Data preparation: offline GPT-2 ids, kjv, text and hf (local) sources, reuse, races."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workers.data.prepare import DataPrepError, list_prepared, load, locate, prepare, verify
from workers.data.tokenizers import get_tokenizer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or kwargs}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _ids(path: Path, split: str) -> np.ndarray:
    return np.fromfile(path / f"{split}.bin", dtype=np.uint16)


def test_gpt2_ids_equal_the_published_ones(no_network):
    tok = get_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.eot == 50256 and tok.vocab_size == 50257
    text = "In the beginning God created the heaven and the earth."
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|endoftext|>") != [50256]     # text never becomes a special token


def test_byte_tokenizer():
    tok = get_tokenizer("byte")
    assert tok.encode("hé") == [104, 195, 169] and tok.eot == 256 and tok.vocab_size == 257
    assert tok.decode(tok.encode("hé") + [256]) == "hé"
    with pytest.raises(ValueError, match="known: gpt2, byte"):
        get_tokenizer("bpe")


def test_kjv_with_gpt2_is_about_1_1m_tokens_offline(tmp_path, no_network):
    info = prepare("kjv", "gpt2", tmp_path, progress=False)
    total = info.train_tokens + info.val_tokens
    print(f"kjv/gpt2: {total:,} tokens ({info.train_tokens:,} train, {info.val_tokens:,} val), "
          f"{info.meta['documents']} books")
    assert 0.95e6 < total < 1.2e6
    assert info.meta["documents"] == 66
    assert info.train_tokens == int(0.9 * total)                    # contiguous 90/10
    train = _ids(info.path, "train")
    assert int((train == 50256).sum()) + int((_ids(info.path, "val") == 50256).sum()) == 66
    tok = get_tokenizer("gpt2")
    head = tok.decode(train[:40].tolist())
    assert head.startswith("The First Book of Moses, called Genesis\nIn the beginning God created")
    assert "1:1" not in tok.decode(train[:2000].tolist())         # verse numbers stripped
    assert verify(info)
    meta = json.loads((info.path / "meta.json").read_text())
    assert meta["tokenizer"] == "gpt2" and set(meta["sha256"]) == {"train.bin", "val.bin"}


def test_prepared_once_then_reused(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("first doc\nline two\n\nsecond doc\n\n\nthird doc\n")
    root = tmp_path / "data"
    assert locate(f"text:{src}", "byte", root) is None
    info = prepare(f"text:{src}", "byte", root, progress=False)
    mtime = (info.path / "train.bin").stat().st_mtime_ns
    again = prepare(f"text:{src}", "byte", root, progress=False)
    assert again.path == info.path and (info.path / "train.bin").stat().st_mtime_ns == mtime
    assert info.meta["documents"] == 3
    stream = np.concatenate([_ids(info.path, "train"), _ids(info.path, "val")])
    assert bytes(stream[stream != 256].tolist()) == b"first doc\nline two\nsecond doc\nthird doc\n"
    assert int((stream == 256).sum()) == 3
    whole = prepare(f"text:{src}", "byte", root, config="whole", progress=False)
    assert whole.path != info.path and whole.meta["documents"] == 1
    src.write_text("changed\n")                                      # new content, new key
    assert prepare(f"text:{src}", "byte", root, progress=False).path not in (info.path, whole.path)
    assert len(list_prepared(root)) == 3


def test_token_limit_stops_after_the_document_that_reaches_it(tmp_path):
    info = prepare("kjv", "byte", tmp_path, tokens=100_000, progress=False)
    total = info.train_tokens + info.val_tokens
    assert total >= 100_000 and info.meta["documents"] == 1           # Genesis alone is ~200k bytes


def test_concurrent_prepares_do_not_corrupt_each_other(tmp_path):
    src = tmp_path / "big.txt"
    src.write_text("\n\n".join(f"document {i} " + "word " * 2000 for i in range(200)))
    root = tmp_path / "data"
    code = ("import sys; from workers.data.prepare import prepare; "
            f"print(prepare('text:{src}', 'byte', '{root}', progress=False).path)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(3)]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 1
    assert [d.name for d in root.iterdir()] == [Path(paths.pop()).name]   # no temp dirs left
    assert verify(list_prepared(root)[0])


def test_truncated_data_is_a_clear_error(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abc " * 100)
    info = prepare(f"text:{src}", "byte", tmp_path / "d", progress=False)
    with open(info.path / "val.bin", "r+b") as f:
        f.truncate(4)
    with pytest.raises(DataPrepError, match="truncated; delete"):
        load(info.path)


@pytest.mark.parametrize("dataset, message", [
    ("wikitext", "unknown dataset 'wikitext'"),
    ("text:/no/such/file.txt", "no such file"),
])
def test_bad_dataset_names_are_clear_errors(tmp_path, dataset, message):
    with pytest.raises(DataPrepError, match=message):
        prepare(dataset, "byte", tmp_path, progress=False)


def test_hf_source_on_a_local_jsonl_file(tmp_path, no_network):
    pytest.importorskip("datasets", reason="hf: needs the `datasets` package")
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"row {i} says hello"}) for i in range(50)) + "\n")
    info = prepare(f"hf:{src}", "gpt2", tmp_path / "data", tokens=40, progress=False)
    assert info.meta["source"].startswith("datasets json loader")
    stream = np.concatenate([_ids(info.path, "train"), _ids(info.path, "val")])
    docs = get_tokenizer("gpt2").decode(stream.tolist()).split("<|endoftext|>")
    assert docs[0] == "row 0 says hello" and len(docs) - 1 == info.meta["documents"] < 50


def test_hf_unknown_remote_dataset_offline_is_one_clear_error(tmp_path, no_network):
    pytest.importorskip("datasets", reason="hf: needs the `datasets` package")
    with pytest.raises(DataPrepError, match="hf:nobody/nothing cannot be loaded"):
        prepare("hf:nobody/nothing", "gpt2", tmp_path, progress=False)
