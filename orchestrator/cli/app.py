"""Root Typer app: one sub-app per noun, one error boundary, `main()`.

Errors: a RecipError becomes `error: <one line>` on stderr and exit 1; usage errors exit 2
(click); anything else is reported in one line too, with the traceback only under --debug.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import click
import typer

from orchestrator.cli import (
    baseline_cmd,
    check_cmd,
    data_cmd,
    db_cmd,
    doctor_cmd,
    queue_cmd,
    report_cmd,
    resume_cmd,
    run_cmd,
    seeds_cmd,
    status_cmd,
    wandb_cmd,
    workers_cmd,
)
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

app = typer.Typer(
    name="recip",
    help="Ablation studies of reciprocal GPT-2 variants: a spec, a queue, GPU workers, a report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """recip: submit a study, watch it, fix and resume it, report what each mechanism did."""


app.add_typer(queue_cmd.app, name="queue")
app.add_typer(db_cmd.app, name="db")
app.add_typer(data_cmd.app, name="data")
app.add_typer(workers_cmd.app, name="workers")
app.add_typer(wandb_cmd.app, name="wandb")
app.add_typer(baseline_cmd.app, name="baseline")
app.add_typer(seeds_cmd.app, name="seeds")
status_cmd.register(app)
run_cmd.register(app)
check_cmd.register(app)
report_cmd.register(app)
resume_cmd.register(app)
doctor_cmd.register(app)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code (the error boundary)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("RECIP_DEBUG") == "1"
    command = typer.main.get_command(app)
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
    sys.exit(run())


if __name__ == "__main__":
    main()
