"""The MHVAE reconstruction grid (SPEC 6.6) rule says yes to the expected table and no to its
counterfactuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppl_vae.reproduce import Settings, default_analyses_dir, load_script, seed_summary

D2 = 8
GRID = [1.0, 4.0, 16.0]
METRICS = ["z2_collapse_level", "topdown_mse"]


@pytest.fixture(scope="module")
def experiment():
    return load_script("mhvae_reconstruction_grid", default_analyses_dir())


def _theory(beta1: float, beta2: float) -> int:
    """Collapsed z2 dimensions of the claimed shape: z2 collapses when beta2 >= beta1 (Theorem 3 on the digits)."""
    return 7 if beta2 >= beta1 else 0


def _runs(collapsed=_theory, topdown=None, n_seeds=3, noise=0.0, seed=0):
    """z2's collapsed count per cell sets its collapse level; the top-down error follows it unless given."""
    rng = np.random.default_rng(seed)
    topdown = topdown or (lambda b1, b2, n: 0.02 + 0.06 * n / D2)
    rows = []
    for b1 in GRID:
        for b2 in GRID:
            n = collapsed(b1, b2)
            for s in range(n_seeds):
                jitter = rng.normal(0, noise) if noise else 0.0
                rows.append({"beta1": b1, "beta2": b2, "seed": s,
                             "z2_collapse_level": float(np.clip((n + jitter) / D2, 0, 1)),
                             "topdown_mse": topdown(b1, b2, n) + jitter / 1000})
    return pd.DataFrame(rows)


def _judge(experiment, runs):
    return experiment.judge(seed_summary(runs, ["beta1", "beta2"], METRICS), D2, GRID)


def _failed(verdict):
    return [c.check for c in verdict.checks if not c.ok]


def test_the_expected_grid_agrees(experiment):
    verdict = _judge(experiment, _runs())
    assert verdict.agrees, _failed(verdict)
    assert len(verdict.checks) == 2 * 2 * 3  # two metrics on two edges: two steps and the end-to-end change


def test_seed_noise_is_tolerated(experiment):
    assert _judge(experiment, _runs(noise=0.5, seed=3)).agrees


def test_no_beta_effect_is_refused(experiment):
    verdict = _judge(experiment, _runs(collapsed=lambda b1, b2: 7))  # z2 collapsed in every cell
    assert set(_failed(verdict)) == {f"{edge}: {metric}, {along} 1 -> 16 overall"
                                     for edge, along in (("beta1 16", "beta2"), ("beta2 1", "beta1"))
                                     for metric in METRICS}


def test_a_z2_collapse_without_the_image_loss_is_refused(experiment):
    # z2's KL says collapsed, but the reconstructions through z2 do not get worse: the claim about images fails
    verdict = _judge(experiment, _runs(topdown=lambda b1, b2, n: 0.02))
    assert set(_failed(verdict)) == {"beta1 16: topdown_mse, beta2 1 -> 16 overall",
                                     "beta2 1: topdown_mse, beta1 1 -> 16 overall"}


def test_the_opposite_beta2_trend_is_refused(experiment):
    verdict = _judge(experiment, _runs(collapsed=lambda b1, b2: 7 if b2 <= 1.0 < b1 else _theory(b1, b2) * (b2 < 16)))
    assert not verdict.agrees
    assert "beta1 16: z2_collapse_level, beta2 1 -> 16 overall" in _failed(verdict)


def test_cells_off_the_judged_edges_are_not_judged(experiment):
    runs = _runs()
    inner = (runs.beta1 < 16) & (runs.beta2 > 1)
    runs.loc[inner, ["z2_collapse_level", "topdown_mse"]] = [0.0, 0.0]
    assert _judge(experiment, runs).agrees


def test_the_reconstruction_goes_through_z2(experiment):
    import torch

    from ppl_vae.models import MHVAEConfig, build_model

    torch.manual_seed(0)
    model = build_model(MHVAEConfig(64, (4, 4), arch="cnn", hidden_dims=(8,), image_shape=(8, 8), sigma1=0.5))
    x = torch.rand(10, 64)
    first = experiment.topdown(model, x)
    assert first.shape == x.shape
    with torch.no_grad():  # q(z2 | z1) that ignores z1: every image reconstructs to the same one through z2
        for parameter in model.encoder2.parameters():
            parameter.zero_()
    cut = experiment.topdown(model, x)
    assert torch.allclose(cut, cut[:1].expand_as(cut))
    metrics = experiment.reconstruction_metrics(model, x)
    assert metrics["topdown_mse"] == pytest.approx(float(((cut - x) ** 2).mean()))
    assert metrics["direct_mse"] != pytest.approx(metrics["topdown_mse"])  # z1's direct path is untouched


def test_the_plan_counts_the_grid_as_one_vectorised_run(experiment, tmp_path):
    (group,) = experiment.plan(Settings("quick", tmp_path))  # quick: the MLP maps, one vectorised run
    assert (group.configs, group.seeds, group.steps, group.vectorised) == (9, 3, experiment.QUICK_STEPS, True)
    assert group.sequential_steps == experiment.QUICK_STEPS
    (group,) = experiment.plan(Settings("full", tmp_path))  # full: the authors' CNN, 5 x 5, batched convolutions
    assert (group.configs, group.seeds, group.vectorised) == (25, 5, True)
    assert group.sequential_steps == group.steps
