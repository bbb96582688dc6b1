"""The derived-predictions (SPEC 6.8) verdict rule says yes to the expected table and no to its counterfactuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script, seed_summary

LATENT = 16
BETAS = (0.5, 1.0, 2.0)
#: Collapsed dimensions per beta: the baselines, and variants that collapse less.
BASELINE, BETTER = (6, 11, 14), (2, 6, 10)


@pytest.fixture(scope="module")
def experiment():
    return load_script("mitigations", default_analyses_dir())


def _runs(decorrelated=BETTER, skip=BETTER, learned_prior=BASELINE, n_seeds=3, noise=0.0, seed=0):
    """A runs table: per seed, the collapsed dimensions set the collapse level and the active units."""
    rng = np.random.default_rng(seed)
    variants = {("cvae", "baseline"): BASELINE, ("cvae", "decorrelated"): decorrelated,
                ("cvae", "learned_prior"): learned_prior, ("mhvae", "baseline"): BASELINE, ("mhvae", "skip"): skip}
    rows = []
    for (family, variant), counts in variants.items():
        for beta, collapsed in zip(BETAS, counts):
            for s in range(n_seeds):
                n = collapsed + (rng.normal(0, noise) if noise else 0.0)
                rows.append({"family": family, "variant": variant, "beta": beta, "seed": s,
                             "collapse_level": float(np.clip(n / LATENT, 0, 1)),
                             "active_units": float(np.clip(LATENT - n, 0, LATENT))})
    return pd.DataFrame(rows)


def _judge(experiment, runs):
    summary = seed_summary(runs, ["family", "variant", "beta"], ["collapse_level", "active_units"])
    return experiment.judge(summary, LATENT)


def _failed(verdict):
    return [c.check.split(":")[0] for c in verdict.checks if not c.ok]


def test_the_expected_table_agrees(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, _failed(verdict)
    assert len(verdict.checks) == 4 and verdict.n_seeds == 3


def test_one_dimension_of_seed_noise_is_tolerated(experiment):
    assert _judge(experiment, _runs(noise=1.0, seed=2)).agrees


def test_a_single_outlier_seed_within_tolerance_is_tolerated(experiment):
    runs = _runs()
    at = (runs.variant == "skip") & (runs.beta == 1.0) & (runs.seed == 0)
    runs.loc[at, "collapse_level"] = 11 / LATENT  # as collapsed as the baseline, in one seed at one beta
    runs.loc[at, "active_units"] = 5.0
    assert _judge(experiment, runs).agrees


@pytest.mark.parametrize("variant", ["decorrelated", "skip"])
@pytest.mark.parametrize("counts", [BASELINE, (8, 13, 15), (5, 11, 14)], ids=["no-effect", "worse", "one-dim"])
def test_a_variant_no_better_than_its_baseline_is_refused(experiment, variant, counts):
    verdict = _judge(experiment, _runs(**{variant: counts}))
    assert not verdict.agrees
    assert set(_failed(verdict)) == {"cvae" if variant == "decorrelated" else "mhvae"}


def test_a_large_effect_in_one_seed_only_is_refused(experiment):
    # two seeds as collapsed as the baseline, one seed far less: the mean moves, the spread swallows it
    runs = _runs(skip=BASELINE)
    at = (runs.variant == "skip") & (runs.seed == 0)
    runs.loc[at, "collapse_level"] = 0.0
    runs.loc[at, "active_units"] = float(LATENT)
    assert not _judge(experiment, runs).agrees


def test_the_learned_prior_is_reported_not_judged(experiment):
    assert _judge(experiment, _runs(learned_prior=(16, 16, 16))).agrees


def test_a_variant_on_another_beta_grid_is_refused_loudly(experiment):
    runs = _runs()
    runs = runs[~((runs.variant == "skip") & (runs.beta == 2.0))]
    with pytest.raises(ValueError, match="one beta grid"):
        _judge(experiment, runs)
