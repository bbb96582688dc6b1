"""The verdict building blocks: seed summaries, allowances, and checks that say no when they should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce.verdicts import (Verdict, allowance, bound_check, close_check, order_check, seed_summary,
                                        spearman_check, trend_checks)


def _table(means, seeds=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"beta": b, "seed": s, "level": m + rng.normal(0, noise)}
                         for b, m in zip((0.1, 0.5, 1.0, 2.0), means) for s in range(seeds)])


def test_seed_summary_means_standard_errors_and_counts():
    table = pd.DataFrame({"beta": [1, 1, 1, 2, 2, 2], "seed": [0, 1, 2] * 2, "au": [3, 4, 5, 1, 1, 1]})
    summary = seed_summary(table, ["beta"], ["au"])
    assert summary.au_mean.tolist() == [4.0, 1.0]
    assert summary.au_se.tolist() == pytest.approx([1.0 / np.sqrt(3), 0.0])
    assert summary.n_seeds.tolist() == [3, 3]


def test_seed_summary_names_a_missing_column():
    with pytest.raises(KeyError, match="au"):
        seed_summary(pd.DataFrame({"beta": [1], "seed": [0]}), ["beta"], ["au"])


def test_allowance_is_two_standard_errors_of_the_difference_or_the_floor():
    assert allowance(0.3, 0.4, floor=0.1) == pytest.approx(1.0)
    assert allowance(0.01, 0.01, floor=1.0) == 1.0
    assert allowance(float("nan"), float("nan"), floor=0.5) == 0.5  # one seed: the floor alone


def test_a_rising_trend_passes_and_its_reverse_fails():
    summary = seed_summary(_table([0.1, 0.3, 0.6, 0.9]), ["beta"], ["level"])
    assert Verdict("r", tuple(trend_checks(summary, "beta", "level", increasing=True, floor=0.05)), 3).agrees
    reverse = seed_summary(_table([0.9, 0.6, 0.3, 0.1]), ["beta"], ["level"])
    assert not Verdict("r", tuple(trend_checks(reverse, "beta", "level", increasing=True, floor=0.05)), 3).agrees


def test_a_flat_trend_is_no_trend_but_a_flat_segment_is_allowed():
    flat = seed_summary(_table([0.5, 0.5, 0.5, 0.5]), ["beta"], ["level"])
    checks = trend_checks(flat, "beta", "level", increasing=True, floor=0.05)
    assert all(c.ok for c in checks[:-1]) and not checks[-1].ok
    segment = seed_summary(_table([0.1, 0.1, 0.1, 0.9]), ["beta"], ["level"])
    assert all(c.ok for c in trend_checks(segment, "beta", "level", increasing=True, floor=0.05))


def test_a_reversal_inside_the_seed_noise_passes_and_a_clear_one_fails():
    spread = np.array([-0.1, 0.0, 0.1])  # seed-to-seed spread: standard error 0.058 per mean
    noisy = pd.DataFrame([{"beta": b, "seed": s, "level": m + d}
                          for b, m in zip((0.1, 0.5, 1.0, 2.0), (0.1, 0.35, 0.3, 0.9)) for s, d in enumerate(spread)])
    noisy = seed_summary(noisy, ["beta"], ["level"])
    assert all(c.ok for c in trend_checks(noisy, "beta", "level", increasing=True, floor=0.05))
    clear = seed_summary(_table([0.1, 0.6, 0.2, 0.9], noise=0.01), ["beta"], ["level"])
    assert not all(c.ok for c in trend_checks(clear, "beta", "level", increasing=True, floor=0.05))


def test_close_bound_and_order_checks():
    assert close_check("n", 5.4, 0.1, 5, floor=1.0).ok
    assert not close_check("n", 7.0, 0.1, 5, floor=1.0).ok
    assert bound_check("e", 0.04, 0.01, below=0.05).ok and not bound_check("e", 0.06, 0.01, below=0.05).ok
    assert order_check("d", (10.0, 0.3), (6.0, 0.3), floor=1.0).ok
    assert not order_check("d", (6.0, 0.3), (10.0, 0.3), floor=1.0).ok  # wrong sign
    assert not order_check("d", (6.5, 0.3), (6.0, 0.3), floor=1.0).ok  # inside the noise: not a difference
    assert order_check("d", (5.5, 0.3), (6.0, 0.3), floor=1.0, strict=False).ok


def test_spearman_check_needs_the_bootstrap_interval_above_zero():
    predictor = np.arange(10.0)
    rng = np.random.default_rng(0)
    agreeing = predictor[None, :] + rng.normal(0, 1.0, size=(3, 10))
    assert spearman_check("rho", predictor, agreeing).ok
    unrelated = np.abs(predictor - 4.5)[None, :] + rng.normal(0, 0.1, size=(3, 10))  # a U: rho near 0
    assert not spearman_check("rho", predictor, unrelated).ok
    one_lucky_seed = np.vstack([predictor, -predictor, -predictor])  # agrees on one seed only
    assert not spearman_check("rho", predictor, one_lucky_seed).ok
    assert not spearman_check("rho", predictor, -agreeing).ok


def test_a_verdict_with_no_checks_does_not_agree():
    assert not Verdict("nothing checked", (), 3).agrees
