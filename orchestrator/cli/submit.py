"""The submit pipeline, typer-free: what `recip queue submit` and `recip run` both compose.

    plan = build_plan(file, steps=..., overrides=overrides(preset=..., ...))
    params = check_plan_or_raise(plan, file, steps, progress=...)
    warn_if_slow_here(plan)        # a GPU-scale study on a CPU-only box
    ensure_database(url)           # the embedded SQLite default is created at head
    ... repo.submit(plan, now) ... describe_submit(result, len(plan.runs))

Both command modules import this one (and never each other), so the option handling of the
two commands cannot drift. torch is imported only inside the check functions.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli.common import redact, say, split_csv
from orchestrator.core.errors import SpecError

if TYPE_CHECKING:
    from orchestrator.core.plan import StudyPlan
    from orchestrator.core.resolve import Overrides
    from orchestrator.queue.types import SubmitResult

Progress = Callable[[int, int, str], None]

GPU_SCALE_PARAMS = 50_000_000
"""Above this many parameters a study is GPU-scale: a CPU trains it at a few iterations a minute."""
HF_HOST = ("huggingface.co", 443)


def parse_seeds(value: str | None) -> tuple[int, ...] | None:
    """'1,2' -> (1, 2); SpecError naming --seeds otherwise."""
    parts = split_csv(value)
    if parts is None:
        return None
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(f"expected comma-separated integers, e.g. --seeds 1,2, got {value!r}",
                        path="--seeds") from None


def overrides(*, preset: str | None = None, dataset: str | None = None,
              tokenizer: str | None = None, time: float | None = None,
              max_iters: int | None = None, seeds: str | None = None,
              sets: Sequence[str] | None = None) -> Overrides:
    """The command-line overrides of both commands as one `Overrides` value.

    `--tokenizer` is `--set data.tokenizer=...` (validated and recorded the same way)."""
    from orchestrator.core.resolve import Overrides, parse_set

    assignments = [parse_set(a) for a in sets or ()]
    if tokenizer is not None:
        assignments.append(("data.tokenizer", tokenizer))
    return Overrides(preset=preset, dataset=dataset, time=time, max_iters=max_iters,
                     seeds=parse_seeds(seeds), sets=tuple(assignments))


def build_plan(file: Path, *, steps: Sequence[str] | None = None,
               overrides: Overrides | None = None) -> StudyPlan:
    """Load, validate and resolve a spec file against the model presets."""
    from models.presets import PRESETS, RUN_SCALE, TOKENIZER_VOCAB
    from orchestrator.core.loader import load_spec
    from orchestrator.core.resolve import resolve

    spec = load_spec(file)
    return resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB, overrides=overrides,
                   steps=steps, source=str(file), run_scale=RUN_SCALE)


def _total(params: Mapping[str, int]) -> int:
    return int(params["total"]) if "total" in params else sum(params.values())


def _where(plan: StudyPlan, step: str) -> str:
    steps = plan.spec.get("steps") if isinstance(plan.spec.get("steps"), dict) else {}
    body = steps.get(step) if isinstance(steps, dict) else None
    return ("steps." + step if isinstance(body, dict) and body.get("data")
            else "defaults") + ".data.dataset"


def check_datasets(plan: StudyPlan, file: str) -> list[tuple[str, str, str]]:
    """SpecError for a `text:PATH` dataset whose file does not exist on this machine; returns
    the `hf:NAME` datasets that are not prepared here as (dataset, tokenizer, YAML path)."""
    seen: set[tuple[str, str]] = set()
    remote: list[tuple[str, str, str]] = []
    for r in plan.runs:
        data = r.config.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("dataset"), str):
            continue
        dataset, tokenizer = data["dataset"], str(data.get("tokenizer"))
        if (dataset, tokenizer) in seen:
            continue
        seen.add((dataset, tokenizer))
        if dataset.startswith("text:"):
            path = Path(dataset[len("text:"):]).expanduser()
            if not path.is_file():
                raise SpecError(f"dataset {dataset!r}: no such file {path}; fix the path (or pass "
                                "--no-check when only the workers have it)", file=file,
                                path=_where(plan, r.step))
        elif dataset.startswith("hf:"):
            if not (Path(dataset[len("hf:"):]).expanduser().is_file() or _prepared(data)):
                remote.append((dataset, tokenizer, _where(plan, r.step)))
    return remote


def unreachable_dataset(remote: Sequence[tuple[str, str, str]], file: str, *,
                        reachable: bool) -> SpecError | None:
    """The error for the first `hf:` dataset that is neither prepared here nor reachable."""
    if not remote or reachable:
        return None
    dataset, tokenizer, where = remote[0]
    return SpecError(
        f"dataset {dataset!r} is not prepared in {_data_dir()} and Hugging Face "
        f"({HF_HOST[0]}) cannot be reached from this box; prepare it where the network is "
        f"(`recip data prepare {dataset} --tokenizer {tokenizer}`) and copy the data dir here, "
        "use --dataset kjv or text:PATH, or pass --no-check when only the workers reach it",
        file=file, path=where)


def _data_dir() -> str:
    return os.environ.get("RECIP_DATA_DIR") or "./data"


def _prepared(data: Mapping[str, Any]) -> bool:
    from workers.data.prepare import locate

    try:
        return locate(str(data["dataset"]), str(data["tokenizer"]), config=data.get("config"),
                      tokens=data.get("tokens")) is not None
    except (ValueError, KeyError, OSError):
        return False


def hf_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the Hugging Face hub (or $HF_ENDPOINT) opens within `timeout`."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    host, port = HF_HOST
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        host = parts.hostname or host
        port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_plan_or_raise(plan: StudyPlan, file: str, steps: Sequence[str] | None = None, *,
                        progress: Progress | None = None, queueing: bool = True,
                        reachable: Callable[[], bool] = lambda: hf_reachable()) -> dict[str, int]:
    """Dry-run every step's model (workers.check); SpecError on the first failing step, a
    missing `text:` file, or (when `queueing`) an `hf:` dataset that is neither prepared here
    nor reachable; for a plan that queues nothing the unreachable dataset is a warning. The
    reachability probe runs beside the model checks.

    Warnings go to stderr; returns the total parameter count per step."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.core.resolve import check_error_location
    from workers.check import check_plan

    remote = check_datasets(plan, file)
    with ThreadPoolExecutor(max_workers=1) as pool:
        online = pool.submit(reachable) if remote else None
        checks = check_plan(plan, steps, progress=progress)
        unreachable = unreachable_dataset(remote, file, reachable=online.result() if online else True)
    for c in checks:
        for w in c.warnings:
            say(f"warning: {c.step}: {w}")
        if c.identical_to and not c.intended_control:
            say(f"warning: {c.step} builds the same model as {c.identical_to}; "
                "any difference between them comes from training settings, not the model")
    for c in checks:
        if not c.ok:
            at = c.error_at
            if at is None:
                raise SpecError(c.error or "the model check failed", file=file,
                                path=f"steps.{c.step}")
            path, message = check_error_location(
                plan.spec, c.step, line=c.error or at.message, part=at.part, message=at.message,
                slot=at.slot, knob=at.knob)
            raise SpecError(message, file=file, path=path)
    if unreachable is not None:
        if queueing:
            raise unreachable
        say(f"warning: {unreachable.message}")
    return {c.step: _total(c.params) for c in checks if c.params}


