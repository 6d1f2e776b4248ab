"""`recip data prepare` and `recip data ls`: token corpora under $RECIP_DATA_DIR.

Stdout: the prepared dataset (or the list) as a table, or `--json`; narration and the
progress bar go to stderr.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import JsonOption, emit_json, say
from orchestrator.core.errors import DataError

if TYPE_CHECKING:
    from workers.data.prepare import DatasetInfo

app = typer.Typer(help="Prepare and list token datasets.", no_args_is_help=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where datasets live. Default: $RECIP_DATA_DIR, else ./data.",
                 show_default=False),
]


_SUFFIX = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_count(value: str | int) -> int:
    """`100M` -> 100_000_000; also `250k`, `1.5B`, `10_000`, plain integers."""
    if isinstance(value, int):
        return value
    text = str(value).strip().replace("_", "").replace(",", "")
    scale = _SUFFIX.get(text[-1:].lower(), 1) if text else 1
    number = text[:-1] if scale != 1 else text
    try:
        count = float(number) * scale
    except ValueError:
        count = math.nan
    if not math.isfinite(count):
        raise typer.BadParameter(f"{value!r} is not a count: write e.g. 100M, 250k or 100000")
    if count != int(count):
        raise typer.BadParameter(f"{value!r} is not a whole number of tokens")
    return int(count)


@app.command("prepare")
def prepare_cmd(
    dataset: Annotated[str, typer.Option(
        "--dataset", help="kjv (ships with the install), text:PATH (a UTF-8 file) or hf:NAME.")] = "kjv",
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="gpt2 (GPT-2 BPE, offline) or byte.")] = "gpt2",
    config: Annotated[str | None, typer.Option(
        "--config", help="hf: dataset config (e.g. sample-10BT); text: blank-lines (default) or whole.",
        show_default=False)] = None,
    tokens: Annotated[int | None, typer.Option(
        "--tokens", help="Stop after the document that reaches N tokens (e.g. 100M, 1.5B).",
        parser=parse_count, metavar="N", show_default=False)] = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Tokenize a corpus into train.bin/val.bin (uint16) + meta.json, once; reuse it after."""
    from workers.data.prepare import DataPrepError, locate, prepare

    try:
        existing = locate(dataset, tokenizer, data_dir, config=config, tokens=tokens)
        info = existing or prepare(dataset, tokenizer, data_dir, config=config, tokens=tokens)
    except (DataPrepError, ValueError) as e:
        raise DataError(str(e)) from e
    if json_out:
        emit_json(_row(info))
    else:
        typer.echo(render_datasets([info]))
    say(f"{'reused' if existing else 'prepared'} {dataset} with {tokenizer}: {info.path}")


@app.command("ls")
def ls_cmd(data_dir: DataDirOption = None, json_out: JsonOption = False) -> None:
    """List the prepared datasets."""
    from workers.data.prepare import data_root, list_prepared

    infos = list_prepared(data_dir)
    if json_out:
        emit_json([_row(i) for i in infos])
    elif infos:
        typer.echo(render_datasets(infos))
    say(f"{len(infos)} dataset(s) under {data_root(data_dir)}")


def _row(info: DatasetInfo) -> dict[str, Any]:
    return {
        "dataset": info.dataset, "tokenizer": info.tokenizer, "vocab_size": info.vocab_size,
        "train_tokens": info.train_tokens, "val_tokens": info.val_tokens,
        "documents": info.meta.get("documents"), "config": info.meta.get("config"),
        "token_limit": info.meta.get("token_limit"), "sha256": info.meta.get("sha256"),
        "path": str(info.path),
    }


def render_datasets(infos: list[DatasetInfo]) -> str:
    """A plain-text table, one row per dataset."""
    head = ("dataset", "tokenizer", "docs", "train", "val", "path")
    rows = [(i.dataset, i.tokenizer, f"{i.meta.get('documents', 0):,}", f"{i.train_tokens:,}",
             f"{i.val_tokens:,}", str(i.path)) for i in infos]
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])
