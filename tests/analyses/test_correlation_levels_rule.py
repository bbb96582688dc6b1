"""The 6.4 rule (correlation levels) allows the theory's flat segments and refuses a reversed trend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import default_analyses_dir, load_script, seed_summary

DIM = 16
LEVELS = {"identical": 1.0, "noise_1_2": 0.5, "noise_1_4": 0.25, "noise_1_8": 0.125, "independent": 0.0}
PREDICTED = {1.0: 16, 0.5: 0, 0.25: 0, 0.125: 0, 0.0: 0}


@pytest.fixture(scope="module")
def experiment():
    return load_script("correlation_levels", default_analyses_dir())


def _runs(level_of=lambda a: 1.0 if a == 1.0 else 0.1, count_of=lambda a: PREDICTED[a], noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for arch in ("linear", "mlp"):
        for level, a in LEVELS.items():
            for s in range(3):
                rows.append({"arch": arch, "level": level, "a": a, "predicted_collapsed": PREDICTED[a], "seed": s,
                             "z_collapse_level": level_of(a) + rng.normal(0, noise), "z_n_collapsed": count_of(a),
                             "z_active_units": DIM - count_of(a), "nll": 20.0})
    return pd.DataFrame(rows)


def _judge(experiment, runs, graded=False):
    summary = seed_summary(runs, ["arch", "level", "a", "predicted_collapsed"],
                           ["z_collapse_level", "z_n_collapsed", "z_active_units", "nll"])
    return experiment.judge(summary, DIM, runs if graded else None)


def test_the_theorys_flat_segments_agree(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, verdict.table()


def test_noise_within_a_dimension_is_tolerated(experiment):
    assert _judge(experiment, _runs(noise=0.02, seed=2)).agrees


def test_more_collapse_at_independent_input_is_refused(experiment):
    assert not _judge(experiment, _runs(level_of=lambda a: 1.0 - a)).agrees


def test_a_reversal_between_weak_levels_is_refused(experiment):
    assert not _judge(experiment, _runs(level_of=lambda a: {1.0: 1.0, 0.5: 0.1, 0.25: 0.5, 0.125: 0.1,
                                                            0.0: 0.1}[a])).agrees


def test_a_linear_count_off_the_theorem_is_refused(experiment):
    verdict = _judge(experiment, _runs(count_of=lambda a: 12 if a == 1.0 else 0))
    assert not verdict.agrees and verdict.table().query("not ok").check.str.contains("linear").all()


def test_a_graded_mlp_trend_agrees(experiment):
    verdict = _judge(experiment, _runs(level_of=lambda a: 0.2 + 0.8 * a, noise=0.01), graded=True)
    assert verdict.agrees, verdict.table()
    assert any("graded claim" in c.check and c.ok for c in verdict.checks)


def test_the_issue_22_levels_fail_the_graded_rule(experiment):
    """0.33 / 0.21 / 0.20 / 0.41 / 1.0 for a = 0 .. 1: identical beats independent, but the levels are not graded."""
    levels = {0.0: 0.33, 0.125: 0.21, 0.25: 0.20, 0.5: 0.41, 1.0: 1.0}
    runs = _runs(level_of=lambda a: levels[a], noise=0.01)
    runs.loc[runs.arch == "linear", "z_collapse_level"] = [1.0 if a == 1.0 else 0.0
                                                           for a in runs.loc[runs.arch == "linear", "a"]]
    verdict = _judge(experiment, runs, graded=True)
    failed = verdict.table().query("not ok").check
    assert not verdict.agrees and failed.str.contains("graded claim").any()
