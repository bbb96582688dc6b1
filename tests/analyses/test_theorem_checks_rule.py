"""The 6.1 rule (closed forms) refuses a wrong collapsed count and singular values off the theorem."""

from __future__ import annotations

import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script


@pytest.fixture(scope="module")
def experiment():
    return load_script("theorem_checks", default_analyses_dir())


def _runs(measured=(0, 1, 2), error=0.01):
    rows = []
    for model in ("vae_learnable", "real_mhvae_learnable"):
        for setting, (predicted, got) in enumerate(zip((0, 1, 2), measured)):
            for seed in range(3):
                rows.append({"model": model, "setting": f"beta={setting}", "seed": seed,
                             "n_collapsed_predicted": predicted, "n_collapsed_measured": got,
                             "max_rel_error_sv_above_floor": error})
    return pd.DataFrame(rows)


def test_exact_counts_and_small_errors_agree(experiment):
    verdict = experiment.judge(_runs())
    assert verdict.agrees, verdict.table()


def test_one_seed_off_by_one_mode_is_tolerated_but_every_seed_is_not(experiment):
    one = _runs()
    one.loc[(one.setting == "beta=1") & (one.seed == 0), "n_collapsed_measured"] = 2
    assert experiment.judge(one).agrees
    assert not experiment.judge(_runs(measured=(0, 2, 2))).agrees


def test_singular_values_off_the_theorem_are_refused(experiment):
    assert not experiment.judge(_runs(error=0.08)).agrees


def test_the_issue_22_counterparts_are_checked(experiment, tmp_path):
    """beta1 != 1, a real-data Theorem 5 case and the authors' linear VAE (latent 5, eta_dec 1, beta 1, learnable)."""
    from ppl_vae.reproduce import Settings

    synthetic = {label: base for label, base, _ in experiment.experiments(6, 4)}
    assert synthetic["mhvae_beta1_3"].beta1 == 3.0
    real = {label: base for label, base, _ in experiment.real_experiments(64, Settings("quick", tmp_path))}
    authors = real["real_vae_learnable_authors"]
    assert (authors.latent_dim, authors.eta_dec, authors.beta, authors.encoder_std) == (5, 1.0, 1.0, None)
    assert real["real_mhvae_fixed"].sigma2 == 0.5


def _collapse_pattern(config, data):
    from ppl_vae.theory import linear_cvae, linear_mhvae, linear_vae

    if config.family == "vae":
        theory = linear_vae(data.x, config.latent_dim, beta=config.beta, eta_dec=config.eta_dec,
                            encoder_std=config.encoder_std)
    elif config.family == "cvae":
        theory = linear_cvae(data.x, data.y, config.latent_dim, beta=config.beta, eta_dec=config.eta_dec)
    else:
        theory = linear_mhvae(data.x, tuple(config.latent_dims), beta1=config.beta1, beta2=config.beta2,
                              sigma1=config.sigma1, sigma2=config.sigma2)
    return {name: tuple(theory[name].values > 0) for name in theory.data_vars if name.endswith("_sv")}


@pytest.mark.parametrize("factor", [0.93, 1.07])
def test_no_synthetic_setting_sits_on_a_theorem_boundary(experiment, factor):
    """A KL weight 7% away changes no mode's collapse: next to a threshold the loss is flat (quartic) along the
    mode and SVI creeps, so a setting there is a design slip, not a finding (beta2 = 3 at theta_1 = 3.01 was)."""
    import dataclasses

    from ppl_vae.data import synthetic_gaussian, synthetic_pairs
    from ppl_vae.sweep import expand_grid

    single = synthetic_gaussian(2000, len(experiment.SPECTRUM), spectrum=experiment.SPECTRUM, seed=0)
    pairs = synthetic_pairs(2000, len(experiment.SPECTRUM), correlation="noise_1_2", spectrum=experiment.SPECTRUM,
                            seed=0)
    for label, base, grid in experiment.experiments(len(experiment.SPECTRUM), experiment.LATENT):
        data = pairs if base.family == "cvae" else single
        for config in expand_grid(base, grid)[0]:
            weights = ("beta1", "beta2") if config.family == "mhvae" else ("beta",)
            moved = dataclasses.replace(config, **{w: getattr(config, w) * factor for w in weights})
            assert _collapse_pattern(moved, data) == _collapse_pattern(config, data), (label, config)
