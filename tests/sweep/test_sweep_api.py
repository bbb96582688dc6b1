"""run_sweep: grids, the choice of path, and agreement with separate runs and the theory."""

import numpy as np
import pytest
import torch

from ppl_vae.data import synthetic_pairs
from ppl_vae.models import CVAEConfig, MHVAEConfig
from ppl_vae.sweep import LocalBackend, expand_grid, get_backend, plan_tasks, run_sweep
from ppl_vae.theory import linear_cvae


BASE = CVAEConfig(x_dim=4, y_dim=4, latent_dim=2)


def test_expand_grid_is_the_cartesian_product_with_seeds():
    configs, seeds = expand_grid(BASE, {"beta": [0.5, 2.0], "eta_dec": [0.25, 1.0, 2.0], "seed": [7]})
    assert len(configs) == 6
    assert {(c.beta, c.eta_dec) for c in configs} == {(b, e) for b in (0.5, 2.0) for e in (0.25, 1.0, 2.0)}
    assert seeds == [7] * 6
    assert all(c.latent_dim == 2 for c in configs)


@pytest.mark.parametrize("grid, match", [
    ({"gamma": [1.0]}, "gamma"),
    ({"beta": []}, "non-empty"),
    ({}, "at least one"),
    ({"beta": [-1.0]}, "beta"),
])
def test_expand_grid_rejects_bad_grids(grid, match):
    with pytest.raises(ValueError, match=match):
        expand_grid(BASE, grid)


def test_plan_chooses_the_vectorised_path_only_for_a_shared_architecture():
    configs, seeds = expand_grid(BASE, {"beta": [0.5, 1.0]})
    assert [t.vectorised for t in plan_tasks(configs, seeds, {}, "auto")] == [True]
    assert [t.vectorised for t in plan_tasks(configs, seeds, {}, "never")] == [False, False]
    mixed = [BASE, CVAEConfig(x_dim=4, y_dim=4, latent_dim=3)]
    tasks = plan_tasks(mixed, [0, 0], {}, "auto")
    assert [t.vectorised for t in tasks] == [False, False] and [t.index for t in tasks] == [(0,), (1,)]
    with pytest.raises(ValueError, match="latent_dim"):
        plan_tasks(mixed, [0, 0], {}, "always")
    with pytest.raises(ValueError, match="vectorise"):
        plan_tasks(configs, seeds, {}, "sometimes")


def test_backends_by_name():
    assert isinstance(get_backend("local"), LocalBackend)
    with pytest.raises(ValueError, match="backend"):
        get_backend("carrier-pigeon")


def test_mixed_architectures_run_one_by_one_and_come_back_in_order():
    data = synthetic_pairs(64, 4, seed=0)
    configs = [BASE, CVAEConfig(x_dim=4, y_dim=4, latent_dim=2, arch="mlp", hidden_dims=(4,))]
    result = run_sweep(None, configs, data, steps=3, device="cpu")
    assert result.path == "separate"
    assert [m.config for m in result.models] == configs
    assert result.dataset.loss.shape == (2, 3)
    assert "decoder_sv" not in result.dataset  # the readout needs every model linear


def test_mhvae_sweep_is_vectorised_and_returns_ordinary_models():
    from ppl_vae.data import synthetic_gaussian

    data = synthetic_gaussian(64, 6, seed=0)
    base = MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(8,))
    result = run_sweep(base, {"beta2": [0.5, 2.0]}, data, steps=5, batch_size=32, device="cpu")
    assert result.path == "vectorised"
    assert list(result.dataset.beta2.values) == [0.5, 2.0]
    assert [type(m).__name__ for m in result.models] == ["MHVAE", "MHVAE"]
    w0, w1 = (m.decoder1[0].weight for m in result.models)
    assert not torch.equal(w0, w1)  # each model got its own trained slice


