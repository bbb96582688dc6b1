"""The 6.7 rule (learnable vs fixed encoder variance) holds the linear VAE to the closed forms and the MLP to AU."""

from __future__ import annotations

import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script, seed_summary

BETAS = (0.5, 1.0, 2.0, 4.0)
#: Closed-form active means per variant and beta, and complete collapse of the learnable variance.
ACTIVE = {"learnable": (10, 6, 4, 1), "fixed_prior_std": (10, 6, 4, 1), "fixed_0.5": (16, 16, 10, 6)}


@pytest.fixture(scope="module")
def experiment():
    return load_script("vae_fixed_vs_learnable_variance", default_analyses_dir())


def _runs(linear=ACTIVE, mlp_fixed=(14, 12, 10, 8), mlp_learned=(10, 6, 4, 2), kl_collapsed=None):
    rows = []
    for variance, active in linear.items():
        for beta, au, predicted in zip(BETAS, active, ACTIVE[variance]):
            complete = 16 - predicted if variance != "fixed_0.5" else 0
            measured = complete if kl_collapsed is None else kl_collapsed
            rows += [{"arch": "linear", "variance": variance, "beta": beta, "seed": s,
                      "predicted_active_units": predicted, "predicted_complete_collapse": complete,
                      "z_principal_au": au, "z_n_collapsed": measured} for s in range(3)]
    for variance, active in (("fixed_0.5", mlp_fixed), ("learnable", mlp_learned)):
        rows += [{"arch": "mlp", "variance": variance, "beta": beta, "seed": s, "predicted_active_units": -1,
                  "predicted_complete_collapse": -1, "z_principal_au": au, "z_n_collapsed": 0}
                 for beta, au in zip(BETAS, active) for s in range(3)]
    return pd.DataFrame(rows)


def _judge(experiment, runs):
    return experiment.judge(seed_summary(runs, ["arch", "variance", "beta", "predicted_active_units",
                                                "predicted_complete_collapse"], ["z_principal_au", "z_n_collapsed"]))


def test_the_closed_forms_and_more_mlp_units_agree(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, verdict.table()


def test_a_fixed_variance_with_fewer_mlp_units_is_refused(experiment):
    assert not _judge(experiment, _runs(mlp_fixed=(10, 6, 4, 2), mlp_learned=(14, 12, 10, 8))).agrees


def test_axis_counts_of_a_rotated_basis_are_refused(experiment):
    rotated = dict(ACTIVE, fixed_prior_std=(16, 16, 16, 16))
    assert not _judge(experiment, _runs(linear=rotated)).agrees


def test_incomplete_collapse_of_the_learnable_variance_is_refused(experiment):
    assert not _judge(experiment, _runs(kl_collapsed=0)).agrees
