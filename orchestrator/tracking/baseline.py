"""A W&B run as an imported baseline: fetch it (API or local file) and map it onto recip's
resolved-config and result.json shapes, so the report's confounder check (budget,
effective batch, model size, tokens, data, devices, commits) compares it like any step.

Runs written by recip carry the resolved config itself; upstream runs (`vars(args)` of the
old trainer) are mapped through known key aliases. What the source does not say stays
absent, and shows up in the report as an unknown (`?`), never as a guess.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from orchestrator.core.errors import TrackerError
from orchestrator.core.imported import IMPORTED_KEY, ImportedRun
from orchestrator.tracking.model import TrackedRun

DEFAULT_BASE_URL = "https://api.wandb.ai"
SECTIONS = ("model", "data", "train", "optimizer")
ALIASES: dict[str, tuple[str, ...]] = {
    "model.n_layer": ("n_layer", "num_layers"),
    "model.n_head": ("n_head", "num_heads"),
    "model.n_embd": ("n_embd", "hidden_size", "d_model"),
    "model.block_size": ("block_size", "seq_len", "context_length"),
    "model.vocab_size": ("vocab_size",),
    "model.dropout": ("dropout",),
    "train.batch_size": ("batch_size",),
    "train.grad_accum": ("grad_accum", "gradient_accumulation", "gradient_accumulation_steps"),
    "train.lr": ("lr", "learning_rate"),
    "train.max_iters": ("max_iters",),
    "train.weight_decay": ("weight_decay",),
    "data.dataset": ("dataset",),
    "data.tokenizer": ("tokenizer",),
    "optimizer.name": ("optimizer",),
}
BUDGET_SECONDS = ("max_time", "max_train_s", "time_budget", "budget_seconds")
PARAM_KEYS = ("params.total", "params", "n_params", "num_params", "total_params")
STEP_KEYS = ("iter", "iteration")
METRIC_ALIASES = {"learning_rate": "lr"}


# --- fetch -------------------------------------------------------------------------------


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def check_reachable(url: str | None = None, timeout: float = 5.0) -> None:
    """Raise TrackerError unless a TCP connection to the W&B server opens within `timeout`
    (wandb itself retries for minutes when the network is down)."""
    url = url or base_url()
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise TrackerError(f"cannot reach W&B at {url} ({why}): check the network or "
                           "WANDB_BASE_URL; offline runs stay on disk until then") from e


def api_key_configured() -> bool:
    """True when WANDB_API_KEY is set or ~/.netrc has an entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        host = urlparse(base_url()).hostname or ""
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def fetch_api_run(path: str, *, timeout: float = 20.0) -> TrackedRun:
    """The run `entity/project/run_id` through `wandb.Api()`, with its full history
    (`scan_history`, every row, not the 500-row `history()` sample)."""
    parts = path.strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise TrackerError(f"{path!r} is not a W&B run path: write ENTITY/PROJECT/RUN_ID, or "
                           "give a local run directory")
    check_reachable(timeout=min(timeout, 5.0))
    import wandb
    from wandb.errors import Error as WandbError

    try:
        api = wandb.Api(timeout=int(timeout))
        run = api.run(path)
        history = tuple(dict(row) for row in run.scan_history(page_size=1000))
        summary = {str(k): v for k, v in dict(run.summary).items() if not str(k).startswith("_wandb")}
        meta = run.metadata or {}
        created = getattr(run, "created_at", None)
        return TrackedRun(
            source="wandb", ref=path, run_id=parts[2], project=parts[1], entity=parts[0],
            name=run.name, config=dict(run.config), tags=tuple(run.tags or ()),
            summary=summary, history=history, commit=getattr(run, "commit", None) or None,
            host=meta.get("host"), gpu=meta.get("gpu"), state=run.state,
            started_at=_parse_time(created))
    except WandbError as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "api key" in text.lower():
            text += " (set WANDB_API_KEY or run `wandb login`)"
        raise TrackerError(f"W&B run {path}: {text}") from e
    except ValueError as e:  # wandb raises ValueError for a run that does not exist
        raise TrackerError(f"W&B run {path}: {e}") from e


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# --- map ---------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _finite(v: Any) -> float | None:
    f = _num(v)
    return f if f is not None and math.isfinite(f) else None