def test_cnn_seeds_train_as_one_task_and_equal_separate_runs():
    """The CNN's seeds (here of one digit-like 8x8 image set) are one batched task; each equals its own run."""
    data = synthetic_pairs(64, 16, y_dim=48, seed=0)
    base = CVAEConfig(16, 48, 2, arch="cnn", image_shape=(8, 8), split="quadrant", hidden_dims=(8,))
    options = {"steps": 4, "batch_size": 16, "lr": 1e-3, "device": "cpu", "diagnostics": False, "readout": False}
    together = run_sweep(base, {"seed": [0, 1, 2]}, data, **options)
    apart = run_sweep(base, {"seed": [0, 1, 2]}, data, vectorise="never", **options)
    assert (together.path, apart.path) == ("vectorised", "separate")
    np.testing.assert_allclose(together.dataset.loss.values, apart.dataset.loss.values, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(together.models, apart.models):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_vectorised_sweep_matches_separate_runs_and_the_theory():
    """Each configuration: decoder singular values of the modes the theory keeps within 3%
    of the closed form and of its own separate run (same seed); the same number of
    collapsed modes (singular value below the readout's tolerance) as predicted."""
    data = synthetic_pairs(500, 4, seed=0, spectrum=[4.0, 2.0, 1.0, 0.5])
    grid = {"beta": [0.5, 2.0], "eta_dec": [0.5, 1.0]}
    # The closed form describes the rows trained on: hold none out here.
    options = {"steps": 800, "lr": 0.05, "lr_decay": 0.997, "device": "cpu", "seed": 2, "test_fraction": 0.0,
               "diagnostics": False}
    together = run_sweep(BASE, grid, data, **options)
    apart = run_sweep(BASE, grid, data, vectorise="never", **options)
    assert (together.path, apart.path) == ("vectorised", "separate")
    for k, config in enumerate(together.configs):
        theory = linear_cvae(data.x, data.y, 2, beta=config.beta, eta_dec=config.eta_dec)
        predicted = theory.decoder_sv.values
        alive = ~theory.collapsed.values  # a relative error to a zero singular value is undefined
        vectorised = together.dataset.decoder_sv.sel(config=k).values[alive]
        separate = apart.dataset.decoder_sv.sel(config=k).values[alive]
        np.testing.assert_allclose(vectorised, predicted[alive], rtol=0.03, err_msg=str(config))
        np.testing.assert_allclose(vectorised, separate, rtol=0.03, err_msg=str(config))
        n_collapsed = int(theory.collapsed.sum())
        assert int(together.dataset.collapsed.sel(config=k).sum()) == n_collapsed
        assert int(apart.dataset.collapsed.sel(config=k).sum()) == n_collapsed
    assert int(theory.collapsed.sum()) > 0  # the grid reaches collapse


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sweep_on_the_gpu_returns_cpu_models():
    data = synthetic_pairs(128, 4, seed=0)
    result = run_sweep(BASE, {"beta": [0.5, 2.0]}, data, steps=10, batch_size=32, device="cuda")
    assert result.path == "vectorised" and result.dataset.attrs["device"].startswith("cuda")
    assert all(p.device.type == "cpu" for m in result.models for p in m.parameters())


def test_sweep_refuses_data_that_does_not_fit_before_training():
    bundle = synthetic_pairs(40, 4, seed=0)
    with pytest.raises(ValueError, match=r"data y must have shape \(n, 6\)"):
        run_sweep(CVAEConfig(4, 6, 2, arch="linear"), {"beta": [0.5, 1.0]}, bundle, steps=1, device="cpu")


def test_vectorised_sweep_diagnostics_equal_diagnose_of_each_model():
    """The batched diagnostics of a vectorised task: configuration k's is diagnose of model k on the held-out rows."""
    import xarray as xr

    from ppl_vae.diagnostics import diagnose
    from ppl_vae.sweep.api import held_out_rows

    data = synthetic_pairs(80, 4, seed=0)
    options = {"iw_samples": 12, "n_obs": 4, "n_draws": 5, "kl_samples": 3, "seed": 1, "max_points": 10}
    base = CVAEConfig(x_dim=4, y_dim=4, latent_dim=2, arch="mlp", hidden_dims=(6,))
    result = run_sweep(base, {"beta": [0.5, 1.0, 2.0], "seed": [4]}, data, steps=4, batch_size=16, device="cpu",
                       test_fraction=0.25, diagnostics=options)
    assert result.path == "vectorised" and len(result.diagnostics) == 3
    diagnose_options = dict(options)
    train, test = held_out_rows(data, 0.25, 0, diagnose_options.pop("max_points"), seed=options["seed"])
    for model, idata in zip(result.models, result.diagnostics):
        with model.unregistered():
            alone = diagnose(model, train, test_data=test, progress=False, **diagnose_options)
        assert idata.groups() == alone.groups()
        for group in alone.groups():
            xr.testing.assert_allclose(idata[group], alone[group], rtol=1e-4, atol=1e-5)
    assert len({idata.metrics.iw_log_likelihood.item() for idata in result.diagnostics}) == 3
