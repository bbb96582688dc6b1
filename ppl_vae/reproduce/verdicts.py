"""Verdict rules: seed means with their spread, and checks that can say "no".

Every experiment judges its claim with one rule, a pure function of its
result table (one row per configuration and seed). The rule is built from
the pieces here:

- :func:`seed_summary` reduces the replicates to a mean, a standard error and
  a count per configuration;
- :func:`allowance` is how far two seed means may differ before the
  difference counts: two standard errors of the difference, never less than a
  floor that matches the metric's resolution (one latent dimension, a few
  hundredths of a collapse level);
- :func:`trend_checks`, :func:`close_check` and :func:`order_check` turn those
  into :class:`Check` rows, which a :class:`Verdict` gathers. The verdict
  agrees only when every check passes, and its table is what the report shows.

Each experiment's rule has a test that feeds it a counterfactual table (the
opposite trend, a wrong-signed effect, one seed's noise) and sees it say no.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Columns of a verdict's table of checks (:meth:`Verdict.table`, :meth:`ppl_vae.reproduce.ClaimCheck.evidence_table`).
EVIDENCE_COLUMNS = ("check", "measured", "se", "expected", "ok")

#: Standard errors of a difference that a step against the claimed direction may reach and still be noise.
N_SE = 2.0


@dataclasses.dataclass(frozen=True)
class Check:
    """One comparison a rule makes.

    Attributes
    ----------
    check
        What is compared, in words (e.g. ``"z collapse level, beta 0.5 -> 1 (eta_dec 1)"``).
    measured
        The measured quantity (a seed mean, or a difference of seed means).
    se
        Its standard error over seeds (NaN when there is one seed).
    expected
        What the claim or the theory says, in words (``">= -0.05"``, ``"3 (Theorem 2)"``).
    ok
        Whether ``measured`` satisfies ``expected``.
    """

    check: str
    measured: float
    se: float
    expected: str
    ok: bool

    def row(self) -> dict:
        return {"check": self.check, "measured": float(self.measured), "se": float(self.se),
                "expected": self.expected, "ok": bool(self.ok)}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A rule's outcome: agrees when every check passes; ``rule`` says what was required."""

    rule: str
    checks: tuple[Check, ...]
    n_seeds: int

    @property
    def agrees(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def table(self) -> pd.DataFrame:
        """One row per check: ``check, measured, se, expected, ok``."""
        return pd.DataFrame(self.evidence(), columns=list(EVIDENCE_COLUMNS))

    def evidence(self) -> list[dict]:
        return [c.row() for c in self.checks]


def seed_summary(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], *,
                 seed: str = "seed") -> pd.DataFrame:
    """Seed means and standard errors per configuration.

    Parameters
    ----------
    table
        One row per configuration and seed; ``by`` columns name the
        configuration, ``seed`` the replicate.
    by
        Columns that identify a configuration (kept, in first-seen order).
    metrics
        Numeric columns to summarise.

    Returns
    -------
    pandas.DataFrame
        ``by`` columns, then ``<metric>_mean`` and ``<metric>_se`` (standard
        error of the mean over seeds, ``std(ddof=1) / sqrt(n)``; NaN for one
        seed) per metric, and ``n_seeds``.
    """
    missing = [c for c in (*by, *metrics, seed) if c not in table.columns]
    if missing:
        raise KeyError(f"table lacks column(s) {missing}; it has {list(table.columns)}")
    grouped = table.groupby(list(by), sort=False, dropna=False)
    means = grouped[list(metrics)].mean().add_suffix("_mean")
    ses = grouped[list(metrics)].sem(ddof=1).add_suffix("_se")
    counts = grouped[seed].nunique().rename("n_seeds")
    ordered = [c for m in metrics for c in (f"{m}_mean", f"{m}_se")]
    return means.join(ses)[ordered].join(counts).reset_index()


def _se(value: float) -> float:
    return 0.0 if value is None or not np.isfinite(value) else float(value)


def allowance(se_a: float, se_b: float = 0.0, *, floor: float) -> float:
    """How far apart two seed means may be and still be noise: ``max(floor, 2 * sqrt(se_a^2 + se_b^2))``.

    A missing standard error (one seed) counts as zero, so a one-seed table is
    judged on the floor alone.
    """
    return max(float(floor), N_SE * float(np.hypot(_se(se_a), _se(se_b))))


