"""`recip check FILE`: build every step's model (meta, then a tiny CPU probe) and report.

Stdout: one row per step (parameters by part, attention:MLP ratio, causal, mechanisms active,
identical-to), or `--json`. Stderr: errors, warnings and the summary. Exit 1 if a step fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import JsonOption, SetOption, emit_json, say, split_csv

if TYPE_CHECKING:
    from workers.check import StepCheck


def register(app: typer.Typer) -> None:
    """Add this module's top-level commands to the root app."""
    app.command("check")(check)


def check(
    file: Annotated[Path, typer.Argument(help="Study spec (YAML).", show_default=False)],
    steps: Annotated[str | None, typer.Option(
        "--steps", help="Only these steps, comma-separated (e.g. V1,V3).", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Replace the spec's model sizes with this preset (e.g. tiny).",
        show_default=False)] = None,
    sets: SetOption = None,
    json_out: JsonOption = False,
) -> None:
    """Build every step's model, count its parameters, probe causality and mechanisms."""
    from models.presets import PRESETS, TOKENIZER_VOCAB
    from orchestrator.core.loader import load_spec
    from orchestrator.core.resolve import Overrides, parse_set, resolve
    from workers.check import check_plan

    spec = load_spec(file)
    overrides = Overrides(preset=preset, sets=tuple(parse_set(a) for a in sets or ()))
    plan = resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB, overrides=overrides,
                   steps=split_csv(steps), source=str(file))
    from orchestrator.cli.render import check_progress

    with check_progress(plan) as progress:
        checks = check_plan(plan, progress=progress)
    if json_out:
        emit_json([c.to_dict() for c in checks])
    else:
        typer.echo(render_checks(checks))
        say(render_widths(checks))  # i14: on stderr with the notes, so stdout stays the table
    firsts = {r.step: r.config for r in reversed(plan.runs)}
    for c in checks:
        if c.error:
            say(f"error: {file}: {c.step}: {c.error}")
        for w in c.warnings:
            say(f"warning: {c.step}: {w}")
        if c.identical_to and c.intended_control:
            say(f"note: {c.step} builds the same model as {c.identical_to}: declared as an "
                "intended control (analysis.pairs control: true)")
        elif c.identical_to:
            same = _outside_model(firsts[c.step]) == _outside_model(firsts[c.identical_to])
            say(f"note: {c.step} builds the same model as {c.identical_to}"
                + (": a duplicate step" if same else " (they differ outside `model`)"))
    failed = [c.step for c in checks if not c.ok]
    say(f"{len(checks)} step(s) checked, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    if failed:
        raise typer.Exit(1)


def _outside_model(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("study", "step", "seed", "model")}


def _millions(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _yes(value: bool | None, none: str = "-") -> str:
    return none if value is None else ("yes" if value else "NO")


def render_checks(checks: Sequence[StepCheck]) -> str:
    """The per-step table as plain text (<= 100 columns plus the mechanism label)."""
    head = ("step", "ok", "total", "attn", "mlp", "mech", "attn:mlp", "causal", "active", "same as",
            "mechanisms")
    rows = [head]
    for c in checks:
        p = c.params
        rows.append((
            c.step,
            "ok" if c.ok else "FAIL",
            _millions(p.get("total")),
            _millions(p.get("attention")),
            _millions(p.get("mlp")),
            _millions(p.get("mechanism")),
            f"1:{c.attn_mlp_ratio:.2f}" if p else "-",
            _yes(c.causal),
            _yes(c.mechanisms_active, none="base" if c.causal is not None else "-"),
            c.identical_to or "-",
            c.mechanisms,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    return "\n".join(
        " ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + " " + r[-1]
        for r in rows
    )


def render_widths(checks: Sequence[StepCheck]) -> str:
    """i14: one line per step with the widths it builds (D_ff, R_ff, latent and head dims)."""
    width = max((len(c.step) for c in checks), default=4)
    lines = ["widths:"]
    for c in checks:
        if c.widths:
            lines.append(f"  {c.step.ljust(width)} " + " ".join(f"{k} {v}" for k, v in c.widths.items()))
    return "\n".join(lines)
