"""The end-of-fit convergence check: a too-large learning rate and a frozen model are flagged, a settled run is not."""

import json
import warnings

import numpy as np
import pytest
import torch

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference import fit
from ppl_vae.inference.convergence import (MIN_STEPS, MOVE_RTOL, NotConvergedWarning, judge, kl_by_dimension,
                                          parameter_movement, rotation_free, snapshot_steps)
from ppl_vae.models import CVAEConfig, VAEConfig, build_model


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs(400, 6, correlation="noise_1_2", seed=0)


def _fit(pairs, lr, steps=600, **options):
    torch.manual_seed(0)
    return fit(build_model(CVAEConfig(6, 6, 4)), pairs, steps=steps, lr=lr, progress=False, device="cpu", **options)


def test_a_linear_cvae_with_lr_02_is_flagged_as_not_converged(pairs, tmp_path):
    with pytest.warns(NotConvergedWarning, match="training did not converge"):
        result = _fit(pairs, 0.2, run_dir=tmp_path / "run")
    assert result.convergence[0]["converged"] is False
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["converged"] is False and metrics["convergence"]["reason"] == result.convergence[0]["reason"]
    theory = metrics["theory"]  # the wrong count the warning is about
    assert theory["n_collapsed_measured"] != theory["n_collapsed_predicted"]


