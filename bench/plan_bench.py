"""Full-scale `recip queue submit SPEC --plan` of every shipped spec, as a user types it.

    python -m bench.plan_bench [--specs ablations/*.yaml] [--repeats 1] [--target 10] [--out PATH]

Each spec runs in a fresh process (`python -m orchestrator.cli.app queue submit SPEC --plan`),
so the figure includes interpreter start, the torch import, resolution and the model check of
every step (meta build at full size, the CPU probe of each distinct model). Target (issue 13):
under `--target` seconds per spec on 2 cores. Prints a table with the load average; writes
bench/results/plan.json; exits 1 when a spec fails to plan or misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def time_plan(spec: Path) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the process and its probe children, exit code, last
    stderr line) of one full-scale `--plan`. The CPU time is what a shared, loaded box cannot
    inflate: on an idle 2-core box the wall time is about CPU / 2 plus the serial start."""
    argv = [sys.executable, "-m", "orchestrator.cli.app", "queue", "submit", str(spec), "--plan"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return seconds, cpu, proc.returncode, tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plan_bench", description=__doc__.splitlines()[0])
    p.add_argument("--specs", nargs="*", type=Path,
                   default=sorted((ROOT / "ablations").glob("*.yaml")))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--target", type=float, default=10.0, help="seconds per spec")
    p.add_argument("--out", type=Path, default=RESULTS / "plan.json")
    ns = p.parse_args(argv)
    rows = []
    print(f"{'spec':<22} {'wall s':>7} {'cpu s':>6} {'exit':>4}  load  last line", flush=True)
    for spec in ns.specs:
        runs = [time_plan(spec) for _ in range(ns.repeats)]
        seconds = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rc = max(r[2] for r in runs)
        load = os.getloadavg()[0]
        rows.append({"spec": spec.name, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
                     "exit": rc, "load_avg": load, "last_line": runs[-1][3]})
        print(f"{spec.stem:<22} {seconds:7.1f} {cpu:6.1f} {rc:>4}  {load:4.1f}  {runs[-1][3][:60]}",
              flush=True)
    total = sum(r["seconds"] for r in rows)
    worst = max((r["seconds"] for r in rows), default=0.0)
    print(f"{'total':<22} {total:8.1f}        worst {worst:.1f} s, target {ns.target:.0f} s per spec, "
          f"{os.cpu_count()} CPUs")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"rows": rows, "total_s": round(total, 2), "target_s": ns.target,
                                  "cpus": os.cpu_count()}, indent=2) + "\n")
    bad = [r["spec"] for r in rows if r["exit"] != 0 or r["seconds"] > ns.target]
    if bad:
        print(f"failed or over the target: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
