"""Per-attempt overhead: from the claim to the first training step, model build excluded.

Runs the real WorkerLoop on a real SQLite file with the real `python -m workers.run_attempt`
(a tiny CPU model, data prepared beforehand, the default eval settings: 20 eval batches per
split, eval at iteration 0; the environment a CPU worker slot of 1 core gets: 1 torch
thread, OMP_WAIT_POLICY=PASSIVE), timing each attempt:

    claim        the claim transaction
    spawn        artifact dir, config.json, fork/exec of the trainer (or hand-off to a spare)
    to_step      trainer start -> its first training step begins (imports, data, model, W&B
                 init, eval 0)
    torch_import a fresh `python -c "import torch"`, for scale (most of to_step on a CPU box)
    model_build  building the same model in this process (median of 3), subtracted
    overhead     claim -> first step, minus model_build          (target < 3 s)

Scenarios, interleaved round by round (the machine is shared: compare within a run only):

    cold         a fresh interpreter per attempt, W&B disabled     (the runner before issue 8)
    warm         a spare interpreter (workers/spare.py) that preloaded torch, W&B disabled
    cold+wandb   fresh interpreter, W&B offline                    (the spec default)
    warm+wandb   spare that also preloaded wandb and started its service, W&B offline
    warm-eval0   warm, train.eval_at_start false

A warm attempt is claimed once its spare is ready: attempts last minutes, so a Ray worker's
spare is always ready by its next claim; only the first attempt of a worker starts cold.

    python -m bench.attempt_overhead [--rounds 3] [--scenarios cold,warm,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TARGET_S = 3.0
SCENARIOS: dict[str, dict[str, Any]] = {
    "cold": {"warm": False, "wandb": "disabled", "eval_at_start": True},
    "warm": {"warm": True, "wandb": "disabled", "eval_at_start": True},
    "cold+wandb": {"warm": False, "wandb": "offline", "eval_at_start": True},
    "warm+wandb": {"warm": True, "wandb": "offline", "eval_at_start": True},
    "warm-eval0": {"warm": True, "wandb": "disabled", "eval_at_start": False},
}


@dataclass
class Timing:
    scenario: str
    claim_s: float
    spawn_s: float
    to_step_s: float
    total_s: float


def _step_key(name: str) -> str:
    return "S_" + "".join(c if c.isalnum() else "_" for c in name)


def _plan(corpus: Path, scenarios: list[str], rounds: int) -> Any:
    from orchestrator.cli.queue_cmd import build_plan
    from orchestrator.core.plan import StudyPlan

    spec = corpus.parent / "bench.yaml"
    steps = "\n".join(f"  {_step_key(n)}: {{description: {n}}}" for n in scenarios)
    spec.write_text(f"""study: bench
defaults:
  model: {{n_layer: 2, n_head: 2, n_embd: 64, block_size: 32}}
  data: {{dataset: 'text:{corpus}', tokenizer: byte}}
  train: {{budget: {{iters: 3}}, batch_size: 4, warmup: 1, eval_every: 1000, log_every: 1}}
  optimizer: {{name: adamw}}
  seeds: {list(range(1, rounds + 1))}
