"""The 6.5 rule (per digit class) needs each architecture's ranking to follow theta's prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script

PREDICTED = np.array([12, 11, 10, 10, 10, 9, 11, 10, 9, 8])


@pytest.fixture(scope="module")
def experiment():
    return load_script("collapse_per_class", default_analyses_dir())


def _runs(level_of, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for arch in ("linear", "mlp", "cnn"):
        for digit, predicted in enumerate(PREDICTED):
            for s in range(3):
                rows.append({"arch": arch, "digit": digit, "seed": s, "predicted_collapsed": predicted,
                             "z_collapse_level": level_of(arch, digit, predicted, s) + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_levels_that_follow_the_prediction_agree(experiment):
    verdict = experiment.judge(_runs(lambda arch, digit, p, s: p / 16 + 0.01 * digit))
    assert verdict.agrees, verdict.table()


def test_one_architecture_against_the_prediction_is_refused(experiment):
    verdict = experiment.judge(_runs(lambda arch, digit, p, s: (1 - p / 16) if arch == "mlp" else p / 16))
    failed = verdict.table().query("not ok")
    assert not verdict.agrees and list(failed.check.str.split(":").str[0]) == ["mlp"]


def test_agreement_on_one_seed_only_is_refused(experiment):
    verdict = experiment.judge(_runs(lambda arch, digit, p, s: p / 16 if s == 0 else 1 - p / 16, noise=0.0))
    assert not verdict.agrees
