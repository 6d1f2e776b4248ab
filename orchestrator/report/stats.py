"""The statistics behind every verdict of `recip report`: pure functions of numbers, on
`scipy.stats` (no hand-written quantiles).

`compare(a, b)` takes two {seed: metric value} maps and tests the delta mean(a) - mean(b):

- **paired t** on the seeds both sides share when there are at least two of them (a seed
  gives both steps the same initialisation stream and batches, so the per-seed difference
  removes that shared component); seeds only one side has are left out of a paired test;
- otherwise **Welch's t** with Welch-Satterthwaite degrees of freedom.

The distribution functions are scipy's (`scipy.special.stdtr`/`stdtrit`/`nctdtr`, the
ufuncs behind `scipy.stats.t` and `scipy.stats.nct`, called directly because the simulation
tests call `compare` tens of thousands of times).

Verdicts (the contract other code and outside checks read):

- `better` / `worse`: the two-sided 1 - alpha interval of the delta excludes 0; the direction
  follows `lower_is_better`;
- `equivalent`: `margin > 0` and a TOST (two one-sided t tests at `alpha`) puts the delta
  inside +-margin, i.e. the 1 - 2 alpha interval lies inside (-margin, +margin);
- `inconclusive`: neither; `seeds_needed` is then the seeds per side at which a comparison
  with the observed delta and spread reaches power 0.8 (noncentral t), or None when that
  cannot be estimated. One seed on a side is always `inconclusive`.

Study level: `holm` adjusts the p values of a family of comparisons (Holm-Bonferroni);
`holm_alpha` gives each comparison the level whose interval agrees with its adjusted p.
Sequential looks (seeds added after a look at the data): `sequential_alpha` spends alpha
with a Lan-DeMets O'Brien-Fleming-type function of the information fraction n_k / n_max and
tests each look at its increment (Bonferroni across looks, which is conservative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special as sp

Verdict = Literal["better", "worse", "equivalent", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("better", "worse", "equivalent", "inconclusive")
DECIDED: frozenset[str] = frozenset({"better", "worse", "equivalent"})
POWER = 0.8
MAX_SEEDS_ESTIMATE = 10_000
"""seeds_needed above this is reported as None (not estimable in any useful sense)."""
NC_SURE = 8.0
"""Power is taken as 1 once the noncentrality exceeds 3 x the critical value + this (even at
df 1 that leaves a miss chance below 1e-3; scipy's nct loses accuracy out there)."""


@dataclass(frozen=True)
class CompareResult:
    """One comparison of a against b: delta = mean(a) - mean(b) (paired: mean of a_s - b_s)."""

    verdict: Verdict
    delta: float | None
    ci: tuple[float, float] | None
    """Two-sided 1 - alpha interval of the delta (None when not estimable)."""
    p: float | None
    """Two-sided p of delta == 0."""
    df: float | None
    n_a: int
    n_b: int
    paired: bool
    method: str
    seeds_needed: int | None
    se: float | None = None
    sd: float | None = None
    """Paired: s.d. of the per-seed differences; Welch: None (see sd_a / sd_b)."""
    sd_a: float | None = None
    sd_b: float | None = None
    p_equiv: float | None = None
    """TOST p (max of the two one-sided p) when margin > 0."""
    alpha: float = 0.05
    margin: float = 0.0
    lower_is_better: bool = True

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED


def compare(a: Mapping[int, float], b: Mapping[int, float], *, lower_is_better: bool = True,
            margin: float = 0.0, alpha: float = 0.05,
            estimate_seeds: bool = True) -> CompareResult:
    """Test mean(a) - mean(b); see the module docstring for the method and the verdicts.
    `estimate_seeds=False` skips the power search (seeds_needed None): for a first pass
    that only needs p."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    xa = {int(s): float(v) for s, v in a.items() if math.isfinite(v)}
    xb = {int(s): float(v) for s, v in b.items() if math.isfinite(v)}
    shared = sorted(set(xa) & set(xb))
    if len(shared) >= 2:
        d = np.array([xa[s] - xb[s] for s in shared])
        n = len(d)
        delta = float(d.mean())
        sd = float(d.std(ddof=1))
        se = sd / math.sqrt(n)
        df = float(n - 1)
        dropped = len(xa) + len(xb) - 2 * n
        method = f"paired t on {n} shared seeds (df {n - 1})" + (
            f"; {dropped} unshared seed(s) left out" if dropped else "")
        needed = _needed_paired(delta, sd, alpha, margin) if estimate_seeds else None
        return _decide(delta, se, df, n, n, True, method, needed, sd=sd, alpha=alpha,
                       margin=margin, lower_is_better=lower_is_better)
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return CompareResult("inconclusive", None, None, None, None, na, nb, False,
                             "no values on one side", None, alpha=alpha, margin=margin,
                             lower_is_better=lower_is_better)
    va, vb = np.array(list(xa.values())), np.array(list(xb.values()))
    delta = float(va.mean() - vb.mean())
    sa = float(va.std(ddof=1)) if na >= 2 else None
    sb = float(vb.std(ddof=1)) if nb >= 2 else None
    if sa is None or sb is None:
        # one seed on a side: no spread for it, so no test; estimate the seeds a test would
        # need by assuming that side spreads like the other
        s = sa if sa is not None else sb
        needed = (_needed_welch(delta, s, s, alpha, margin)
                  if s is not None and estimate_seeds else None)
        return CompareResult("inconclusive", delta, None, None, None, na, nb, False,
                             f"one seed on a side (n {na} vs {nb}): no test", needed,
                             sd_a=sa, sd_b=sb, alpha=alpha, margin=margin,
                             lower_is_better=lower_is_better)
    se, df = _welch(sa, sb, na, nb)
    method = f"Welch t (df {df:.1f}, n {na} vs {nb})"
    needed = _needed_welch(delta, sa, sb, alpha, margin) if estimate_seeds else None
    return _decide(delta, se, df, na, nb, False, method, needed, sd_a=sa, sd_b=sb,
                   alpha=alpha, margin=margin, lower_is_better=lower_is_better)


def holm(ps: Sequence[float | None]) -> tuple[float | None, ...]:
    """Holm-Bonferroni adjusted p values (None stays None and does not count in the family)."""
    idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i] or 0.0)
    m = len(idx)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, i in enumerate(idx):
        p = ps[i]
        assert p is not None
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return tuple(out)


def holm_alpha(p: float, p_adj: float, rank: int, m: int, alpha: float) -> float:
    """The level at which a comparison's own interval agrees with its Holm-adjusted p:
    Holm's step level alpha / (m - rank) (rank 0 = smallest p) when that agrees, else
    alpha * p / p_adj (a comparison Holm stopped before). `p < level` iff `p_adj < alpha`."""
    level = alpha / (m - rank)
    if (p < level) == (p_adj < alpha):
        return level
    return alpha * p / p_adj if p_adj > 0 else level


def obf_spent(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: the two-sided alpha spent by information
    fraction t in (0, 1]: 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    # Phi^-1(1 - alpha/2) = ndtri; 2 - 2 Phi(z) = 2 ndtr(-z)
    return float(2.0 * sp.ndtr(-float(sp.ndtri(1.0 - alpha / 2.0)) / math.sqrt(t)))


def sequential_alpha(ns: Sequence[int], n_max: int | None, alpha: float) -> float:
    """The level at which to test the latest look of a comparison whose looks had `ns`
    seeds per side (look 0, the pre-registered seeds, first; increasing), in a plan of at
    most `n_max` seeds per side: the alpha spent between the previous look and this one,
    alpha(t_k) - alpha(t_{k-1}) with t = n / n_max (look 0: alpha(t_0)).

    A look's level does not depend on how later looks go, so the levels of all looks sum to
    at most alpha (Bonferroni across looks, conservative: it ignores their correlation).
    Without a plan (`n_max` None) a single look is a fixed sample and gets `alpha`; later
    looks without a cap take the current n as the last (everything left is spent now)."""
    if not ns:
        raise ValueError("no looks")
    if n_max is None and len(ns) == 1:
        return alpha
    cap = max(n_max or ns[-1], ns[-1])
    now = obf_spent(ns[-1] / cap, alpha)
    before = obf_spent(ns[-2] / cap, alpha) if len(ns) > 1 else 0.0
    return max(now - before, 0.0)


def welch_df(sa: float, sb: float, na: int, nb: int) -> float:
    return _welch(sa, sb, na, nb)[1]


# --- internals ----------------------------------------------------------------------------


def _welch(sa: float, sb: float, na: int, nb: int) -> tuple[float, float]:
    va, vb = sa * sa / na, sb * sb / nb
    se = math.sqrt(va + vb)
    if va + vb == 0:
        return 0.0, float(na + nb - 2)
    df = (va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return se, float(df)


def _decide(delta: float, se: float, df: float, n_a: int, n_b: int, paired: bool, method: str,
            needed: int | None, *, alpha: float, margin: float, lower_is_better: bool,
            sd: float | None = None, sd_a: float | None = None,
            sd_b: float | None = None) -> CompareResult:
    if se == 0.0:
        # no spread at all (e.g. bit-identical runs): the delta is exact
        p = 1.0 if delta == 0 else 0.0
        ci = (delta, delta)
        p_equiv = (0.0 if abs(delta) < margin else 1.0) if margin > 0 else None
    else:
        t = delta / se
        p = float(2.0 * sp.stdtr(df, -abs(t)))
        half = float(sp.stdtrit(df, 1.0 - alpha / 2.0)) * se
        ci = (delta - half, delta + half)
        p_equiv = None
        if margin > 0:
            p_lo = float(sp.stdtr(df, -(delta + margin) / se))
            p_hi = float(sp.stdtr(df, (delta - margin) / se))
            p_equiv = max(p_lo, p_hi)
    verdict: Verdict
    if p < alpha:
        verdict = "better" if (delta < 0) == lower_is_better else "worse"
    elif p_equiv is not None and p_equiv < alpha:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    return CompareResult(verdict, delta, ci, p, df, n_a, n_b, paired, method,
                         None if verdict in DECIDED else needed, se=se, sd=sd, sd_a=sd_a,
                         sd_b=sd_b, p_equiv=p_equiv, alpha=alpha, margin=margin,
                         lower_is_better=lower_is_better)


def _distributions() -> Any:
    """scipy.stats, imported only for the rare far-tail fallback: the module costs ~0.4 s
    to import, which every `recip status` would pay (scipy.special has the ufuncs used)."""
    from scipy import stats

    return stats


def _power_diff(delta: float, se: float, df: float, alpha: float) -> float:
    """Power of the two-sided t test at level alpha when the true delta / se is `delta/se`."""
    crit = float(sp.stdtrit(df, 1.0 - alpha / 2.0))
    nc = abs(delta) / se
    if nc > 3.0 * crit + NC_SURE:
        return 1.0
    power = float(1.0 - sp.nctdtr(df, nc, crit) + sp.nctdtr(df, nc, -crit))
    if math.isnan(power):   # the ufunc fails far in the tail; the distribution object may not
        st = _distributions()
        power = float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc))
    return (1.0 if nc > crit else 0.0) if math.isnan(power) else power


def _power_equiv(delta: float, se: float, df: float, alpha: float, margin: float) -> float:
    """Power of TOST (the usual lower bound: P(T1 > t) + P(T2 > t) - 1, floored at 0)."""
    crit = float(sp.stdtrit(df, 1.0 - alpha))
    up, lo = ((margin - delta) / se, (margin + delta) / se)
    if min(up, lo) > 3.0 * crit + NC_SURE:
        return 1.0
    power = 1.0 - float(sp.nctdtr(df, up, crit) + sp.nctdtr(df, lo, crit))
    if math.isnan(power):
        st = _distributions()
        power = float(st.nct.sf(crit, df, up) + st.nct.sf(crit, df, lo)) - 1.0
    if math.isnan(power):
        return 1.0 if min(up, lo) > crit else 0.0
    return max(power, 0.0)


def _smallest_n(power_at: _PowerAt, guess: float) -> int | None:
    """Smallest n in [2, MAX_SEEDS_ESTIMATE] with power_at(n) >= POWER, searched from the
    normal-approximation `guess`: a bracket by doubling strides away from it, then
    bisection (power grows with n)."""
    if not math.isfinite(guess) or guess > MAX_SEEDS_ESTIMATE:
        return None
    n = min(max(2, int(guess)), MAX_SEEDS_ESTIMATE)
    stride = 1
    if power_at(n) >= POWER:
        hi = n
        lo = max(hi - stride, 1)
        while lo > 1 and power_at(lo) >= POWER:
            hi, stride = lo, 2 * stride
            lo = max(hi - stride, 1)
    else:
        lo = n
        hi = min(lo + stride, MAX_SEEDS_ESTIMATE)
        while power_at(hi) < POWER:
            if hi >= MAX_SEEDS_ESTIMATE:
                return None
            lo, stride = hi, 2 * stride
            hi = min(lo + stride, MAX_SEEDS_ESTIMATE)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power_at(mid) >= POWER:
            hi = mid
        else:
            lo = mid
    return max(hi, 2)


def _guess(delta: float, var_sum: float, alpha: float, margin: float) -> float:
    """Seeds per side a z test would need (scipy's normal quantiles): the start of the
    t-based search."""
    z_beta = float(sp.ndtri(POWER))
    out = math.inf
    if delta != 0:
        out = var_sum * ((float(sp.ndtri(1 - alpha / 2)) + z_beta) / delta) ** 2
    if margin > abs(delta):
        z_half = float(sp.ndtri(1 - (1 - POWER) / 2))
        out = min(out, var_sum * ((float(sp.ndtri(1 - alpha)) + z_half)
                                  / (margin - abs(delta))) ** 2)
    return out


class _PowerAt:
    """power(n) of the test that would decide a comparison, at n seeds per side."""

    def __init__(self, delta: float, var_sum: float, df_of: _DfOf, alpha: float,
                 margin: float) -> None:
        self.delta, self.var_sum, self.df_of = delta, var_sum, df_of
        self.alpha, self.margin = alpha, margin

    def __call__(self, n: int) -> float:
        se = math.sqrt(self.var_sum / n)
        df = self.df_of(n)
        power = _power_diff(self.delta, se, df, self.alpha) if self.delta != 0 else 0.0
        if self.margin > abs(self.delta):
            power = max(power, _power_equiv(self.delta, se, df, self.alpha, self.margin))
        return power


class _DfOf:
    def __init__(self, sa: float | None, sb: float | None) -> None:
        self.sa, self.sb = sa, sb

    def __call__(self, n: int) -> float:
        if self.sa is None or self.sb is None:
            return float(n - 1)
        return _welch(self.sa, self.sb, n, n)[1]


def _needed_paired(delta: float, sd: float, alpha: float, margin: float) -> int | None:
    if sd == 0 or not math.isfinite(sd):
        return None
    if delta == 0 and margin == 0:
        return None
    return _smallest_n(_PowerAt(delta, sd * sd, _DfOf(None, None), alpha, margin),
                       _guess(delta, sd * sd, alpha, margin))


def _needed_welch(delta: float, sa: float | None, sb: float | None, alpha: float,
                  margin: float) -> int | None:
    if sa is None or sb is None or (sa == 0 and sb == 0):
        return None
    if delta == 0 and margin == 0:
        return None
    var_sum = sa * sa + sb * sb
    return _smallest_n(_PowerAt(delta, var_sum, _DfOf(sa, sb), alpha, margin),
                       _guess(delta, var_sum, alpha, margin))