def _dig(d: Mapping[str, Any], dotted: str) -> Any:
    if dotted in d:
        return d[dotted]
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _first(d: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = _dig(d, k)
        if v is not None:
            return v
    return None


def is_recip_config(config: Mapping[str, Any]) -> bool:
    """A resolved run config written by recip's WandbSink."""
    return isinstance(config.get("model"), Mapping) and isinstance(config.get("train"), Mapping)


def map_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved-config sections the source tells (recip configs as they are)."""
    if is_recip_config(config):
        return {k: config[k] for k in SECTIONS if isinstance(config.get(k), Mapping)}
    out: dict[str, dict[str, Any]] = {}
    for dotted, keys in ALIASES.items():
        v = _first(config, keys)
        if v is not None:
            section, key = dotted.split(".")
            out.setdefault(section, {})[key] = v
    seconds = _finite(_first(config, BUDGET_SECONDS))
    iters = _num(_first(config, ("max_iters",)))
    if seconds is not None or iters is not None:
        out.setdefault("train", {})["budget"] = {
            "seconds": seconds, "iters": int(iters) if iters is not None else None,
            "tokens": None}
    return dict(out)


def _step_of(row: Mapping[str, Any]) -> int | None:
    for k in (*STEP_KEYS, "_step"):
        v = _num(row.get(k))
        if v is not None and math.isfinite(v):
            return int(v)
    return None


def metric_rows(history: tuple[dict[str, Any], ...]) -> list[tuple[str, int, float]]:
    """(name, iteration, value) of every numeric value logged (keys starting with `_` and
    the iteration keys themselves skipped)."""
    out: list[tuple[str, int, float]] = []
    for row in history:
        step = _step_of(row)
        if step is None:
            continue
        for key, value in row.items():
            if key.startswith("_") or key in STEP_KEYS:
                continue
            v = _num(value)
            if v is None and value == "NaN":
                v = math.nan
            if v is not None:
                out.append((METRIC_ALIASES.get(key, key), step, v))
    return out


def _series(rows: list[tuple[str, int, float]], name: str) -> list[tuple[int, float]]:
    return sorted((s, v) for n, s, v in rows if n == name and math.isfinite(v))


def map_result(run: TrackedRun, config: Mapping[str, Any],
               rows: list[tuple[str, int, float]]) -> dict[str, Any]:
    """result.json-shaped numbers of the run (None where the source does not say)."""
    s, flat = run.summary, run.config
    val = _series(rows, "val_loss")
    best = _finite(_first(s, ("best_val_loss", "final/best_val_loss")))
    if best is None and val:
        best = min(v for _, v in val)
    steps = [st for _, st, _ in rows]
    iters = _num(_first(s, STEP_KEYS)) or (float(max(steps)) if steps else None)
    model, train = config.get("model") or {}, config.get("train") or {}
    eff = None
    try:
        eff = int(train["batch_size"]) * int(train.get("grad_accum", 1)) * int(model["block_size"])
    except (KeyError, TypeError, ValueError):
        pass
    tokens_series = _series(rows, "tokens")
    tokens = _finite(s.get("tokens")) or (tokens_series[-1][1] if tokens_series else None)
    if tokens is None and iters is not None and eff is not None:
        tokens = iters * eff
    train_s = _finite(_first(s, ("train_s", "_runtime")))
    params = _finite(_first(s, PARAM_KEYS)) or _finite(_first(flat, PARAM_KEYS))
    return {
        "status": "succeeded",
        "best_val_loss": best,
        "final_val_loss": val[-1][1] if val else _finite(s.get("val_loss")),
        "final_train_loss": _finite(_first(s, ("train_loss", "loss"))),
        "iters": int(iters) if iters is not None else None,
        "tokens": int(tokens) if tokens is not None else None,
        "train_s": train_s,
        "final_lr": _finite(_first(s, ("lr", "learning_rate"))),
        "effective_batch_tokens": eff,
        "tokens_per_s": (_finite(s.get("tokens_per_s"))
                         or (tokens / train_s if tokens and train_s else None)),
        "params": {"total": int(params)} if params is not None else None,
        "device": run.gpu,
        "seed": None,
    }


def to_imported(run: TrackedRun, *, seed: int | None = None) -> ImportedRun:
    """The ImportedRun of `run`: seed from `seed`, else the run's config, else 0."""
    sections = map_config(run.config)
    raw_seed = seed if seed is not None else _num(run.config.get("seed"))
    chosen = int(raw_seed) if raw_seed is not None else 0
    provenance = {
        "identity": run.identity, "source": run.source, "ref": run.ref, "run_id": run.run_id,
        "project": run.project, "entity": run.entity, "name": run.name, "state": run.state,
        "tags": list(run.tags), "recip_config": is_recip_config(run.config),
        "wandb_config": run.config,
    }
    config: dict[str, Any] = {"seed": chosen, **sections,
                              IMPORTED_KEY: provenance}
    rows = metric_rows(run.history)
    result = map_result(run, config, rows)
    result["seed"] = chosen
    result[IMPORTED_KEY] = {k: provenance[k] for k in ("identity", "source", "ref", "state")}
    return ImportedRun(
        identity=run.identity, ref=run.ref, seed=chosen, config=config, result=result,
        metrics=tuple(rows), code_sha=run.commit, host=run.host, artifact_dir=run.local_dir,
        started_at=run.started_at, finished_at=None)
