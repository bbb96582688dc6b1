"""collapse_thresholds: just below a threshold k modes are active, just above k - 1."""

import numpy as np
import pytest

from ppl_vae.theory import collapse_thresholds, linear_cvae, linear_vae

RELATIVE_STEP = 1e-6


def vae_data(rng, dim=5):
    theta = np.sort(rng.uniform(0.2, 3.0, size=dim))[::-1]
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return np.sqrt(dim) * np.diag(theta) @ rotation.T


def cvae_data(rng):
    x = rng.normal(size=(200, 3))
    y = x @ rng.normal(size=(3, 4)) + rng.normal(size=(200, 4)) * np.array([2.0, 1.2, 0.7, 0.3])
    return x, y


def n_active(model, data, latent_dim, **kwargs):
    fit = linear_vae if model == "vae" else linear_cvae
    return latent_dim - fit(*data, latent_dim, **kwargs).attrs["n_collapsed"]


@pytest.mark.parametrize("model", ["vae", "cvae"])
@pytest.mark.parametrize("seed", range(4))
def test_active_count_changes_by_one_across_each_threshold(model, seed):
    rng = np.random.default_rng(seed)
    data = (vae_data(rng),) if model == "vae" else cvae_data(rng)
    latent_dim, beta, eta_dec, eta_enc = 4, rng.uniform(0.5, 2), rng.uniform(0.3, 1.0), rng.uniform(0.5, 2)
    table = collapse_thresholds(*data, model=model, latent_dim=latent_dim, beta=beta, eta_dec=eta_dec,
                                eta_enc=eta_enc)
    assert table.n_active.values.tolist() == list(range(latent_dim + 1))
    assert np.isinf(table.beta_max.sel(n_active=0)) and np.isinf(table.eta_dec_max.sel(n_active=0))
    for k in range(1, latent_dim + 1):
        beta_k = float(table.beta_max.sel(n_active=k))
        eta_k = float(table.eta_dec_max.sel(n_active=k))
        common = dict(eta_enc=eta_enc)
        assert n_active(model, data, latent_dim, beta=beta_k * (1 - RELATIVE_STEP), eta_dec=eta_dec, **common) == k
        assert n_active(model, data, latent_dim, beta=beta_k * (1 + RELATIVE_STEP), eta_dec=eta_dec, **common) == k - 1
        assert n_active(model, data, latent_dim, beta=beta, eta_dec=eta_k * (1 - RELATIVE_STEP), **common) == k
        assert n_active(model, data, latent_dim, beta=beta, eta_dec=eta_k * (1 + RELATIVE_STEP), **common) == k - 1


def test_thresholds_do_not_depend_on_eta_enc():
    x = vae_data(np.random.default_rng(3))
    first = collapse_thresholds(x, model="vae", latent_dim=3, eta_enc=0.5)
    second = collapse_thresholds(x, model="vae", latent_dim=3, eta_enc=4.0)
    np.testing.assert_array_equal(first.beta_max.values, second.beta_max.values)


def test_blank_direction_cannot_be_kept_active():
    x = vae_data(np.random.default_rng(4), dim=3)
    x[:, 2] = 0.0
    table = collapse_thresholds(x, model="vae", latent_dim=3)
    assert float(table.beta_max.sel(n_active=3)) == 0.0
    assert float(table.beta_max.sel(n_active=2)) > 0.0


def test_bad_arguments_are_rejected():
    rng = np.random.default_rng(5)
    x, y = cvae_data(rng)
    with pytest.raises(ValueError, match="model"):
        collapse_thresholds(x, y, model="mhvae", latent_dim=2)
    with pytest.raises(ValueError, match="y"):
        collapse_thresholds(x, model="cvae", latent_dim=2)
    with pytest.raises(ValueError, match="y"):
        collapse_thresholds(x, y, model="vae", latent_dim=2)
    with pytest.raises(ValueError, match="latent_dim"):
        collapse_thresholds(x, y, model="cvae", latent_dim=5)
    for name in ("beta", "eta_dec", "eta_enc"):
        with pytest.raises(ValueError, match=name):
            collapse_thresholds(x, y, model="cvae", latent_dim=2, **{name: 0.0})