def cpu_flops(seconds: float = 0.2) -> float:
    """Measured float32 matmul FLOP/s of this box (all intra-op threads), over ~`seconds`."""
    import torch

    n = 512
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    done, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        a @ b
        done += 1
    return 2 * n ** 3 * done / max(elapsed, 1e-9)


def slow_here_warning(plan: StudyPlan, params: Mapping[str, int] | None, *,
                      has_gpu: bool, flops: Callable[[], float] = cpu_flops) -> str | None:
    """One warning line when a GPU-scale study is submitted from a box without a GPU: the
    estimated wall time of its runs here, from this box's measured FLOP/s (6 x params FLOPs
    per token, nanoGPT's estimate, at half the matmul peak), or what a time budget buys."""
    if has_gpu or not plan.runs:
        return None
    biggest = max((params or {}).values(), default=0)
    if biggest < GPU_SCALE_PARAMS:
        return None
    rate = flops() * 0.5
    iters_wall = 0.0
    budget_wall = 0.0
    iters_per_budget: list[float] = []
    for r in plan.runs:
        train = r.config["train"]
        tokens_per_iter = train["batch_size"] * train["grad_accum"] * r.config["model"]["block_size"]
        n = (params or {}).get(r.step, biggest)
        s_per_iter = 6 * n * tokens_per_iter / rate
        budget = train["budget"]
        if budget.get("seconds"):
            budget_wall += budget["seconds"]
            iters_per_budget.append(budget["seconds"] / s_per_iter)
        elif budget.get("iters"):
            iters_wall += budget["iters"] * s_per_iter
        elif budget.get("tokens"):
            iters_wall += budget["tokens"] / tokens_per_iter * s_per_iter
    parts = [f"warning: no GPU on this box and study {plan.name} is GPU-scale "
             f"({biggest / 1e6:.0f}M parameters, {len(plan.runs)} runs)"]
    if iters_wall:
        parts.append(f"at this box's measured {rate / 1e9:.0f} GFLOP/s its iteration budgets "
                     f"would take about {_fmt_wall(iters_wall)} on one CPU worker")
    if budget_wall:
        parts.append(f"its time budgets ({_fmt_wall(budget_wall)} of wall time in all, at "
                     f"this box's measured {rate / 1e9:.0f} GFLOP/s) would train "
                     f"{_fmt_iters(min(iters_per_budget), max(iters_per_budget))} per run here")
    parts.append("run the workers on a GPU box, or scale it down "
                 "(e.g. --preset tiny --dataset kjv --time 60)")
    return "; ".join(parts)