def trend_checks(summary: pd.DataFrame, along: str, metric: str, *, increasing: bool, floor: float,
                 label: str = "", overall: bool = True) -> list[Check]:
    """The claimed direction of ``metric`` along ``along``, on seed means.

    Every step between neighbouring values of ``along`` may go against the
    direction by at most :func:`allowance` (a step inside the noise, or a flat
    segment the theory predicts, passes). With ``overall``, the change from the
    first to the last value must go the claimed way by more than its
    allowance: a flat or reversed trend is not the claimed one.

    Parameters
    ----------
    summary
        :func:`seed_summary` output restricted to the rows to compare (one per
        value of ``along``).
    along
        The varied column (sorted ascending).
    metric
        Metric name; ``<metric>_mean`` and ``<metric>_se`` are read.
    increasing
        Claimed direction.
    floor
        Smallest allowance (the metric's resolution).
    label
        Prefix of each check's description (e.g. ``"eta_dec 1"``).
    """
    rows = summary.sort_values(along)
    means = rows[f"{metric}_mean"].to_numpy(float)
    ses = rows[f"{metric}_se"].to_numpy(float)
    values = rows[along].to_numpy()
    sign = 1.0 if increasing else -1.0
    word = "up" if increasing else "down"
    prefix = f"{label}: " if label else ""
    checks = []
    for i in range(len(means) - 1):
        step = means[i + 1] - means[i]
        room = allowance(ses[i], ses[i + 1], floor=floor)
        checks.append(Check(f"{prefix}{metric}, {along} {values[i]:g} -> {values[i + 1]:g}", step,
                            float(np.hypot(_se(ses[i]), _se(ses[i + 1]))),
                            f"{'>=' if increasing else '<='} {-sign * room:+.3g} (no reversal)",
                            bool(sign * step >= -room)))
    if overall and len(means) > 1:
        change = means[-1] - means[0]
        room = allowance(ses[0], ses[-1], floor=floor)
        checks.append(Check(f"{prefix}{metric}, {along} {values[0]:g} -> {values[-1]:g} overall", change,
                            float(np.hypot(_se(ses[0]), _se(ses[-1]))),
                            f"{'>' if increasing else '<'} {sign * room:+.3g} ({word})", bool(sign * change > room)))
    return checks


def close_check(label: str, mean: float, se: float, target: float, *, floor: float, source: str = "") -> Check:
    """``mean`` within :func:`allowance` of ``target`` (e.g. a collapsed count against a theorem's)."""
    room = allowance(se, floor=floor)
    return Check(label, mean, se, f"{target:g} +/- {room:.3g}{f' ({source})' if source else ''}",
                 bool(abs(mean - target) <= room))


def bound_check(label: str, mean: float, se: float, *, below: float | None = None,
                above: float | None = None) -> Check:
    """``mean`` below ``below`` and/or above ``above`` (fixed limits, e.g. a relative error of 5%)."""
    ok = (below is None or mean <= below) and (above is None or mean >= above)
    parts = ([f"<= {below:g}"] if below is not None else []) + ([f">= {above:g}"] if above is not None else [])
    return Check(label, mean, se, " and ".join(parts), bool(ok))


def order_check(label: str, larger: tuple[float, float], smaller: tuple[float, float], *, floor: float,
                strict: bool = True) -> Check:
    """The first (mean, se) exceeds the second by more than the allowance (``strict``), or is not below it by
    more than the allowance (not ``strict``)."""
    difference = larger[0] - smaller[0]
    room = allowance(larger[1], smaller[1], floor=floor)
    se = float(np.hypot(_se(larger[1]), _se(smaller[1])))
    if strict:
        return Check(label, difference, se, f"> {room:.3g}", bool(difference > room))
    return Check(label, difference, se, f">= {-room:.3g}", bool(difference >= -room))


def spearman_check(label: str, predictor: Sequence[float], per_seed: np.ndarray, *, seed: int = 0,
                   n_boot: int = 2000, level: float = 0.9) -> Check:
    """Rank agreement of a predictor with a measured quantity, with a bootstrap over seeds.

    Parameters
    ----------
    predictor
        One value per group (e.g. a class's predicted collapsed count), shape ``(G,)``.
    per_seed
        Measured values, shape ``(S, G)``: one row per seed.
    seed
        Seed of the bootstrap draws.

    Returns
    -------
    Check
        ``measured`` is the Spearman correlation of the predictor with the seed
        means, ``se`` the bootstrap standard deviation (resampling seeds); the
        check passes when the correlation of the seed means is significant
        over the groups (one-sided p < ``1 - level - 0.05``, i.e. 0.05 by
        default: a few groups can line up by chance) and the lower end of the
        ``level`` bootstrap interval over seeds is above zero.
    """
    from scipy import stats

    per_seed = np.atleast_2d(np.asarray(per_seed, dtype=float))
    predictor = np.asarray(predictor, dtype=float)

    def rho(values: np.ndarray) -> float:
        if np.ptp(values) == 0 or np.ptp(predictor) == 0:
            return 0.0
        return float(stats.spearmanr(predictor, values).statistic)

    means = per_seed.mean(axis=0)
    point = rho(means)
    alpha = max(1.0 - level - 0.05, 0.01)
    p_value = (float(stats.spearmanr(predictor, means, alternative="greater").pvalue)
               if np.ptp(means) > 0 and np.ptp(predictor) > 0 else 1.0)
    n = per_seed.shape[0]
    if n < 2:
        return Check(label, point, float("nan"), f"one-sided p < {alpha:g} (got {p_value:.3f}; one seed)",
                     bool(p_value < alpha))
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = np.array([rho(per_seed[d].mean(axis=0)) for d in draws])
    low = float(np.quantile(boot, (1 - level) / 2))
    return Check(label, point, float(boot.std(ddof=1)),
                 f"one-sided p < {alpha:g} (got {p_value:.3f}) and {level:.0%} bootstrap lower end > 0 "
                 f"(got {low:.2f})", bool(p_value < alpha and low > 0))

