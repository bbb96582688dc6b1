"""The MHVAE (SPEC 6.6) verdict rule says yes to the expected table and no to its counterfactuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script, seed_summary

D2 = 16
BETAS = (0.1, 0.5, 1.0, 2.0)
#: The claimed shape: z2 collapsed dimensions along beta2 (beta1 = 1) and along beta1 (beta2 = 1).
ALONG_BETA2 = (0, 0, 10, 16)
ALONG_BETA1 = (16, 12, 10, 0)


@pytest.fixture(scope="module")
def experiment():
    return load_script("mhvae_beta1_beta2", default_analyses_dir())


def _runs(along_beta2=ALONG_BETA2, along_beta1=ALONG_BETA1, eta_enc=(7, 10, 10, 10), n_seeds=3, noise=0.0,
          seed=0):
    """A runs table: per seed, z2's collapsed dimensions set the collapse level and the active units."""
    rng = np.random.default_rng(seed)
    cells = {}
    for b2, n in zip(BETAS, along_beta2):
        cells[(1.0, b2, 0.5)] = n
    for b1, n in zip(BETAS, along_beta1):
        cells[(b1, 1.0, 0.5)] = n
    for e, n in zip((0.25, 0.5, 1.0, 2.0), eta_enc):
        cells.setdefault((1.0, 1.0, e), n)
    rows = []
    for (b1, b2, e), collapsed in cells.items():
        for s in range(n_seeds):
            jitter = rng.normal(0, noise) if noise else 0.0
            rows.append({"beta1": b1, "beta2": b2, "eta_enc": e, "seed": s,
                         "z2_collapse_level": float(np.clip((collapsed + jitter) / D2, 0, 1)),
                         "z2_active_units": float(np.clip(D2 - collapsed - jitter, 0, D2))})
    return pd.DataFrame(rows)


def _judge(experiment, runs):
    summary = seed_summary(runs, ["beta1", "beta2", "eta_enc"], ["z2_collapse_level", "z2_active_units"])
    return experiment.judge(summary, D2)


def _failed(verdict):
    return [c.check for c in verdict.checks if not c.ok]


def test_the_expected_table_agrees(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, _failed(verdict)
    assert verdict.n_seeds == 3


def test_half_a_dimension_of_seed_noise_is_tolerated(experiment):
    assert _judge(experiment, _runs(noise=0.5, seed=1)).agrees


def test_a_single_outlier_seed_within_tolerance_is_tolerated(experiment):
    runs = _runs()
    at = (runs.beta1 == 0.5) & (runs.beta2 == 1.0) & (runs.seed == 2)
    runs.loc[at, "z2_collapse_level"] = 11 / D2  # one seed two dimensions off the 12 of the others
    runs.loc[at, "z2_active_units"] = 5.0
    assert _judge(experiment, runs).agrees


def test_the_opposite_beta2_trend_is_refused(experiment):
    verdict = _judge(experiment, _runs(along_beta2=ALONG_BETA2[::-1]))
    assert not verdict.agrees
    assert any("beta2 0.1 -> 2 overall" in check for check in _failed(verdict))


def test_a_wrong_signed_beta1_effect_is_refused_even_beside_a_larger_beta2_effect(experiment):
    # z2 collapses MORE with beta1, by less than beta2 makes it: the old rule (beta2 effect > beta1 effect) passed
    verdict = _judge(experiment, _runs(along_beta1=(4, 5, 10, 12)))
    assert not verdict.agrees
    failed = _failed(verdict)
    assert any("beta1 0.1 -> 2 overall" in check for check in failed)
    assert not any("beta2 0.1" in check for check in failed)  # the beta2 direction still holds


@pytest.mark.parametrize("along_beta1, step", [
    ((10, 10, 10, 10), "0.1 -> 2 overall"),  # no beta1 effect at all
    ((16, 9, 12, 0), "0.5 -> 1"),  # right way end to end, but 0.5 -> 1 collapses three more dimensions per seed
], ids=["flat", "reversed-step"])
def test_a_flat_or_reversing_beta1_line_is_refused_where_it_fails(experiment, along_beta1, step):
    verdict = _judge(experiment, _runs(along_beta1=along_beta1))
    assert not verdict.agrees
    assert _failed(verdict) == [f"beta2 1: z2_collapse_level, beta1 {step}", f"beta2 1: z2_active_units, beta1 {step}"]


def test_flat_beta2_is_refused(experiment):
    assert not _judge(experiment, _runs(along_beta2=(10, 10, 10, 10))).agrees


def test_flat_ends_as_the_theory_predicts_pass(experiment):
    assert _judge(experiment, _runs(along_beta2=(0, 0, 0, 16), along_beta1=(16, 16, 0, 0))).agrees


def test_eta_enc_is_reported_not_judged(experiment):
    assert _judge(experiment, _runs(eta_enc=(16, 10, 0, 16))).agrees
