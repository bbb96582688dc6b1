"""The 6.2 rule (linear CVAE over beta) checks counts, singular values and the trend."""

from __future__ import annotations

import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script

BETAS = (0.1, 0.5, 1.0, 2.0, 5.0)
PREDICTED = (0, 1, 5, 8, 14)


@pytest.fixture(scope="module")
def experiment():
    return load_script("cvae_linear_quadrant_beta", default_analyses_dir())


def _runs(measured=PREDICTED, error=0.02):
    return pd.DataFrame([{"beta": b, "seed": s, "n_collapsed_predicted": p, "n_collapsed_measured": m,
                          "rel_error_sv_above_floor": error}
                         for b, p, m in zip(BETAS, PREDICTED, measured) for s in range(3)])


def test_the_theorem_agrees(experiment):
    verdict = experiment.judge(_runs())
    assert verdict.agrees, verdict.table()


def test_singular_values_off_the_theorem_are_refused_even_with_right_counts(experiment):
    verdict = experiment.judge(_runs(error=0.2))
    assert not verdict.agrees
    assert verdict.table().query("not ok").check.str.contains("singular values").all()


def test_counts_falling_with_beta_are_refused(experiment):
    assert not experiment.judge(_runs(measured=tuple(reversed(PREDICTED)))).agrees
