"""`python -m workers.spare`: a warm interpreter waiting to become the next attempt.

Per attempt, most of the time between the claim and the first training step is imports:
torch, torch._dynamo (which torch.optim imports on its first use) and, with W&B on, wandb
and its service (bench/attempt_overhead.py, docs/performance.md). `SubprocessRunner(warm=
True)` keeps one spare process that has imported them ahead of time; `spawn()` hands the
spare its attempt through stdin and it runs `workers.run_attempt` in place.

Protocol: after `delay_s` (so a spare started next to a starting attempt does not slow it
down on a small CPU slot) the spare preloads and writes `ready` on stdout; then it reads one
JSON line from stdin: {"argv", "log", "env", "cwd"}. It points stdout and stderr at `log`,
takes `env` and `cwd`, and runs the attempt, whose exit code is its own. End of stdin
without a job (the worker went away) exits 0. Only third-party modules are preloaded: the
project's own code is imported after the job arrives, so it is the code of that moment.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import runpy
import select
import sys
from typing import Any

PRELOAD: tuple[str, ...] = ("numpy", "torch", "torch._dynamo", "torch.optim")
PRELOAD_WANDB: tuple[str, ...] = ("wandb",)


def preload(wandb: bool) -> list[str]:
    """Import the heavy third-party modules; the ones that failed are returned, not raised."""
    failed = []
    for name in PRELOAD + (PRELOAD_WANDB if wandb else ()):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the attempt will import it again and report
            failed.append(name)
    if wandb and "wandb" not in failed:
        with contextlib.suppress(Exception):
            sys.modules["wandb"].setup()
    return failed


def take_job(job: dict[str, Any]) -> list[str]:
    """Become the attempt's process: its log on fd 1 and 2, its environment and cwd."""
    fd = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(job["env"])
    if job.get("cwd"):
        os.chdir(job["cwd"])
    if sys.path and sys.path[0] != os.getcwd():
        sys.path.insert(0, os.getcwd())
    return [str(a) for a in job["argv"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workers.spare", description=__doc__.splitlines()[0])
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before preloading")
    p.add_argument("--wandb", action="store_true", help="also preload wandb and start its service")
    args = p.parse_args(argv)
    stdin = sys.stdin.buffer
    if args.delay <= 0 or not select.select([stdin], [], [], args.delay)[0]:
        preload(args.wandb)
        with contextlib.suppress(OSError):
            os.write(1, b"ready\n")
    line = stdin.readline()
    if not line.strip():
        return 0
    sys.argv = ["workers.run_attempt", *take_job(json.loads(line))]
    runpy.run_module("workers.run_attempt", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
