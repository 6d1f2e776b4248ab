"""No password ever printed: every command that prints a database URL, run with passwords that
hold `@`, `:`, `/`, `%40`, and with `?password=` / `?sslpassword=` query credentials, against a
real PostgreSQL (trust auth: the server ignores the password, so the success paths print too)
and against an unreachable one (the error paths)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli.app import run
from orchestrator.cli.workers_cmd import pidfile
from orchestrator.queue.redact import redact_text, redact_url
from tests.e2e.helpers import write_spec

TOKEN = "Zq9"  # every secret below contains it; no output may


def with_secret(url: str, kind: str) -> str:
    """`url` (postgresql+psycopg://postgres@HOST/DB) with the credential `kind`."""
    head, _, rest = url.partition("postgres@")
    creds = {
        "raw-at": f"postgres:{TOKEN}a@{TOKEN}x@",     # a raw `@` inside the password
        "colon-slash": f"postgres:{TOKEN}b:/w@",       # `:` and `/`
        "percent": f"postgres:{TOKEN}c%40d@",          # percent-encoded `@`
    }
    if kind in creds:
        return f"{head}{creds[kind]}{rest}"
    if kind == "query":
        return f"{url}?password={TOKEN}d"
    if kind == "sslquery":
        return f"{url}?sslmode=disable&sslpassword={TOKEN}e"
    raise AssertionError(kind)


KINDS = ["raw-at", "colon-slash", "percent", "query", "sslquery"]


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:p@ss@h:5/db", "postgresql://u:***@h:5/db"),
    ("postgresql://u:a:b/c@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u@h/db?password=zz&sslmode=x", "postgresql://u@h/db?password=***&sslmode=x"),
    ("postgresql://u@h/db?sslpassword=zz", "postgresql://u@h/db?sslpassword=***"),
    ("sqlite:///x.db?mode=ro", "sqlite:///x.db?mode=ro"),
    ("sqlite:////tmp/a b.db", "sqlite:////tmp/a b.db"),
    ("mysql://root:pw@db/recip", "mysql://root:***@db/recip"),
    ("not a url", "not a url"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_masks_every_url_in_a_message_and_keeps_its_punctuation() -> None:
    text = ("error: 'mysql://root:pw@db/recip': cannot connect to postgresql+psycopg://"
            "recip:x@y@127.0.0.1:1/q: refused (postgresql://a@h/d?password=k).")
    assert redact_text(text) == (
        "error: 'mysql://root:***@db/recip': cannot connect to postgresql+psycopg://"
        "recip:***@127.0.0.1:1/q: refused (postgresql://a@h/d?password=***).")


def test_a_raw_at_in_the_password_connects(pg_url: str) -> None:
    """`u:p@ss@host` means password `p@ss` at `host` (SQLAlchemy alone reads host `ss@host`)."""
    from orchestrator.queue.db import parse_url

    parsed = parse_url(with_secret(pg_url, "raw-at"))
    assert parsed.password == f"{TOKEN}a@{TOKEN}x" and parsed.host == "127.0.0.1"


def _commands(db: str, spec: Path, tmp: Path) -> list[list[str]]:
    return [
        ["db", "current", "--db", db],
        ["db", "upgrade", "--db", db],
        ["db", "current", "--json", "--db", db],
        ["doctor", "--skip", "ray,gpus,datasets,tokenizer,wandb", "--runs-dir", str(tmp / "r"),
         "--db", db],
        ["doctor", "--json", "--skip", "ray,gpus,datasets,tokenizer,wandb", "--runs-dir",
         str(tmp / "r"), "--db", db],
        ["status", "--db", db],
        ["status", "--json", "--db", db],
        ["status", "nope", "--db", db],
        ["queue", "submit", str(spec), "--no-check", "--db", db],
        ["queue", "ls", "--db", db],
        ["status", "--db", db],
        ["show", "ok", "V0", "--db", db],
        ["show", "nope", "V0", "--db", db],
        ["resume", "ok", "--allow-dirty", "--db", db],
        ["report", "nope", "--db", db],
        ["workers", "ls", "--db", db],
        ["workers", "ls", "--json", "--db", db],
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_no_command_prints_a_password(kind: str, pg_url: str, tmp_path: Path,
                                      capfd: pytest.CaptureFixture[str],
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    db = with_secret(pg_url, kind)
    spec = write_spec(tmp_path, study="ok")
    codes = []
    for argv in _commands(db, spec, tmp_path):
        codes.append(run(argv))
        out, err = capfd.readouterr()
        assert TOKEN not in out + err, (argv, out, err)
    assert codes[:3] == [0, 0, 0] and codes[8] == 0  # the success paths ran
    with pidfile(tmp_path / "runs", db, "test") as path:
        assert TOKEN not in path.read_text()
        assert json.loads(path.read_text())["db"] == redact_url(db)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_database_errors_print_no_password(kind: str, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    db = with_secret("postgresql+psycopg://postgres@127.0.0.1:1/q", kind)
    spec = write_spec(tmp_path, study="ok")
    for argv in _commands(db, spec, tmp_path):
        rc = run(argv)
        out, err = capfd.readouterr()
        assert rc != 0, argv
        assert TOKEN not in out + err, (argv, out, err)
        assert len(err.strip().splitlines()) == 1 or argv[0] == "doctor", (argv, err)