steps:
{steps}
""")
    plan = build_plan(spec)
    order = {_step_key(n): i for i, n in enumerate(scenarios)}
    by_step = {_step_key(n): SCENARIOS[n] for n in scenarios}
    runs = []
    for r in sorted(plan.runs, key=lambda r: (r.seed, order[r.step])):  # interleaved rounds
        # train.eval_at_start is a TrainConfig knob the spec does not expose: set it here
        s = by_step[r.step]
        config = {**r.config, "wandb": {**r.config["wandb"], "mode": s["wandb"]},
                  "train": {**r.config["train"], "eval_at_start": s["eval_at_start"]}}
        runs.append(replace(r, config=config, config_hash=f"{r.config_hash[:48]}-{r.step}"[-64:]))
    return StudyPlan(name=plan.name, description="overhead", spec_hash=plan.spec_hash,
                     spec=plan.spec, runs=tuple(runs))


def _model_build_s(config: dict[str, Any]) -> float:
    from models.gpt2 import GPT
    from workers.train.config import TrainConfig

    gcfg = TrainConfig.from_dict(config).gpt_config()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        GPT(gcfg)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(rounds: int, scenarios: list[str], work: Path, threads: int = 1) -> dict[str, Any]:
    from orchestrator.queue import migrate
    from orchestrator.queue.repo import QueueRepo
    from workers.data.prepare import prepare
    from workers.loop import WorkerLoop, WorkerSettings
    from workers.runner import SubprocessRunner

    os.environ["RECIP_DATA_DIR"] = str(work / "data")
    os.environ["WANDB_SILENT"] = "true"
    # what the pool gives a CPU slot of `threads` cores (workers/pool.py: slot_env)
    os.environ.update({"RECIP_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                       "OMP_WAIT_POLICY": "PASSIVE"})
    corpus = work / "corpus.txt"
    corpus.write_text("Per-attempt overhead of the recip worker loop, measured. " * 4000)
    plan = _plan(corpus, scenarios, rounds)
    by_step = {_step_key(n): n for n in scenarios}
    queue = [by_step[r.step] for r in plan.runs]
    prepare(f"text:{corpus}", "byte")
    url = f"sqlite:///{work / 'bench.db'}"
    migrate.upgrade(url)
    repo = QueueRepo.open(url)
    repo.submit(plan, datetime.now(UTC))

    cold = SubprocessRunner()
    warm = {w: SubprocessRunner(warm=True, spare_delay_s=0.0) for w in ("disabled", "offline")}
    for mode, runner in warm.items():
        if any(SCENARIOS[n]["warm"] and SCENARIOS[n]["wandb"] == mode for n in scenarios):
            runner._start_spare(wandb=mode != "disabled")
    marks: dict[str, float] = {}
    timings: list[Timing] = []
    done = threading.Event()

    def runner_for(name: str) -> SubprocessRunner:
        s = SCENARIOS[name]
        return warm[s["wandb"]] if s["warm"] else cold

    class TimedRepo:
        def __getattr__(self, name: str) -> Any:
            return getattr(repo, name)

        def claim(self, *a: Any, **kw: Any) -> Any:
            if queue:
                runner = runner_for(queue[0])
                if runner.warm and not runner.spare_ready(timeout=120):
                    raise SystemExit(f"{queue[0]}: the spare did not get ready in 120 s")
            marks["claim0"] = time.time()
            out = repo.claim(*a, **kw)
            marks["claim1"] = time.time()
            return out

    class TimedRunner:
        def spawn(self, outdir: Path, *, resume_from: Path | None) -> Any:
            name = queue.pop(0)
            proc = runner_for(name).spawn(outdir, resume_from=resume_from)
            marks["spawned"] = time.time()
            done.clear()
            threading.Thread(target=watch, args=(name, outdir / "metrics.jsonl"), daemon=True).start()
            return proc

    def watch(name: str, path: Path) -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                line = path.read_text().splitlines()[0]
            except (FileNotFoundError, IndexError):
                time.sleep(0.002)
                continue
            seen = time.time()
            record = json.loads(line)
            first = seen - float(record.get("train_s") or 0.0)
            timings.append(Timing(scenario=name, claim_s=marks["claim1"] - marks["claim0"],
                                  spawn_s=marks["spawned"] - marks["claim1"],
                                  to_step_s=first - marks["spawned"], total_s=first - marks["claim0"]))
            return

    settings = WorkerSettings(worker_id="bench:cpu0", runs_dir=work / "runs", lease_s=60.0,
                              poll_s=0.1, max_attempts=len(plan.runs))
    try:
        report = WorkerLoop(TimedRepo(), settings, runner=TimedRunner()).run()  # type: ignore[arg-type]
    finally:
        repo.close()
        for runner in warm.values():
            runner.close()
    bad = [o for o in report.outcomes if o.state != "succeeded"]
    if bad:
        raise SystemExit(f"attempts failed: {bad}")
    build = _model_build_s(plan.runs[0].config)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_import = time.perf_counter() - t
    rows = [{"scenario": t.scenario, "claim_s": t.claim_s, "spawn_s": t.spawn_s, "to_step_s": t.to_step_s,
             "model_build_s": build, "overhead_s": t.total_s - build} for t in timings]
    medians = {n: statistics.median(r["overhead_s"] for r in rows if r["scenario"] == n)
               for n in scenarios if any(r["scenario"] == n for r in rows)}
    default = "warm" if "warm" in medians else next(iter(medians))
    return {"attempts": rows, "median_overhead_s_by_scenario": medians,
            "median_overhead_s": medians[default], "headline_scenario": default,
            "torch_import_s": torch_import, "target_s": TARGET_S, "threads": threads,
            "meets_target": medians[default] < TARGET_S, "host": platform.node(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg": os.getloadavg()[0], "measured_at": datetime.now(UTC).isoformat()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="attempts per scenario")
    ap.add_argument("--attempts", type=int, default=None, help="alias of --rounds")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per attempt, as the pool gives a CPU slot of that many cores")
    ap.add_argument("--out", type=Path, default=Path("bench/results/overhead.json"))
    args = ap.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"--scenarios: unknown {', '.join(unknown)}; pick from {', '.join(SCENARIOS)}")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="recip-bench-") as tmp:
        data = measure(args.attempts or args.rounds, scenarios, Path(tmp), args.threads)
    data["load_avg_start"] = load0
    print(f"{'scenario':12} {'claim':>8} {'spawn':>8} {'to_step':>8} {'model':>8} {'overhead':>9}")
    for r in data["attempts"]:
        print(f"{r['scenario']:12} {r['claim_s'] * 1e3:>6.1f}ms {r['spawn_s'] * 1e3:>6.1f}ms "
              f"{r['to_step_s']:>7.2f}s {r['model_build_s'] * 1e3:>6.1f}ms {r['overhead_s']:>8.2f}s")
    print("median overhead: " + ", ".join(f"{n} {v:.2f}s" for n, v in data["median_overhead_s_by_scenario"].items()))
    print(f"(a fresh `python -c 'import torch'` takes {data['torch_import_s']:.2f}s here now)")
    verdict = "meets" if data["meets_target"] else "MISSES"
    print(f"{data['headline_scenario']}: median overhead {data['median_overhead_s']:.2f}s ({verdict} the "
          f"< {TARGET_S:.0f}s target; load average {load0:.1f} -> {data['load_avg']:.1f} on {data['cpus']} CPUs)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
