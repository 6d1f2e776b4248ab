"""`recip doctor`: passes on this machine once set up (migrated DB, a prepared dataset), and
every failure is one `fail` line naming the fix, with exit 1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.app import run
from tests.tracking.test_wandb import closed_port

FAST = "--skip=ray,gpus"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    from workers.data.prepare import prepare

    src = tmp_path / "notes.txt"
    src.write_text("\n\n".join(f"document {i}: the quick brown fox" for i in range(50)))
    root = tmp_path / "data"
    prepare(f"text:{src}", "byte", root, progress=False)
    return root


@pytest.fixture
def quiet_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def doctor(capsys: Any, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    rc = run(["doctor", "--json", *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out), err


def _ray_leftovers(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                found.append(f"{pid}: {cmd[:120]}")
    return found


@pytest.mark.slow
@pytest.mark.ray
def test_passes_on_a_set_up_machine(sqlite_url, data_dir, tmp_path, capsys, quiet_wandb) -> None:
    rc, checks, err = doctor(capsys, "--db", sqlite_url, "--data-dir", str(data_dir),
                             "--runs-dir", str(tmp_path / "runs"))
    by = {c["check"]: c for c in checks}
    print("\n".join(f"{c['status']:<4} {c['check']:<9} {c['seconds']:5.1f}s {c['detail']}"
                    for c in checks))
    assert rc == 0, checks
    assert list(by) == ["db", "ray", "gpus", "datasets", "tokenizer", "wandb", "disk"]
    assert all(c["status"] in ("ok", "warn") for c in checks)
    assert by["db"]["status"] == "ok" and "schema at head 0007" in by["db"]["detail"]
    assert by["ray"]["status"] == "ok" and "started and stopped" in by["ray"]["detail"]
    assert by["ray"]["seconds"] < 30
    assert by["datasets"]["status"] == "ok" and "sha256 verified" in by["datasets"]["detail"]
    assert by["tokenizer"]["detail"] == "GPT-2 BPE offline: 'Hello world' -> [15496, 995]"
    assert "offline" in by["wandb"]["detail"] and "no API key" in by["wandb"]["detail"]
    assert err.strip() == "7 checks: " + ", ".join(
        f"{sum(c['status'] == s for c in checks)} {s}" for s in ("ok", "warn", "fail"))
    assert _ray_leftovers("recip-doctor-") == []


def test_postgres_down_is_a_clear_fail_line(capsys, quiet_wandb) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/postgres"
    rc = run(["doctor", "--db", url, FAST])
    out, err = capsys.readouterr()
    assert rc == 1
    (line,) = [ln for ln in out.splitlines() if ln.split()[1] == "db"]
    assert line.startswith("fail  db ")
    assert "cannot connect to postgresql+psycopg://postgres@127.0.0.1:" in line
    assert "refused" in line.lower() and "check --db / RECIP_DB_URL" in line
    assert "Traceback" not in out + err and err.strip().endswith("1 fail (skipped gpus, ray)")


def test_missing_schema_and_corrupt_dataset_fail_with_their_fix(tmp_path, data_dir, capsys,
                                                                 quiet_wandb) -> None:
    train_bin = next(data_dir.glob("*/train.bin"))
    data = bytearray(train_bin.read_bytes())
    data[0] ^= 1                                           # same size, other bytes
    train_bin.write_bytes(bytes(data))
    (tmp_path / "empty.db").touch()                        # a file without the schema
    rc, checks, _ = doctor(capsys, "--db", f"sqlite:///{tmp_path / 'empty.db'}",
                           "--data-dir", str(data_dir), FAST)
    by = {c["check"]: c for c in checks}
    assert rc == 1
    assert by["db"]["status"] == "fail" and "run `recip db upgrade" in by["db"]["detail"]
    # no file at all is the fresh embedded default: created by the first submit or run
    rc, checks, _ = doctor(capsys, "--db", f"sqlite:///{tmp_path / 'none.db'}",
                           "--skip=ray,gpus,datasets,tokenizer,wandb,disk")
    (db,) = checks
    assert rc == 0 and db["status"] == "warn" and "recip queue submit" in db["detail"]
    assert by["datasets"]["status"] == "fail" and "sha256 mismatch" in by["datasets"]["detail"]
    assert by["tokenizer"]["status"] == "ok"


def test_online_wandb_without_a_key_fails(sqlite_url, capsys, quiet_wandb, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    rc, checks, _ = doctor(capsys, "--db", sqlite_url, FAST)
    (w,) = [c for c in checks if c["check"] == "wandb"]
    assert rc == 1 and w["status"] == "fail" and "WANDB_API_KEY" in w["detail"]


def test_unknown_check_is_a_usage_error(capsys) -> None:
    assert run(["doctor", "--skip", "gpu"]) == 2
    assert "unknown check(s) gpu" in capsys.readouterr().err


def test_db_check_on_a_migrated_postgres(pg_url, capsys) -> None:
    rc, checks, _ = doctor(capsys, "--db", pg_url, "--skip=ray,gpus,datasets,tokenizer,wandb,disk")
    assert rc == 0 and [c["status"] for c in checks] == ["ok"]
    assert "schema at head" in checks[0]["detail"] and "postgresql+psycopg://" in checks[0]["detail"]


def test_db_check_on_an_empty_postgres_names_the_fix(empty_pg_url, capsys) -> None:
    rc, checks, _ = doctor(capsys, "--db", empty_pg_url,
                           "--skip=ray,gpus,datasets,tokenizer,wandb,disk")
    assert rc == 1 and checks[0]["status"] == "fail"
    assert "has no recip schema: run `recip db upgrade" in checks[0]["detail"]