def _fmt_iters(low: float, high: float) -> str:
    if high < 1:
        return "less than one iteration"
    return f"~{low:.0f} iterations" if round(low) == round(high) else f"~{low:.0f}-{high:.0f} iterations"


def _fmt_wall(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def describe_submit(result: SubmitResult, total_runs: int) -> list[str]:
    """What a submit did, as narration lines."""
    if not result.changed:
        return [f"nothing new: study {result.study} already has these {total_runs} runs"]
    n = len(result.new_runs)
    head = (f"study {result.study}: created with {n} run{'' if n == 1 else 's'}"
            if result.study_created else
            f"study {result.study}: {n} new run{'' if n == 1 else 's'}, "
            f"{result.unchanged_runs} unchanged")
    q = result.queued_attempts
    lines = [f"{head}; {q} attempt{'' if q == 1 else 's'} queued"]
    if result.changed_steps and not result.study_created:
        lines.append(
            f"changed since the last submit: {', '.join(result.changed_steps)} (new runs; the "
            "old runs keep their history"
            + (f", {result.cancelled_attempts} of their queued attempts cancelled"
               if result.cancelled_attempts else "") + ")")
    return lines


def plan_json(plan: StudyPlan) -> dict[str, Any]:
    """The plan as JSON: study, spec hash and one entry per run with its resolved config."""
    return {"study": plan.name, "spec_hash": plan.spec_hash, "overrides": plan.overrides,
            "runs": [{"step": r.step, "seed": r.seed, "parent": r.parent,
                      "config_hash": r.config_hash, "budget_seconds": r.budget_seconds,
                      "config": r.config} for r in plan.runs]}


def ensure_database(url: str) -> None:
    """Create a SQLite database that does not exist yet; leave every other one alone."""
    from orchestrator.queue import migrate
    from orchestrator.queue.db import parse_url, sqlite_path

    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and not sqlite_path(parsed).exists():
        migrate.upgrade(url)
        say(f"created {redact(url)}")


def ensure_database_ready(url: str) -> None:
    """`ensure_database`, then open it once so that a server database that is not at head
    fails now (with `recip db upgrade`), before the model checks spend their seconds."""
    from orchestrator.queue.repo import QueueRepo

    ensure_database(url)
    with QueueRepo.open(url):
        pass
