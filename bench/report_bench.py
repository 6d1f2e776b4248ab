"""`recip report` benchmark: a 1,000-run study with 1,000,000 metric rows.

    python -m bench.report_bench [--runs 1000] [--metrics 1000000] [--repeats 5] [--pg-url URL]

The database is built like bench/status_bench.py's (a real spec of 100 steps x 10 seeds,
submitted, claimed, started, heartbeated and finished through `QueueRepo`), but the metric
rows carry the names a trainer writes: train records (loss, lr, tokens_per_s, ...), eval
records (val_loss, train_loss, ...), and per-layer `stats/...` and `grad/...` series (the
ones the report reads for its gate-collapse and no-gradient flags and its plots). Times,
median of `--repeats`: `study_results`, `load_series` (the metric reads), `analyze`, the
table render, and the whole `recip report STUDY` command in-process (table and json).
`--plot` times are reported once, for scale (matplotlib's import dominates them).
Target (design.md §7, issue 8): `recip report` under 1 s. Writes bench/results/report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.status_bench import (
    STUDY,
    insert_metrics,
    pg_db,
    populate,
    sqlite_db,
    timed,
    write_results,
)
from orchestrator.cli.app import run as cli
from orchestrator.queue.db import make_engine, redact_url
from orchestrator.queue.repo import QueueRepo

RESULTS = Path(__file__).parent / "results" / "report.json"
TARGET_MS = 1000.0
TRAIN_NAMES = ("loss", "lr", "tokens_per_s", "grad_norm", "coupling_scale", "spam/spikes",
               "spam/resets", "spam/clipped", "dt_ms")
EVAL_NAMES = ("val_loss", "train_loss", "val_ppl", "best_val_loss")
STATS_NAMES = tuple(f"stats/{k}.{layer}" for k in ("gate_mean", "alpha") for layer in range(4)) + \
    tuple(f"grad/{k}.{layer}" for k in ("alpha",) for layer in range(4))
EVAL_EVERY, STATS_EVERY = 10, 10   # one eval and one stats record per 10 train records


def fill_metrics(url: str, metrics: int, seed: int = 0) -> dict[str, Any]:
    """Bulk-insert `metrics` rows over the started attempts, in trainer-like proportions."""
    rng = random.Random(seed)
    engine = make_engine(url)
    t = time.perf_counter()
    try:
        with engine.connect() as conn:
            started = [r[0] for r in conn.execute(sa.text(
                "SELECT id FROM attempts WHERE started_at IS NOT NULL ORDER BY id"))]
        per_record = len(TRAIN_NAMES) + (len(EVAL_NAMES) + len(STATS_NAMES)) / EVAL_EVERY
        records = max(1, int(metrics / (len(started) * per_record)))

        def rows() -> Iterator[dict[str, Any]]:
            for a in started:
                for r in range(records):
                    names = TRAIN_NAMES
                    if r % EVAL_EVERY == 0:
                        names = names + EVAL_NAMES + STATS_NAMES
                    for n in names:
                        yield {"a": a, "n": n, "s": 10 * (r + 1), "v": rng.random()}

        stored = insert_metrics(engine, rows(), limit=metrics)
        with engine.connect() as conn:
            read = conn.execute(sa.text(
                "SELECT count(*) FROM metrics m JOIN attempts a ON a.id = m.attempt_id "
                "WHERE a.state = 'succeeded' AND (m.name = 'val_loss' OR m.name LIKE 'stats/%' "
                "OR m.name LIKE 'grad/%')")).scalar_one()
    finally:
        engine.dispose()
    return {"metric_rows": int(stored), "series_rows_in_db": int(read), "records_per_attempt": records,
            "build_metrics_s": round(time.perf_counter() - t, 2)}


def measure(url: str, repeats: int, plot_dir: Path | None) -> dict[str, Any]:
    from orchestrator.cli.report_cmd import Format, load_series, render_text
    from orchestrator.report.analysis import analyze

    res: dict[str, Any] = {}
    with QueueRepo.open(url) as repo:
        res["study_results_ms"], results = timed(lambda: repo.study_results(STUDY), repeats)
        res["load_series_ms"], (series, summaries) = timed(lambda: load_series(repo, results),
                                                           repeats)
    res["series_points_read"] = sum(len(p) for names in series.values() for p in names.values())
    res["series_summaries_read"] = sum(len(names) for names in summaries.values())
    res["analyze_ms"], rep = timed(lambda: analyze(results, series, summaries=summaries),
                                   repeats)
    res["render_ms"], text = timed(lambda: render_text(rep, Format.table, [], None), repeats)
    res["output_lines"] = text.count("\n")

    def command(*extra: str) -> Callable[[], int]:
        def go() -> int:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return cli(["report", STUDY, "--db", url, *extra])
        return go

    res["recip_report_ms"], rc = timed(command(), repeats)
    assert rc == 0, "recip report failed"
    res["recip_report_json_ms"], rc = timed(command("--format", "json"), repeats)
    assert rc == 0, "recip report --format json failed"
    if plot_dir is not None:
        res["recip_report_plot_ms"], rc = timed(command("--plot", str(plot_dir)), 1)
        assert rc == 0, "recip report --plot failed"
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--metrics", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="100,000 metric rows, 3 repeats")
    ap.add_argument("--no-plot", action="store_true", help="skip the one --plot timing")
    ap.add_argument("--pg-url", default=os.environ.get("RECIP_TEST_PG_URL"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.metrics, args.repeats = min(args.metrics, 100_000), min(args.repeats, 3)
    logging.getLogger("orchestrator").setLevel(logging.ERROR)

    backends: list[tuple[str, Callable[[], contextlib.AbstractContextManager[str]]]] = [
        ("sqlite", sqlite_db)]
    if args.pg_url:
        backends.append(("postgres", lambda: pg_db(args.pg_url)))
    results = []
    for backend, make in backends:
        with make() as url, tempfile.TemporaryDirectory(prefix="recip-report-plots-") as plots:
            print(f"{backend}: building {args.runs} runs, {args.metrics:,} metric rows in "
                  f"{redact_url(url)} ...", file=sys.stderr)
            built = populate(url, args.runs, 0)
            built.update(fill_metrics(url, args.metrics))
            measured = measure(url, args.repeats, None if args.no_plot else Path(plots))
            results.append({"backend": backend, **built, **measured})

    load = os.getloadavg()
    print(f"{'backend':9} {'runs':>5} {'metrics':>9} {'read':>7} {'results':>8} {'series':>7} "
          f"{'analyze':>8} {'render':>7} {'recip report':>12} {'--format json':>13} {'--plot':>7}"
          "  (ms, median)")
    for r in results:
        plot = f"{r['recip_report_plot_ms']:>7.0f}" if "recip_report_plot_ms" in r else f"{'-':>7}"
        print(f"{r['backend']:9} {r['runs']:>5} {r['metric_rows']:>9,} {r['series_points_read']:>7,} "
              f"{r['study_results_ms']:>8.1f} {r['load_series_ms']:>7.1f} {r['analyze_ms']:>8.1f} "
              f"{r['render_ms']:>7.1f} {r['recip_report_ms']:>12.1f} {r['recip_report_json_ms']:>13.1f} "
              f"{plot}")
    ok = all(r["recip_report_ms"] < TARGET_MS for r in results)
    print(f"target recip report < {TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'} "
          f"(load average {load[0]:.1f} on {os.cpu_count()} CPUs)")
    write_results(args.out, {"bench": "report", "target_ms": TARGET_MS, "met": ok,
                             "repeats": args.repeats}, results, load_avg=load[0])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
