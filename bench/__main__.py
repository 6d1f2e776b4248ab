"""`python -m bench [all|cli|train|mechanisms|queue|status|report|overhead|memory|plan|gpu ...] [--quick]`

One entry point for the benchmarks of issue 8. Each benchmark runs in its own process (its
own torch state; memory_bench forks and needs a parent that did no tensor work), prints its
table and writes bench/results/<name>.json. This wrapper adds what a table needs to be read
on a shared machine: the exact command, the date, the load average before and after, and
the exit code, appended to bench/results/log.jsonl. Extra arguments after `--` go to every
selected benchmark, e.g. `python -m bench queue -- --pg-url postgresql+psycopg://...`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# name -> (module, arguments for a full run, arguments for --quick)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "cli": ("bench.cli_bench", [], ["--quick"]),
    "train": ("bench.train_bench", ["--presets", "tiny,small"], ["--quick"]),
    "mechanisms": ("bench.mechanisms_bench", [], ["--quick"]),
    "memory": ("bench.memory_bench", [], ["--quick"]),
    "queue": ("bench.queue_bench", [], ["--quick"]),
    "status": ("bench.status_bench", [], ["--metrics", "100000", "--repeats", "3"]),
    "report": ("bench.report_bench", [], ["--quick"]),
    "overhead": ("bench.attempt_overhead", [], ["--rounds", "1"]),
    "plan": ("bench.plan_bench", [], ["--specs", "ablations/smoke.yaml", "ablations/rmlp_prune.yaml"]),
    "gpu": ("bench.gpu_bench", [], ["--cpu-smoke"]),
}


def command(name: str, quick: bool, extra: list[str]) -> list[str]:
    """The argv that runs one benchmark."""
    module, full, fast = BENCHES[name]
    return [sys.executable, "-m", module, *(fast if quick else full), *extra]


def run(name: str, quick: bool, extra: list[str]) -> int:
    argv = command(name, quick, extra)
    shown = "python " + shlex.join(argv[1:])
    load0 = os.getloadavg()
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"== {name}: {shown}  (load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, {start})",
          flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(argv)
    load1 = os.getloadavg()
    seconds = time.perf_counter() - t0
    print(f"== {name}: exit {rc} in {seconds:.0f} s (load average now {load1[0]:.2f})", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "log.jsonl", "a") as f:
        f.write(json.dumps({"bench": name, "command": shown, "started_at": start, "seconds": round(seconds, 1),
                            "load_avg_before": load0, "load_avg_after": load1, "exit": rc,
                            "cpus": os.cpu_count()}) + "\n")
    return rc


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=["all"], metavar="NAME",
                   help=f"all (default) or some of: {', '.join(BENCHES)}")
    p.add_argument("--quick", action="store_true", help="smoke-sized runs (noisier, faster)")
    ns = p.parse_args(args)
    names = list(BENCHES) if "all" in ns.names else ns.names
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; pick from all, {', '.join(BENCHES)}")
    failed = [n for n in names if run(n, ns.quick, extra) != 0]
    if failed:
        print(f"failed or missed a target: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
