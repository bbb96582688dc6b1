"""The 6.3 rule (MLP CVAE over beta and eta_dec) agrees with the claimed trends and refuses counterfactuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script, seed_summary

REFERENCE = 0.4
BETAS, ETAS = (0.1, 0.5, 1.0, 2.0), (0.1, 0.2, 0.4, 0.8)


@pytest.fixture(scope="module")
def experiment():
    return load_script("cvae_mlp_beta_eta", default_analyses_dir())


def _runs(level_of=lambda beta, eta: min(1.0, 0.4 * beta * eta / REFERENCE), nll_of=lambda beta: 8 + 0.3 * beta,
          noise=0.0, seed=0):
    """Per-seed rows where the collapse level is ``level_of(beta, eta)`` and AU / KL follow it."""
    rng = np.random.default_rng(seed)
    pairs = list(dict.fromkeys([(b, REFERENCE) for b in BETAS] + [(1.0, e) for e in ETAS]))
    rows = []
    for beta, eta in pairs:
        for s in range(3):
            level = float(np.clip(level_of(beta, eta) + rng.normal(0, noise), 0, 1))
            rows.append({"beta": beta, "eta_dec": eta, "seed": s, "z_collapse_level": level,
                         "z_active_units": round(16 * (1 - level)), "z_kl_total": 12 * (1 - level),
                         "nll": nll_of(beta)})
    return pd.DataFrame(rows)


def _judge(experiment, runs):
    return experiment.judge(seed_summary(runs, ["beta", "eta_dec"], list(experiment.METRICS)), REFERENCE)


def test_the_claimed_trends_agree(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, verdict.table()


def test_seed_noise_inside_the_allowance_is_tolerated(experiment):
    assert _judge(experiment, _runs(noise=0.02, seed=1)).agrees


def test_collapse_falling_with_beta_is_refused(experiment):
    verdict = _judge(experiment, _runs(level_of=lambda beta, eta: max(0.0, 0.9 - 0.4 * beta) * eta / REFERENCE))
    assert not verdict.agrees


def test_no_effect_of_eta_dec_is_refused(experiment):
    verdict = _judge(experiment, _runs(level_of=lambda beta, eta: min(1.0, 0.4 * beta)))
    failed = verdict.table().query("not ok")
    assert not verdict.agrees and failed.check.str.contains("eta_dec").all()


def test_a_better_likelihood_at_beta_two_is_refused(experiment):
    assert not _judge(experiment, _runs(nll_of=lambda beta: 10 - 2 * beta)).agrees
