"""The per-dimension KL history fit records (the shared ``kl_history`` contract) and kl_history.nc."""

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from torch.distributions import Normal, kl_divergence

from ppl_vae.data import synthetic_gaussian
from ppl_vae.inference import fit
from ppl_vae.inference.kl_history import is_record_step, kl_every_default
from ppl_vae.models import MHVAEConfig, VAEConfig, build_model


@pytest.fixture(scope="module")
def gaussian():
    return synthetic_gaussian(60, 4, seed=3)


def _vae(seed=0, **options):
    torch.manual_seed(seed)
    return build_model(VAEConfig(input_dim=4, latent_dim=3, beta=2.0, **options))


def test_the_first_record_is_each_dimensions_kl_at_the_initial_weights_without_beta(gaussian):
    model = _vae()
    initial = copy.deepcopy(model)
    result = fit(model, gaussian, steps=3, kl_every=1, progress=False)
    loc, scale = initial.encoder(gaussian.x)
    expected = kl_divergence(Normal(loc, scale), Normal(0.0, initial.config.eta_enc)).mean(0)
    history = result.kl_history
    assert history["z_kl"].dims == ("step", "z_dim") and list(history["step"].values) == [1, 2, 3]
    np.testing.assert_allclose(history["z_kl"].sel(step=1).values, expected.detach().numpy(), rtol=1e-5)
    assert history.attrs == {"rows": "training", "source": "fit", "collapse_epsilon": 0.01}
    assert history["z_kl"].attrs["units"] == "nats"


def test_records_every_kl_every_steps_and_at_the_end():
    assert [d for d in range(1, 26) if is_record_step(d, 10, 25)] == [10, 20, 25]
    assert not any(is_record_step(d, 0, 25) for d in range(1, 26))
    assert kl_every_default(30_000) == 300 and kl_every_default(50) == 1


def test_a_run_directory_keeps_the_history_and_a_resume_continues_it(tmp_path, gaussian):
    straight = fit(_vae(), gaussian, steps=20, batch_size=16, kl_every=5, progress=False).kl_history
    run_dir = tmp_path / "run"
    fit(_vae(), gaussian, steps=10, batch_size=16, kl_every=5, progress=False, run_dir=run_dir, checkpoint_every=5)
    resumed = fit(_vae(), gaussian, steps=20, batch_size=16, kl_every=5, progress=False, run_dir=run_dir,
                  resume=True).kl_history
    assert list(resumed["step"].values) == [5, 10, 15, 20]
    xr.testing.assert_identical(resumed, straight)
    xr.testing.assert_identical(xr.load_dataset(run_dir / "kl_history.nc"), straight)


def test_several_configurations_get_a_config_dimension_and_an_mhvae_both_sites(gaussian):
    models = [_vae(0), _vae(1)]
    history = fit(models, gaussian, steps=4, seed=[0, 1], kl_every=2, progress=False).kl_history
    assert history["z_kl"].dims == ("config", "step", "z_dim") and history["z_kl"].shape == (2, 2, 3)
    history = fit([_vae(0)], gaussian, steps=4, seed=[0], kl_every=2, progress=False).kl_history
    assert history["z_kl"].shape == (1, 2, 3)
    torch.manual_seed(0)
    mhvae = build_model(MHVAEConfig(input_dim=4, latent_dims=(3, 2), arch="mlp", hidden_dims=(5,)))
    history = fit(mhvae, gaussian, steps=4, kl_every=0, progress=False).kl_history
    assert history is None
    history = fit(mhvae, gaussian, steps=4, progress=False).kl_history
    assert history["z1_kl"].shape == (4, 3) and history["z2_kl"].shape == (4, 2)
    assert np.all(history["z1_kl"].values >= 0) and np.all(history["z2_kl"].values >= 0)
