"""`recip db upgrade | current | downgrade` through the CLI boundary: data on stdout,
narration on stderr, errors as one line and exit 1."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli.app import run
from orchestrator.queue import migrate


def recip(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = run(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_upgrade_creates_the_schema_then_is_a_no_op(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/recip.db"
    rc, out, err = recip(capsys, "db", "current", "--db", url)
    assert (rc, out) == (0, "none\n") and "recip db upgrade" in err
    assert not (tmp_path / "recip.db").exists()  # looking does not create the file
    rc, out, err = recip(capsys, "db", "upgrade", "--db", url)
    assert rc == 0 and out == "" and f"schema none -> {migrate.head()}" in err
    rc, out, err = recip(capsys, "db", "upgrade", "--db", url)
    assert rc == 0 and "already at" in err
    rc, out, err = recip(capsys, "db", "current", "--db", url)
    assert (rc, out) == (0, f"{migrate.head()}\n") and "up to date" in err
    rc, out, _ = recip(capsys, "db", "current", "--db", url, "--json")
    assert json.loads(out) == {"db": url, "current": migrate.head(), "head": migrate.head(),
                               "up_to_date": True}


def test_the_db_url_comes_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECIP_DB_URL", f"sqlite:///{tmp_path}/env.db")
    assert recip(capsys, "db", "upgrade")[0] == 0
    assert (tmp_path / "env.db").exists()


def test_downgrade_needs_yes(sqlite_url, capsys):
    rc, out, err = recip(capsys, "db", "downgrade", "base", "--db", sqlite_url)
    assert rc == 1 and out == "" and err.startswith("error: ") and "--yes" in err
    assert migrate.current(sqlite_url) == migrate.head()
    rc, _, err = recip(capsys, "db", "downgrade", "base", "--db", sqlite_url, "--yes")
    assert rc == 0 and f"{migrate.head()} -> none" in err
    assert migrate.current(sqlite_url) is None


@pytest.mark.parametrize("args, needle", [
    (["db", "upgrade", "--db", "nonsense"], "invalid database URL"),
    (["db", "upgrade", "--revision", "zzz"], "zzz"),
    (["db", "current", "--db", "sqlite:////no/such/dir/x.db"], "does not exist"),
    (["db", "current", "--db", "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"], "u:***@"),
])
def test_bad_input_is_one_line_without_secrets(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECIP_DB_URL", f"sqlite:///{tmp_path}/recip.db")
    rc, out, err = recip(capsys, *args)
    assert rc == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert "hunter2" not in err and "Traceback" not in err


def test_upgrade_on_postgres(empty_pg_url, capsys):
    rc, _, err = recip(capsys, "db", "upgrade", "--db", empty_pg_url)
    assert rc == 0 and f"-> {migrate.head()}" in err
    rc, out, _ = recip(capsys, "db", "current", "--db", empty_pg_url)
    assert out == f"{migrate.head()}\n"
