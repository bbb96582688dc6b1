"""The CVAE completions (SPEC 6.3) rule says yes to the expected table and no to its counterfactuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import Settings, default_analyses_dir, load_script, seed_summary

REFERENCE = 0.4
BETAS = (0.1, 0.5, 1.0, 2.0)
ETAS = (0.1, 0.2, 0.4, 0.8)
#: The claimed shape, as measured at quick scale: the spread across prior draws falls, the posterior error rises.
SPREAD_BETA, SPREAD_ETA = (0.17, 0.07, 0.02, 0.001), (0.20, 0.12, 0.02, 0.001)
POSTERIOR_BETA, POSTERIOR_ETA = (0.025, 0.044, 0.049, 0.052), (0.020, 0.037, 0.049, 0.051)
METRICS = ["completion_spread", "posterior_mse", "completion_mse"]


@pytest.fixture(scope="module")
def experiment():
    return load_script("cvae_completions", default_analyses_dir())


def _runs(spread_beta=SPREAD_BETA, spread_eta=SPREAD_ETA, posterior_beta=POSTERIOR_BETA,
          posterior_eta=POSTERIOR_ETA, n_seeds=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    cells = {}
    for b, spread, post in zip(BETAS, spread_beta, posterior_beta):
        cells[(b, REFERENCE)] = (spread, post)
    for e, spread, post in zip(ETAS, spread_eta, posterior_eta):
        cells.setdefault((1.0, e), (spread, post))
    rows = []
    for (b, e), (spread, post) in cells.items():
        for s in range(n_seeds):
            jitter = rng.normal(0, noise, size=2) if noise else np.zeros(2)
            rows.append({"beta": b, "eta_dec": e, "seed": s, "completion_spread": spread + jitter[0],
                         "posterior_mse": post + jitter[1] / 10, "completion_mse": 0.05 + spread ** 2})
    return pd.DataFrame(rows)


def _judge(experiment, runs):
    return experiment.judge(seed_summary(runs, ["beta", "eta_dec"], METRICS), REFERENCE)


def _failed(verdict):
    return [c.check for c in verdict.checks if not c.ok]


def test_the_expected_table_agrees(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, _failed(verdict)
    assert len(verdict.checks) == 2 * 2 * 4  # two metrics on two lines: three steps and the end-to-end change


def test_seed_noise_within_the_resolution_is_tolerated(experiment):
    assert _judge(experiment, _runs(noise=0.005, seed=2)).agrees


def test_completions_that_keep_their_variety_are_refused(experiment):
    # beta leaves the completions' variety alone (the value at beta 1 is the eta_dec line's, shared)
    verdict = _judge(experiment, _runs(spread_beta=(0.02, 0.02, 0.02, 0.02)))
    assert _failed(verdict) == ["eta_dec 0.4: completion_spread, beta 0.1 -> 2 overall"]


def test_a_posterior_that_improves_with_eta_dec_is_refused(experiment):
    verdict = _judge(experiment, _runs(posterior_eta=POSTERIOR_ETA[::-1]))
    assert not verdict.agrees
    assert "beta 1: posterior_mse, eta_dec 0.1 -> 0.8 overall" in _failed(verdict)
    assert not any(check.startswith("eta_dec 0.4") for check in _failed(verdict))


def test_a_reversing_spread_step_is_refused(experiment):
    # 0.2 -> 0.4 gains variety (the 0.4 value, 0.02, is the beta line's shared cell)
    verdict = _judge(experiment, _runs(spread_eta=(0.20, 0.001, 0.02, 0.001)))
    assert _failed(verdict) == ["beta 1: completion_spread, eta_dec 0.2 -> 0.4"]


def test_the_completion_error_is_not_judged(experiment):
    runs = _runs()
    runs["completion_mse"] = np.where(runs.beta > 0.5, 1.0, 0.0)
    assert _judge(experiment, runs).agrees


def test_completions_are_prior_draws_of_the_decoder_and_collapse_shows_in_their_spread(experiment):
    import torch

    from ppl_vae.models import CVAEConfig, build_model

    torch.manual_seed(0)
    model = build_model(CVAEConfig(4, 6, 3, arch="mlp", hidden_dims=(8,), latent_mapping="separate"))
    x, y = torch.randn(20, 4), torch.randn(20, 6)
    draws = experiment.completions(model, x, 5, seed=1)
    assert draws.shape == (5, 20, 6)
    assert torch.equal(draws, experiment.completions(model, x, 5, seed=1))  # seeded
    assert experiment.completion_metrics(model, x, y, seed=1)["completion_spread"] > 0
    with torch.no_grad():  # a decoder that ignores z: every completion is the same image
        for parameter in model.decoder_z.parameters():
            parameter.zero_()
    metrics = experiment.completion_metrics(model, x, y, seed=1)
    assert metrics["completion_spread"] == 0.0
    assert metrics["completion_mse"] == pytest.approx(metrics["posterior_mse"])


def test_the_plan_counts_the_configurations_each_scale_trains(experiment, tmp_path):
    (group,) = experiment.plan(Settings("quick", tmp_path))
    assert (group.configs, group.seeds, group.steps, group.vectorised) == (7, 3, experiment.QUICK_STEPS, True)
    (group,) = experiment.plan(Settings("full", tmp_path, n_seeds=2))
    assert (group.configs, group.seeds) == (7, 2)