def test_a_settled_run_is_converged_without_a_warning(pairs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        result = _fit(pairs, 0.003, steps=1500)
    verdict = result.convergence[0]
    assert verdict["converged"] is True, verdict
    assert len(set(verdict["collapsed_counts"])) == 1


def test_short_runs_are_not_judged(pairs):
    assert snapshot_steps(MIN_STEPS - 1, 0) == [] and snapshot_steps(1000, 900) == []
    assert _fit(pairs, 0.01, steps=30).convergence[0]["converged"] is None


def _mlp_fit(pairs, lr, steps):
    torch.manual_seed(0)
    return fit(build_model(CVAEConfig(6, 6, 2, arch="mlp", hidden_dims=(8,))), pairs, steps=steps, lr=lr,
               progress=False, device="cpu")


def test_a_frozen_non_linear_model_is_never_settled(pairs):
    """lr 1e-12: flat loss, frozen KL, and still not converged (the parameters did not move)."""
    with pytest.warns(NotConvergedWarning, match="barely moved"):
        result = _mlp_fit(pairs, 1e-12, 300)
    verdict = result.convergence[0]
    assert verdict["converged"] is False and verdict["param_rel_change"] < MOVE_RTOL
    assert "barely moved" in verdict["reason"] and "loss" not in verdict["reason"]  # only the movement catches it


def test_a_non_linear_run_is_judged_on_its_loss_and_its_kl(pairs):
    short = _mlp_fit(pairs, 3e-3, 120).convergence[0]  # still learning at 120 steps
    assert short["converged"] is False and short["param_rel_change"] > MOVE_RTOL
    assert len(short["kl_collapsed_counts"]) >= 2


def test_parameter_movement_per_configuration():
    start = [torch.ones(3, 4), torch.zeros(3, 2)]
    end = [torch.ones(3, 4), torch.zeros(3, 2)]
    end[0][1] += 1.0  # only configuration 1 moved
    moved = parameter_movement(start, end, 3)
    np.testing.assert_allclose(moved, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(parameter_movement([torch.full((2, 2), 2.0)], [torch.full((2, 2), 3.0)], 1), [0.5])


def test_judge_reads_a_changing_count_a_drift_and_a_falling_loss():
    settled = [[np.array([1.0, 0.5, 0.01])] for _ in range(5)]
    flat = np.random.default_rng(0).normal(10.0, 0.01, size=(500, 1))
    assert judge(settled, flat, 1)[0]["converged"] is True
    flipping = [[np.array([1.0, 0.5, value])] for value in (0.01, 0.06, 0.01, 0.07, 0.02)]
    assert "collapsed count changed between 0 and 1" in judge(flipping, flat, 1)[0]["reason"]
    drifting = [[np.array([1.0, value, 0.01])] for value in (0.5, 0.45, 0.4, 0.35, 0.3)]
    assert "still drifting" in judge(drifting, flat, 1)[0]["reason"]
    falling = np.linspace(12.0, 10.0, 500)[:, None]
    assert "loss was still falling" in judge(settled, falling, 1)[0]["reason"]


def test_judge_leaves_collapsed_modes_noise_alone_but_reads_a_rise():
    """Every mode collapsed (a z2 that collapses entirely): SVI noise of a few thousandths is settled (it read as
    13% "jitter" of the 0.05 tolerance before); a collapsed mode climbing toward the tolerance is not."""
    flat = np.random.default_rng(0).normal(10.0, 0.01, size=(500, 1))
    noise = np.random.default_rng(1).uniform(-0.002, 0.002, size=(8, 4))
    settling = [[np.array([0.014, 0.008, 0.003, 0.001]) * (1.0 - 0.08 * i) + np.abs(noise[i])] for i in range(8)]
    verdict = judge(settling, flat, 1)[0]
    assert verdict["converged"] is True, verdict
    rising = [[np.array([0.002 + 0.004 * i, 0.008, 0.003, 0.001]) + np.abs(noise[i])] for i in range(8)]
    verdict = judge(rising, flat, 1)[0]
    assert verdict["converged"] is False and "rising toward the collapse tolerance" in verdict["reason"]
    assert verdict["collapsed_counts"] == [4] * 8  # the count alone did not catch it


def test_judge_reads_the_kl_metric_and_the_movement():
    flat = np.random.default_rng(0).normal(10.0, 0.01, size=(500, 1))
    steady = [[{"sv": None, "kl": np.array([1.0, 0.5, 0.001])}] for _ in range(4)]
    assert judge(steady, flat, 1, np.array([0.5]))[0]["converged"] is True
    assert "barely moved" in judge(steady, flat, 1, np.array([1e-6]))[0]["reason"]
    collapsing = [[{"sv": None, "kl": np.array([1.0, 0.5, 0.001]) * f}] for f in (1.0, 0.3, 0.01, 0.001)]
    reason = judge(collapsing, flat, 1, np.array([0.5]))[0]["reason"]
    assert "KL-collapsed dimension count changed between 1 and 3" in reason and "total KL still moved" in reason


def _train_linear_cvae(run_dir, steps: str, lr: str):
    """``ppl-vae train`` of a small linear CVAE on synthetic pairs; the click result."""
    from click.testing import CliRunner

    from ppl_vae.cli import main

    return CliRunner().invoke(main, ["train", "--model", "cvae", "--data", "synthetic", "--n-samples", "400",
                                     "--dim", "6", "--correlation", "noise_1_2", "--latent-dim", "4", "--steps",
                                     steps, "--lr", lr, "--device", "cpu", "--no-progress", "--out", str(run_dir)])


def test_cli_train_says_so_in_its_summary(tmp_path):
    result = _train_linear_cvae(tmp_path / "run", "600", "0.2")
    assert result.exit_code == 0, result.output
    assert "warning: training did not converge" in result.output and "converged false" in result.output


def test_cli_train_flags_a_frozen_model(tmp_path):
    """Issue 22: ``ppl-vae train ... --lr 1e-12 --steps 300`` is not 'settled'."""
    result = _train_linear_cvae(tmp_path / "run", "300", "1e-12")
    assert result.exit_code == 0, result.output
    assert "warning: training did not converge" in result.output and "barely moved" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["converged"] is False


def _kl_verdict(columns):
    """judge() of one configuration whose per-dimension KL (nats) reads ``columns[d]`` at the snapshots."""
    flat = np.random.default_rng(0).normal(10.0, 0.01, size=(500, 1))
    n = len(columns[0])
    kl = np.array([(1.0,) * n, (0.5,) * n, *columns]).T  # (snapshots, dims), two steady active dims first
    return judge([[{"sv": None, "kl": row}] for row in kl], flat, 1, np.array([0.5]))[0]


def test_dimensions_hovering_at_the_threshold_do_not_count_as_movement():
    # measured (per-class MLP CVAE, digit 7): two dimensions at the threshold flip the hard count 9 -> 11
    hovering = [(0.0102, 0.0099, 0.0100, 0.0100), (0.0100, 0.0099, 0.0099, 0.0098)]
    verdict = _kl_verdict(hovering)
    assert verdict["converged"] is True and verdict["kl_crossed_dims"] == 0
    assert np.ptp(verdict["kl_collapsed_counts"]) == 2  # the hard count alone would have failed it


def test_dimensions_crossing_the_threshold_while_moving_are_flagged():
    # measured (MHVAE, beta1 = beta2 = 1, 8,000 steps, final rate 0.1 of the first): minibatch noise moves them
    moving = [(0.0135, 0.0099, 0.0232, 0.0085), (0.0185, 0.015, 0.0069, 0.0069)]
    verdict = _kl_verdict(moving)
    assert verdict["converged"] is False and "2 dimensions crossed the collapse threshold" in verdict["reason"]
    # one that starts inside the band and leaves it counts too
    assert _kl_verdict([(0.0095, 0.02, 0.03, 0.05), (0.0105, 0.004, 0.002, 0.001)])["converged"] is False


def test_two_dimensions_crossing_in_opposite_directions_are_flagged():
    # the net count never changes (the hard count's range is 0), yet two dimensions swapped state
    swapped = [(0.002, 0.004, 0.015, 0.03), (0.03, 0.015, 0.004, 0.002)]
    verdict = _kl_verdict(swapped)
    assert np.ptp(verdict["kl_collapsed_counts"]) == 0
    assert verdict["converged"] is False and "2 dimensions crossed" in verdict["reason"]


def test_one_crossing_is_within_the_count_tolerance():
    assert _kl_verdict([(0.002, 0.004, 0.015, 0.03), (0.5, 0.5, 0.5, 0.5)])["converged"] is True


def _rotated(model, seed):
    """``model`` with its latent basis rotated (z -> R z): the encoder mean head times R, the decoder times R^T."""
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rotation, _ = torch.linalg.qr(noise)
    rotation = rotation.float()
    with torch.no_grad():
        model.encoder.loc.weight.copy_(rotation @ model.encoder.loc.weight)
        if model.encoder.loc.bias is not None:  # the linear model has none
            model.encoder.loc.bias.copy_(rotation @ model.encoder.loc.bias)
        model.decoder.weight.copy_(model.decoder.weight @ rotation.T)
    return model


def test_a_fixed_isotropic_vae_is_read_the_same_in_every_latent_basis():
    # its loss does not depend on the basis, so the readout must not either: per latent axis, two rotations of one
    # model read different KLs (a "crossing" where nothing trained), along the principal axes the same ones
    from ppl_vae.diagnostics.collapse import kl_per_dimension

    data = synthetic_gaussian(128, 6, seed=0)
    torch.manual_seed(0)
    model = build_model(VAEConfig(6, 4, eta_enc=1.5, encoder_std=0.8))
    assert rotation_free(model)
    before = kl_by_dimension(model, data)
    per_axis = kl_per_dimension(model, data, num_samples=1)["z"].values.mean(axis=0)
    after = kl_by_dimension(_rotated(model, 1), data)
    rotated_axis = kl_per_dimension(model, data, num_samples=1)["z"].values.mean(axis=0)
    assert np.abs(per_axis - rotated_axis).max() > 1e-2  # the axes' KLs do move
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(before.sum(), per_axis.sum(), rtol=1e-4)  # the same KL, redistributed
    assert np.all(np.diff(before) <= 0)


def test_a_learned_or_anisotropic_encoder_std_keeps_the_latent_axes():
    assert not rotation_free(build_model(VAEConfig(6, 4)))
    assert not rotation_free(build_model(VAEConfig(6, 4, encoder_std=(0.5, 0.5, 0.5, 0.8))))
    assert not rotation_free(build_model(CVAEConfig(6, 6, 4)))
