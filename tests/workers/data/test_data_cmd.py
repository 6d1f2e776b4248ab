"""`recip data prepare` / `recip data ls` through the CLI boundary."""

from __future__ import annotations

import json

from orchestrator.cli.app import run


def test_prepare_then_ls(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECIP_DATA_DIR", str(tmp_path / "data"))
    src = tmp_path / "a.txt"
    src.write_text("hello there\n\nsecond\n")
    assert run(["data", "prepare", "--dataset", f"text:{src}", "--tokenizer", "byte", "--json"]) == 0
    out, err = capsys.readouterr()
    row = json.loads(out)
    assert row["tokenizer"] == "byte" and row["documents"] == 2 and "prepared" in err
    assert run(["data", "prepare", "--dataset", f"text:{src}", "--tokenizer", "byte"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["dataset", "tokenizer", "docs", "train", "val", "path"]
    assert "reused" in err
    assert run(["data", "ls", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert [r["path"] for r in json.loads(out)] == [row["path"]]


def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    assert run(["data", "prepare", "--dataset", "text:/missing.txt", "--data-dir", str(tmp_path)]) == 1
    _, err = capsys.readouterr()
    assert err.strip() == "error: dataset 'text:/missing.txt': no such file /missing.txt"
    assert run(["data", "prepare", "--tokenizer", "sentencepiece", "--data-dir", str(tmp_path)]) == 1
    _, err = capsys.readouterr()
    assert "unknown tokenizer 'sentencepiece' (known: gpt2, byte)" in err and "Traceback" not in err
