"""FineWebEdu-style preparation on a local stand-in: `hf:` through the `datasets` package on a
local JSONL file with FineWeb-Edu's columns, `--tokens 100M`-style limits, a progress line,
and resumption: an interrupted prepare (an error mid-stream, or SIGKILL) continues from its
last durable point and produces exactly the bytes of an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from orchestrator.cli.app import run
from orchestrator.cli.data_cmd import parse_count
from workers.data import prepare as prep
from workers.data.prepare import DataPrepError, partial_state, prepare, verify

ROOT = Path(__file__).resolve().parents[3]


def fineweb_like(path: Path, n: int, *, broken: int | None = None) -> Path:
    """Rows shaped like HuggingFaceFW/fineweb-edu (text, id, url, score, ...)."""
    with open(path, "w") as f:
        for i in range(n):
            row = {"id": f"<urn:uuid:{i:08d}>", "url": f"https://example.org/{i}",
                   "score": 3.1, "int_score": 3, "language": "en", "token_count": 60,
                   "text": f"Lesson {i}. Photosynthesis turns light into chemical energy; "
                           f"the Calvin cycle fixes carbon in step {i % 13}."}
            if i == broken:
                del row["text"]
            f.write(json.dumps(row) + "\n")
    return path


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the documents the real GPT-2 tokenizer encodes inside prepare()."""
    calls: list[int] = []
    real = prep.get_tokenizer

    def get(name: str) -> prep.Tokenizer:
        tok = real(name)
        return dataclasses.replace(tok, encode=lambda s: (calls.append(1), tok.encode(s))[1])

    monkeypatch.setattr(prep, "get_tokenizer", get)
    return calls


@pytest.mark.parametrize("text, count", [("100M", 100_000_000), ("250k", 250_000),
                                         ("1.5B", 1_500_000_000), ("10_000", 10_000),
                                         ("12", 12)])
def test_token_counts(text: str, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["1.5x", "", "inf", "1.5", "M"])
def test_bad_token_counts(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_count(text)


def test_fineweb_stand_in_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    pytest.importorskip("datasets", reason="hf: needs the `datasets` package")
    src = fineweb_like(tmp_path / "fineweb-edu-sample.jsonl", 400)
    args = ["data", "prepare", "--dataset", f"hf:{src}", "--config", "sample-10BT",
            "--tokens", "5k", "--data-dir", str(tmp_path / "data"), "--json"]
    assert run(args) == 0
    out, err = capsys.readouterr()
    row = json.loads(out)
    assert row["token_limit"] == 5000 and row["config"] == "sample-10BT"
    assert 5000 <= row["train_tokens"] + row["val_tokens"] < 5000 + 40   # stops after the doc
    assert f"prepare hf:{src}/gpt2 [####################] 100.0%" in err
    assert err.strip().endswith(f"prepared hf:{src} with gpt2: {row['path']}")
    assert run(args) == 0 and "reused" in capsys.readouterr().err


def test_error_mid_stream_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("datasets", reason="hf: needs the `datasets` package")
    monkeypatch.setattr(prep, "FLUSH_TOKENS", 500)
    src = fineweb_like(tmp_path / "shard.jsonl", 600, broken=450)
    root = tmp_path / "data"
    with pytest.raises(DataPrepError, match="rows have no 'text' field"):
        prepare(f"hf:{src}", "gpt2", root, config="sample-10BT", progress=False)
    state = partial_state(f"hf:{src}", "gpt2", root, config="sample-10BT")
    assert state is not None and 300 < state["docs"] <= 450 and state["tokens"] > 0
    print(f"interrupted at {state['docs']} documents, {state['tokens']:,} tokens on disk")

    fineweb_like(src, 600)                                  # the row is fixed upstream
    calls = counting(monkeypatch)
    info = prepare(f"hf:{src}", "gpt2", root, config="sample-10BT", progress=True)
    err = capsys.readouterr().err
    assert f"resuming hf:{src}/gpt2 at {state['tokens']:,} tokens ({state['docs']:,} documents" \
        in err
    assert len(calls) == 600 - state["docs"]                # only the rest was tokenized
    assert [p.name for p in root.iterdir()] == [info.path.name]

    fresh = prepare(f"hf:{src}", "gpt2", tmp_path / "fresh", config="sample-10BT", progress=False)
    assert info.meta["sha256"] == fresh.meta["sha256"] and info.meta["documents"] == 600
    assert verify(info)


@pytest.mark.slow
def test_sigkill_mid_prepare_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    src = tmp_path / "big.txt"
    src.write_text("\n\n".join(f"document {i} " + "lorem ipsum " * 40 for i in range(12000)))
    root = tmp_path / "data"
    code = ("import sys; from workers.data import prepare as p; p.FLUSH_TOKENS = 2000; "
            f"p.prepare('text:{src}', 'byte', '{root}', progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    state = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        state = partial_state(f"text:{src}", "byte", root)
        if state and state["tokens"] > 20_000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state is not None and proc.returncode == -signal.SIGKILL, "prepare ended before the kill"
    on_disk = partial_state(f"text:{src}", "byte", root)
    assert on_disk is not None and on_disk["tokens"] >= state["tokens"]

    info = prepare(f"text:{src}", "byte", root, progress=True)
    err = capsys.readouterr().err
    assert f"at {on_disk['tokens']:,} tokens ({on_disk['docs']:,} documents already done)" in err
    fresh = prepare(f"text:{src}", "byte", tmp_path / "fresh", progress=False)
    assert info.meta["sha256"] == fresh.meta["sha256"]
    assert info.train_tokens + info.val_tokens == fresh.train_tokens + fresh.val_tokens
    assert [p.name for p in root.iterdir()] == [info.path.name]          # no partial left
