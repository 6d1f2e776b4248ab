"""Root Typer app: one sub-app per noun, one error boundary, `main()`.

Errors: a RecipError becomes `error: <one line>` on stderr and exit 1; usage errors exit 2
(click); anything else is reported in one line too, with the traceback only under --debug.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import traceback
from typing import Annotated, Any, NoReturn

import click
import typer

from orchestrator.cli.common import redact, say
from orchestrator.core.errors import RecipError

# typer >= 0.24 vendors click (typer._click) and has its own Exit/Abort; older typer
# re-exports click's. Catch both families so the boundary works with either.
_EXIT: tuple[type[BaseException], ...] = (typer.Exit, click.exceptions.Exit)
_ABORT: tuple[type[BaseException], ...] = (typer.Abort, click.exceptions.Abort)
_USAGE: tuple[type[BaseException], ...] = (click.exceptions.ClickException,)
try:
    from typer._click import exceptions as _vendored

    _USAGE = (_vendored.ClickException, click.exceptions.ClickException)
except ImportError:  # pragma: no cover
    pass

# Which module defines each top-level name: a sub-app (`recip queue ...`) or commands added
# by the module's `register(app)`. A command line whose command is listed here imports only
# that module (startup: `recip status` never imports the run, resume or doctor code); any
# other (help, completion, a command added elsewhere) builds the whole app.
SUBAPPS: dict[str, str] = {
    "queue": "queue_cmd", "db": "db_cmd", "data": "data_cmd", "workers": "workers_cmd",
    "wandb": "wandb_cmd", "baseline": "baseline_cmd", "seeds": "seeds_cmd",
}
REGISTERED: tuple[str, ...] = (
    "status_cmd", "run_cmd", "check_cmd", "report_cmd", "resume_cmd", "doctor_cmd",
)
COMMANDS: dict[str, str] = {
    "status": "status_cmd", "run": "run_cmd", "logs": "run_cmd", "check": "check_cmd",
    "report": "report_cmd", "resume": "resume_cmd", "rerun": "resume_cmd",
    "show": "resume_cmd", "doctor": "doctor_cmd",
}


def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """recip: submit a study, watch it, fix and resume it, report what each mechanism did."""


def build_app(only: str | None = None) -> typer.Typer:
    """The root app with every command, or with only the module that defines `only`."""
    root = typer.Typer(
        name="recip",
        help="Ablation studies of reciprocal GPT-2 variants: a spec, a queue, GPU workers, a report.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    root.callback()(_root)

    def module(name: str) -> Any:
        return importlib.import_module(f"orchestrator.cli.{name}")

    for sub, mod in SUBAPPS.items():
        if only is None or only == sub:
            root.add_typer(module(mod).app, name=sub)
    for mod in REGISTERED:
        if only is None or COMMANDS.get(only) == mod:
            module(mod).register(root)
    return root


READ_COMMANDS = frozenset({"status", "report"})
"""The commands a user types to look, which should answer in < 1 s (bench/cli_bench.py).

- Their only numerics are a few small t tests (scipy on numpy), and OpenBLAS starts one
  spinning thread per core when numpy is imported: 0.2 s of CPU on a 2-core box. Neither
  starts a trainer, so one BLAS thread (unless the user set OPENBLAS_NUM_THREADS) reaches no
  training process.
- They end with `os._exit` once their output is flushed and their database closed: the
  interpreter's own teardown of the ~1,000 modules and objects they loaded took 0.15-0.28 s
  after the work was done (measured at 1,000 runs on PostgreSQL, 2026-12-04)."""


def _command_name(args: list[str]) -> str | None:
    """The command an argv names, when it is one of ours and nothing but --debug precedes it."""
    for arg in args:
        if arg == "--debug":
            continue
        return arg if arg in SUBAPPS or arg in COMMANDS else None
    return None


def __getattr__(name: str) -> Any:
    """`app`: the full root app, built on first use (tests and completion inspect it)."""
    if name == "app":
        full = build_app()
        globals()["app"] = full
        return full
    raise AttributeError(name)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code (the error boundary)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("RECIP_DEBUG") == "1"
    name = _command_name(args)
    if name in READ_COMMANDS:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = typer.main.get_command(build_app(name))
    try:
        rc = command.main(args=args, prog_name="recip", standalone_mode=False)
    except _EXIT as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except _ABORT:
        say("aborted")
        return 130
    except _USAGE as e:
        e.show()  # type: ignore[attr-defined]
        return int(getattr(e, "exit_code", 2))
    except RecipError as e:
        if debug:
            traceback.print_exc()
        say(f"error: {redact(e.message)}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - the one boundary where every error becomes a line
        if debug:
            traceback.print_exc()
        say(f"error: {type(e).__name__}: {redact(str(e))} (rerun with --debug for the traceback)")
        return 1
    return rc if isinstance(rc, int) else 0


def main() -> None:
    rc = run()
    if _command_name(sys.argv[1:]) in READ_COMMANDS:
        _exit_now(rc)
    sys.exit(rc)


def _exit_now(rc: int) -> NoReturn:
    """Flush what was written and leave without the interpreter's teardown (READ_COMMANDS:
    their database is closed and their files written by now)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
