"""Per-attempt overhead: from the claim to the first training step, model build excluded.

Runs the real WorkerLoop on a real SQLite file with the real `python -m workers.run_attempt`
(a tiny CPU model, data prepared beforehand), timing each attempt:

    claim        the claim transaction
    spawn        artifact dir, config.json, fork/exec of the trainer
    to_step      trainer start -> its first training step begins (imports, data, model, eval 0)
    torch_import a fresh `python -c "import torch"`, for scale (most of to_step on a CPU box)
    model_build  building the same model in this process (median of 3), subtracted
    overhead     claim -> first step, minus model_build          (target < 3 s)

    python -m bench.attempt_overhead [--attempts 3] [--out bench/results/overhead.json]
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TARGET_S = 3.0


@dataclass
class Timing:
    claim_s: float
    spawn_s: float
    to_step_s: float
    total_s: float


def _config(seed: int, corpus: Path) -> dict[str, Any]:
    from orchestrator.cli.queue_cmd import build_plan

    spec = corpus.parent / "bench.yaml"
    spec.write_text(f"""study: bench
defaults:
  model: {{n_layer: 2, n_head: 2, n_embd: 64, block_size: 32}}
  data: {{dataset: 'text:{corpus}', tokenizer: byte}}
  train: {{budget: {{iters: 3}}, batch_size: 4, warmup: 1, eval_every: 1000, eval_batches: 1,
          log_every: 1}}
  optimizer: {{name: adamw}}
  wandb: {{mode: disabled}}
  seeds: [{seed}]
steps:
  V0: {{description: baseline}}
""")
    plan = build_plan(spec)
    return {"plan": plan}


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


def measure(attempts: int, work: Path) -> dict[str, Any]:
    from orchestrator.core.plan import StudyPlan
    from orchestrator.queue import migrate
    from orchestrator.queue.repo import QueueRepo
    from workers.data.prepare import prepare
    from workers.loop import WorkerLoop, WorkerSettings
    from workers.runner import SubprocessRunner

    os.environ["RECIP_DATA_DIR"] = str(work / "data")
    corpus = work / "corpus.txt"
    corpus.write_text("Per-attempt overhead of the recip worker loop, measured. " * 4000)
    plans = [_config(seed, corpus)["plan"] for seed in range(1, attempts + 1)]
    plan = StudyPlan(name="bench", description="overhead", spec_hash=plans[0].spec_hash,
                     spec=plans[0].spec, runs=tuple(p.runs[0] for p in plans))
    prepare(f"text:{corpus}", "byte")
    url = f"sqlite:///{work / 'bench.db'}"
    migrate.upgrade(url)
    repo = QueueRepo.open(url)
    repo.submit(plan, datetime.now(UTC))

    marks: dict[str, float] = {}
    timings: list[Timing] = []

    class TimedRepo:
        def __getattr__(self, name: str) -> Any:
            return getattr(repo, name)

        def claim(self, *a: Any, **kw: Any) -> Any:
            marks["claim0"] = time.time()
            out = repo.claim(*a, **kw)
            marks["claim1"] = time.time()
            return out

    class TimedRunner(SubprocessRunner):
        def spawn(self, outdir: Path, *, resume_from: Path | None) -> Any:
            proc = super().spawn(outdir, resume_from=resume_from)
            marks["spawned"] = time.time()
            threading.Thread(target=watch, args=(outdir / "metrics.jsonl",), daemon=True).start()
            return proc

    def watch(path: Path) -> None:
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
            timings.append(Timing(
                claim_s=marks["claim1"] - marks["claim0"],
                spawn_s=marks["spawned"] - marks["claim1"],
                to_step_s=first - marks["spawned"],
                total_s=first - marks["claim0"]))
            return

    settings = WorkerSettings(worker_id="bench:cpu0", runs_dir=work / "runs", lease_s=30.0,
                              poll_s=0.1, max_attempts=attempts)
    report = WorkerLoop(TimedRepo(), settings, runner=TimedRunner()).run()  # type: ignore[arg-type]
    repo.close()
    bad = [o for o in report.outcomes if o.state != "succeeded"]
    if bad:
        raise SystemExit(f"attempts failed: {bad}")
    build = _model_build_s(plans[0].runs[0].config)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_import = time.perf_counter() - t
    rows = [{"claim_s": t.claim_s, "spawn_s": t.spawn_s, "to_step_s": t.to_step_s,
             "model_build_s": build, "overhead_s": t.total_s - build} for t in timings]
    med = statistics.median(r["overhead_s"] for r in rows)
    return {"attempts": rows, "median_overhead_s": med, "torch_import_s": torch_import, "target_s": TARGET_S,
            "meets_target": med < TARGET_S, "host": platform.node(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg": os.getloadavg()[0], "measured_at": datetime.now(UTC).isoformat()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/overhead.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="recip-bench-") as tmp:
        data = measure(args.attempts, Path(tmp))
    print(f"{'attempt':>7} {'claim':>8} {'spawn':>8} {'to_step':>8} {'model':>8} {'overhead':>9}")
    for i, r in enumerate(data["attempts"], 1):
        print(f"{i:>7} {r['claim_s'] * 1e3:>6.1f}ms {r['spawn_s'] * 1e3:>6.1f}ms "
              f"{r['to_step_s']:>7.2f}s {r['model_build_s'] * 1e3:>6.1f}ms "
              f"{r['overhead_s']:>8.2f}s")
    print(f"(a fresh `python -c 'import torch'` takes {data['torch_import_s']:.2f}s here now)")
    verdict = "meets" if data["meets_target"] else "MISSES"
    print(f"median overhead {data['median_overhead_s']:.2f}s ({verdict} the < {TARGET_S:.0f}s "
          f"target; load average {data['load_avg']:.1f} on {data['cpus']} CPUs)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
