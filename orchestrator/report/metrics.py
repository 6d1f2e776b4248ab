"""Reading numbers out of a run: result.json values, metric names, and each run's val-loss
curve on a token (or FLOP) axis. Pure functions; no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.core.results import AttemptResult, MetricSeries, MetricSummaries, summarise

HIGHER_IS_BETTER = frozenset({"tokens_per_s"})
GATE_WORDS = ("gate", "w_rec", "w_std", "alpha", "attn_scale")
CURVE = "val_loss"
"""The metric series read at equal tokens / equal FLOPs."""


def metric_value(result: Mapping[str, Any], name: str) -> float | None:
    """A finite number from a result dict: a key, a dotted path (`params.total`), or a
    perplexity derived from its loss (`best_val_ppl` = exp(best_val_loss))."""
    direct = result.get(name)
    if type(direct) is float or type(direct) is int:   # the common case, fast
        return float(direct) if math.isfinite(direct) else None
    if name.endswith("_ppl") and name not in result:
        loss = metric_value(result, name[: -len("_ppl")] + "_loss")
        return math.exp(loss) if loss is not None and loss < 700 else None
    node: Any = result
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    value = float(node)
    return value if math.isfinite(value) else None


def lookup(d: Mapping[str, Any], dotted: str) -> Any:
    """`train.budget` of a nested mapping; None where a part is missing."""
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def lower_is_better(metric: str) -> bool:
    return metric.split(".")[-1] not in HIGHER_IS_BETTER


def is_loss(metric: str) -> bool:
    """A loss-like metric whose equal-token reading is the val-loss curve."""
    return metric.endswith(("_loss", "_ppl")) or metric == CURVE


def split_stat(name: str) -> tuple[str, str, str | None]:
    """`stats/attn.w_rec_mean/L3` -> ("stats", "attn.w_rec_mean", "L3")."""
    prefix, _, rest = name.partition("/")
    key, sep, layer = rest.rpartition("/")
    if not sep or not layer.startswith("L"):
        return prefix, rest, None
    return prefix, key, layer


SUMMARISED = ("stats/", "grad/")
"""Series families the flags read only as SeriesSummary (gate collapse, no gradient)."""


def summaries_of(series: MetricSeries) -> MetricSummaries:
    """The SeriesSummary of every stats/... and grad/... series in `series`."""
    out: MetricSummaries = {}
    for aid, names in series.items():
        got = {n: s for n, pts in names.items() if n.startswith(SUMMARISED)
               and (s := summarise(pts)) is not None}
        out[aid] = got
    return out


def is_gate_stat(key: str) -> bool:
    stat = key.split(".", 1)[-1]
    return (any(w in stat for w in GATE_WORDS) and "coupling" not in stat
            and not stat.endswith(("_std", "_min", "_max")))


def tokens_per_iter(a: AttemptResult) -> float | None:
    """Tokens one optimiser step consumes: result.json `effective_batch_tokens`, else
    `tokens / iters`, else batch_size x grad_accum x block_size from the config.

    The trainer stores metric rows per iteration, not per token, so an eval's token count is
    its iteration times this (exact: every step consumes the same batch)."""
    v = metric_value(a.result, "effective_batch_tokens")
    if v:
        return v
    tokens, iters = metric_value(a.result, "tokens"), metric_value(a.result, "iters")
    if tokens and iters:
        return tokens / iters
    t = a.config.get("train") or {}
    m = a.config.get("model") or {}
    try:
        return float(int(t["batch_size"]) * int(t.get("grad_accum", 1)) * int(m["block_size"]))
    except (KeyError, TypeError, ValueError):
        return None


def token_curve(a: AttemptResult, points: Sequence[tuple[int, float]]) -> list[tuple[float, float]]:
    """(tokens, value) of an iteration series, finite values only."""
    per = tokens_per_iter(a)
    if per is None:
        return []
    return [(it * per, v) for it, v in points if math.isfinite(v)]


def interp(curve: Sequence[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of a curve sorted by x; None outside its range."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, v0), (x1, v1) in zip(curve, curve[1:], strict=False):
        if x0 <= x <= x1:
            return v0 if x1 == x0 else v0 + (v1 - v0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def best_until(curve: Sequence[tuple[float, float]], x: float) -> float | None:
    """The lowest value of the curve up to x (the curve read at x included)."""
    at = interp(curve, x)
    if at is None:
        return None
    return min([v for px, v in curve if px <= x] + [at])
