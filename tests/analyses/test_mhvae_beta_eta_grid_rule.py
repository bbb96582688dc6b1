"""The MHVAE NLL / KL / AU table (SPEC 6.6, appendix) rule says yes to the expected table and no to its
counterfactuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import Settings, default_analyses_dir, load_script, seed_summary

D2 = 16
BETAS = (0.25, 0.5, 1.0, 2.0, 3.0)
ETAS = (0.25, 0.5, 0.7, 1.0, 2.0)
#: The claimed shape (Theorem 3's counts on the 8x8 digits): z2 collapsed dimensions along each line.
ALONG_BETA1 = (15, 12, 10, 0, 0)
ALONG_BETA2 = (0, 0, 10, 15, 15)
ALONG_ETA_DEC = (0, 10, 15, 15, 16)
METRICS = ["z2_collapse_level", "z2_active_units", "z2_kl_total", "nll"]


@pytest.fixture(scope="module")
def experiment():
    return load_script("mhvae_beta_eta_grid", default_analyses_dir())


def _runs(along_beta1=ALONG_BETA1, along_beta2=ALONG_BETA2, along_eta_dec=ALONG_ETA_DEC, nll_beta1=None,
          nll_beta2=None, n_seeds=3, noise=0.0, seed=0):
    """A runs table: z2's collapsed count sets its collapse level, active units and KL (1 nat per live dimension);
    the NLL rises with the KL weight away from 1 unless given."""
    rng = np.random.default_rng(seed)
    nll_beta1 = nll_beta1 or (23.2, 23.0, 22.8, 23.4, 24.0)
    nll_beta2 = nll_beta2 or (24.5, 23.0, 22.8, 23.3, 23.6)
    cells = {}
    for b, n, nll in zip(BETAS, along_beta1, nll_beta1):
        cells[(b, 1.0, 0.5)] = (n, nll)
    for b, n, nll in zip(BETAS, along_beta2, nll_beta2):
        cells[(1.0, b, 0.5)] = (n, nll)
    for e, n in zip(ETAS, along_eta_dec):
        cells.setdefault((1.0, 1.0, e), (n, 20.0 + 40 * e))
    rows = []
    for (b1, b2, e), (collapsed, nll) in cells.items():
        for s in range(n_seeds):
            jitter = rng.normal(0, noise) if noise else 0.0
            live = float(np.clip(D2 - collapsed - jitter, 0, D2))
            rows.append({"beta1": b1, "beta2": b2, "eta_dec": e, "seed": s, "z2_collapse_level": 1 - live / D2,
                         "z2_active_units": live, "z2_kl_total": live,
                         "nll": nll + (rng.normal(0, 0.1) if noise else 0.0)})
    return pd.DataFrame(rows)


def _judge(experiment, runs):
    return experiment.judge(seed_summary(runs, ["beta1", "beta2", "eta_dec"], METRICS), D2)


def _failed(verdict):
    return [c.check for c in verdict.checks if not c.ok]


def test_the_expected_table_agrees(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, _failed(verdict)
    assert verdict.n_seeds == 3
    # three metrics on three lines (4 steps + the end-to-end change each), and two NLL checks
    assert len(verdict.checks) == 3 * 3 * 5 + 2


def test_half_a_dimension_of_seed_noise_is_tolerated(experiment):
    assert _judge(experiment, _runs(noise=0.5, seed=1)).agrees


def test_the_opposite_beta2_trend_is_refused(experiment):
    verdict = _judge(experiment, _runs(along_beta2=ALONG_BETA2[::-1]))
    assert not verdict.agrees
    assert "beta1 1, eta_dec 0.5: z2_collapse_level, beta2 0.25 -> 3 overall" in _failed(verdict)


def test_a_wrong_signed_beta1_effect_is_refused(experiment):
    verdict = _judge(experiment, _runs(along_beta1=(0, 0, 10, 12, 15)))
    failed = _failed(verdict)
    assert not verdict.agrees
    assert "beta2 1, eta_dec 0.5: z2_active_units, beta1 0.25 -> 3 overall" in failed
    assert not any("beta2 0.25" in check or "eta_dec 0.25 ->" in check for check in failed)  # the others hold


def test_no_eta_dec_effect_is_refused(experiment):
    verdict = _judge(experiment, _runs(along_eta_dec=(10, 10, 10, 10, 10)))
    assert not verdict.agrees
    assert all(check.startswith("beta1 1, beta2 1:") and check.endswith("eta_dec 0.25 -> 2 overall")
               for check in _failed(verdict))


def test_a_reversing_step_is_refused_where_it_is(experiment):
    verdict = _judge(experiment, _runs(along_eta_dec=(0, 10, 6, 15, 16)))  # 0.5 -> 0.7 revives four dimensions
    assert not verdict.agrees
    assert _failed(verdict) == [f"beta1 1, beta2 1: {metric}, eta_dec 0.5 -> 0.7"
                                for metric in ("z2_collapse_level", "z2_active_units", "z2_kl_total")]


def test_a_better_nll_at_beta2_3_is_refused(experiment):
    verdict = _judge(experiment, _runs(nll_beta2=(24.5, 23.0, 22.8, 21.0, 20.5)))  # 2.3 nats below beta2 = 1
    assert _failed(verdict) == ["beta1 1, eta_dec 0.5: nll, beta2 3 minus beta2 1"]


def test_a_better_nll_at_beta1_3_is_refused(experiment):
    verdict = _judge(experiment, _runs(nll_beta1=(23.2, 23.0, 22.8, 22.5, 21.9)))
    assert _failed(verdict) == ["beta2 1, eta_dec 0.5: nll, beta1 3 minus beta1 1"]


def test_the_nll_along_eta_dec_is_not_judged(experiment):
    runs = _runs()
    on_eta = (runs.beta1 == 1.0) & (runs.beta2 == 1.0) & (runs.eta_dec != 0.5)
    runs.loc[on_eta, "nll"] = -100.0
    assert _judge(experiment, runs).agrees


def test_one_seed_of_noise_is_not_a_trend(experiment):
    # a flat line whose one seed moves by two dimensions: the end-to-end change stays inside the allowance
    runs = _runs(along_eta_dec=(10, 10, 10, 10, 10))
    at = (runs.eta_dec == 2.0) & (runs.seed == 0)
    runs.loc[at, ["z2_collapse_level", "z2_active_units", "z2_kl_total"]] = [12 / D2, 4.0, 4.0]
    assert not _judge(experiment, runs).agrees


def test_the_plan_counts_the_configurations_each_scale_trains(experiment, tmp_path):
    (group,) = experiment.plan(Settings("quick", tmp_path))
    assert (group.configs, group.seeds, group.vectorised) == (13, 3, True)  # 3 lines of 5 sharing (1, 1, 0.5)
    assert group.steps == experiment.QUICK_STEPS
    (group,) = experiment.plan(Settings("full", tmp_path))
    assert (group.configs, group.seeds) == (13, 5) and group.steps > experiment.QUICK_STEPS
