"""PNG plots of a Report: val-loss curves (mean and min-max band over seeds; tokens on the x
axis by default for time budgets), each comparison's interval coloured by its verdict
(confounded ones hatched), gate trajectories and the learned KV keep ratio. matplotlib
(Agg) is imported inside `write_plots`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.results import MetricSeries
from orchestrator.report.metrics import is_gate_stat, split_stat
from orchestrator.report.rules import KV_KEEP
from orchestrator.report.values import Report

Curve = tuple[list[float], list[float], list[float], list[float]]
"""(x, mean, low, high)."""

VERDICT_COLOURS = {"better": "#2a9d47", "worse": "#c0392b", "equivalent": "#2b6cb0",
                   "inconclusive": "#8c8c8c", "confounded": "#d69e2e"}


def seed_band(curves: Sequence[Sequence[tuple[int, float]]]) -> Curve:
    """Mean, min and max over seeds on the union of their x values; a seed contributes only
    inside its own x range (linear interpolation between its points)."""
    xs = sorted({x for c in curves for x, _ in c})
    mean, low, high, keep = [], [], [], []
    for x in xs:
        vals = [v for c in curves if (v := _interp(c, x)) is not None]
        if not vals:
            continue
        keep.append(float(x))
        mean.append(sum(vals) / len(vals))
        low.append(min(vals))
        high.append(max(vals))
    return keep, mean, low, high


def _interp(curve: Sequence[tuple[int, float]], x: int) -> float | None:
    pts = [(px, v) for px, v in curve if math.isfinite(v)]
    if not pts or x < pts[0][0] or x > pts[-1][0]:
        return None
    for (x0, v0), (x1, v1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return v0 if x1 == x0 else v0 + (v1 - v0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


def val_curves(report: Report, series: MetricSeries, name: str = "val_loss", *,
               tokens: bool = False) -> dict[str, Curve]:
    """step -> band over seeds; `tokens` puts tokens (iteration x the step's tokens per
    iteration) on the x axis."""
    out = {}
    per_iter = {s.step: s.tokens / s.iters for s in report.steps
                if s.tokens and s.iters}
    for step, used in report.used_attempts.items():
        scale = per_iter.get(step, 1.0) if tokens else 1.0
        curves = [[(int(it * scale), v) for it, v in series.get(aid, {}).get(name, [])]
                  for _, aid in used]
        curves = [c for c in curves if c]
        if curves:
            out[step] = seed_band(curves)
    return out


def gate_curves(report: Report, series: MetricSeries) -> dict[str, dict[str, Curve]]:
    """step -> gate stat key (averaged over layers per seed) -> band over seeds."""
    out: dict[str, dict[str, Curve]] = {}
    for step, used in report.used_attempts.items():
        per_key: dict[str, list[list[tuple[int, float]]]] = {}
        for _, aid in used:
            by_key: dict[str, dict[int, list[float]]] = {}
            for name, points in series.get(aid, {}).items():
                prefix, key, _ = split_stat(name)
                if prefix == KV_KEEP:
                    key = KV_KEEP
                elif prefix != "stats" or not is_gate_stat(key):
                    continue
                for it, v in points:
                    by_key.setdefault(key, {}).setdefault(it, []).append(v)
            for key, its in by_key.items():
                per_key.setdefault(key, []).append(
                    [(it, sum(vs) / len(vs)) for it, vs in sorted(its.items())])
        if per_key:
            out[step] = {k: seed_band(c) for k, c in sorted(per_key.items())}
    return out


def curve_ylim(curves: Sequence[Curve]) -> tuple[float, float]:
    """Y range of the loss plot: long runs skip the untrained start (the first 5 % of the
    iterations) so that the differences at the end stay visible; short runs show it all."""
    x_max = max((c[0][-1] for c in curves if c[0]), default=0.0)
    long_run = max((len(c[0]) for c in curves), default=0) > 8
    shown = [v for c in curves for x, v in zip(c[0], c[2], strict=True)
             if not long_run or x >= 0.05 * x_max]
    shown_high = [v for c in curves for x, v in zip(c[0], c[3], strict=True)
                  if not long_run or x >= 0.05 * x_max]
    if not shown:
        return 0.0, 1.0
    lo, hi = min(shown), max(shown_high)
    pad = 0.05 * (hi - lo) or 0.05
    return lo - pad, hi + pad


def write_plots(report: Report, series: MetricSeries, out_dir: Path,
                x_axis: str | None = None) -> list[Path]:
    """Write curves.png, deltas.png and gates.png (each only when it has data) into
    `out_dir`; return the paths written. `x_axis` of curves.png: "tokens" or "iteration";
    None = tokens for a time budget (where steps see different token counts), else
    iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    by_tokens = (x_axis or ("tokens" if report.time_budget else "iteration")) == "tokens"
    curves = val_curves(report, series, tokens=by_tokens)
    if curves:
        fig, ax = plt.subplots(figsize=(8, 5))
        for step, (x, mean, low, high) in curves.items():
            n = len(report.used_attempts.get(step, ()))
            (line,) = ax.plot(x, mean, label=f"{step} (n={n})", linewidth=1.5)
            if n > 1:
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("tokens" if by_tokens else "iteration")
        ax.set_ylabel("val loss")
        ax.set_title(f"{report.study}: validation loss (mean, band = min-max over seeds)")
        ax.set_ylim(*curve_ylim(list(curves.values())))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, plt, out_dir / "curves.png"))

    deltas = [c for c in report.comparisons if c.delta is not None]
    if deltas:
        fig, ax = plt.subplots(figsize=(8, max(2.5, 0.45 * len(deltas) + 1)))
        ys = list(range(len(deltas)))[::-1]
        for y, c in zip(ys, deltas, strict=True):
            shade = VERDICT_COLOURS.get(c.verdict, "#8c8c8c")
            d = c.delta or 0.0
            lo, hi = c.ci if c.ci is not None else (d, d)
            ax.barh(y, hi - lo, left=lo, height=0.5, color=shade, alpha=0.85,
                    hatch="//" if c.verdict == "confounded" else None,
                    edgecolor="black" if c.verdict == "confounded" else shade)
            ax.plot([d, d], [y - 0.3, y + 0.3], color="black", linewidth=1.5)
            if c.margin > 0:
                ax.plot([-c.margin, c.margin], [y, y], color="black", alpha=0.2,
                        linewidth=8, solid_capstyle="butt")
        ax.set_yticks(ys, [f"{c.label} [{c.verdict}]" for c in deltas], fontsize=8)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel(f"delta {report.metric}: interval (Holm-adjusted level), tick = delta, "
                      f"grey = ±margin; hatched = confounded", fontsize=8)
        ax.set_title(f"{report.study}: deltas at equal budget")
        ax.grid(axis="x", alpha=0.3)
        written.append(_save(fig, plt, out_dir / "deltas.png"))

    gates = gate_curves(report, series)
    if gates:
        n = len(gates)
        cols = min(3, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
        all_keys = sorted({k for keys in gates.values() for k in keys})
        palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        colour = {k: palette[i % len(palette)] for i, k in enumerate(all_keys)}
        for ax, (step, step_keys) in zip(axes.flat, gates.items(), strict=False):
            for key, (x, mean, low, high) in step_keys.items():
                ax.plot(x, mean, label=key, linewidth=1.2, color=colour[key])
                ax.fill_between(x, low, high, color=colour[key], alpha=0.2, linewidth=0)
            ax.set_title(step, fontsize=9)
            ax.set_xlabel("iteration", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle(f"{report.study}: gates, mixing scalars, KV keep ratio (mean over layers)")
        written.append(_save(fig, plt, out_dir / "gates.png"))
    return written


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
