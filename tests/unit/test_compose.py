"""docker-compose.yml and docker/Dockerfile, checked without a Docker engine: by what they
make happen (the worker's command run with stand-in `ray`/`recip`, the environment a GPU
box ends up with, what the image does at build time and at start)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HEAD_SERVICES = ("postgres", "ray-head")


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` interpolation and `$$` escape."""
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3) or ""
        return env.get(name) or default
    out = re.sub(r"(?<!\$)\$\{(\w+)(:-([^}]*))?\}", sub, value)
    return out.replace("$$", "$")


def test_compose_file_validates_with_docker_compose() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs Debian's package")
        pytest.skip("docker-compose (Debian or PyPI 1.29) not installed")
    proc = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_worker_command_joins_the_head_then_runs_recip_workers_up(tmp_path: Path) -> None:
    """Run the worker's shell command with stand-ins for `ray` and `recip` on PATH."""
    calls = tmp_path / "calls"
    for name in ("ray", "recip"):
        stub = tmp_path / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
        stub.chmod(0o755)
    worker = services()["worker"]
    env = {"RAY_HEAD": "head.example:6379"}
    argv = [interpolate(a, env) for a in worker["command"]]
    box_env = {k: interpolate(str(v), env) for k, v in worker["environment"].items()}
    proc = subprocess.run(argv, env={**box_env, "PATH": f"{tmp_path}:/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert calls.read_text().splitlines() == [
        "ray start --address=head.example:6379",
        "recip workers up --gpus all --address auto",
    ]


def test_a_gpu_box_reaches_a_head_on_another_host() -> None:
    """Host networking (Ray needs every node's ports, not only 6379), and no default that
    names a compose service: service names do not resolve on another host."""
    s = services()
    for name in ("worker", "ray-head"):
        assert s[name].get("network_mode") == "host", name
        assert "ports" not in s[name]
    env = {"RAY_HEAD": "10.0.0.5:6379",
           "RECIP_DB_URL": "postgresql+psycopg://recip:pw@10.0.0.5:5432/recip",
           "RECIP_STORAGE": "s3://bucket/recip"}
    resolved = {k: interpolate(str(v), env) for k, v in s["worker"]["environment"].items()}
    assert resolved["RAY_HEAD"] == "10.0.0.5:6379"
    assert resolved["RECIP_DB_URL"].endswith("@10.0.0.5:5432/recip")
    assert resolved["RECIP_STORAGE"] == "s3://bucket/recip"
    defaults = {k: interpolate(str(v), {}) for k, v in s["worker"]["environment"].items()}
    hosts = {urlsplit(defaults["RECIP_DB_URL"]).hostname, defaults["RAY_HEAD"].split(":")[0]}
    assert hosts == {"127.0.0.1"} and not hosts & set(s)


def test_head_services_start_only_on_the_head_box() -> None:
    """A GPU box runs `up -d --no-deps worker`; the documented command says so, and what
    the worker depends on is exactly the head's services."""
    s = services()
    needs = set(s["worker"].get("depends_on", {}))
    needs |= {d for n in list(needs) for d in s[n].get("depends_on", {})}
    assert needs == {"ray-head", "migrate", "postgres"}
    docs = (ROOT / "docs" / "cluster.md").read_text()
    assert "docker compose up -d --no-deps worker" in docs
    assert "docker compose up -d --no-deps worker" in COMPOSE.read_text()


def test_the_image_installs_the_project_at_build_time_not_at_start() -> None:
    text = DOCKERFILE.read_text()
    steps = [ln.split(None, 1) for ln in text.splitlines() if ln and not ln.startswith("#")
             and not ln.startswith(" ")]
    kinds = [k for k, *_ in steps]
    assert "ENTRYPOINT" not in kinds and "CMD" not in kinds  # nothing runs pip at start
    runs = [rest for k, rest in steps if k == "RUN"]
    assert any("pip install" in r and "-e /workspace" in r for r in runs)
    copy_all = kinds.index("COPY", kinds.index("COPY") + 1)  # the project after the deps
    assert steps[copy_all][1].startswith(". /workspace")
    assert (ROOT / ".dockerignore").read_text().count(".venv/") == 1


def test_the_worker_drains_on_stop() -> None:
    """`exec` makes `recip workers up` PID 1, so `docker compose stop` (SIGTERM) reaches it
    and the attempts checkpoint and are given back within the grace period."""
    worker = services()["worker"]
    assert "exec recip workers up" in worker["command"][-1]
    assert worker["stop_grace_period"] == "2m"
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == [
        "gpu"]
