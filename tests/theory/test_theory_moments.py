"""Data statistics: second moments, VAE and CVAE spectra, rank deficiency, validation."""

import numpy as np
import pytest
import torch

from ppl_vae.theory import cvae_thetas, linear_cvae, linear_vae, residual_moment, second_moment, vae_thetas


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_second_moment_is_uncentred(rng):
    x = rng.normal(loc=3.0, size=(50, 4))
    y = rng.normal(size=(50, 2))
    np.testing.assert_allclose(second_moment(x), x.T @ x / 50)
    np.testing.assert_allclose(second_moment(x, y), x.T @ y / 50)
    # uncentred: the mean is NOT removed, so the diagonal exceeds the variance
    assert np.all(np.diag(second_moment(x)) > np.var(x, axis=0) + 4.0)


def test_torch_input_gives_the_same_float64_result(rng):
    x = rng.normal(size=(30, 3))
    from_torch = second_moment(torch.tensor(x, dtype=torch.float32, requires_grad=True))
    assert from_torch.dtype == np.float64
    np.testing.assert_allclose(from_torch, second_moment(x.astype(np.float32)))


def test_vae_thetas_are_square_roots_of_the_chosen_spectrum(rng):
    spectrum = np.array([9.0, 4.0, 1.0, 0.25])
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    x = 2.0 * np.diag(np.sqrt(spectrum)) @ rotation.T  # 4 rows with E[x x^T] = R diag(spectrum) R^T
    np.testing.assert_allclose(vae_thetas(x), np.sqrt(spectrum), rtol=1e-12)


def test_zero_columns_give_exactly_zero_thetas_and_collapsed_modes(rng):
    x = rng.normal(size=(40, 6))
    x[:, [1, 4]] = 0.0  # blank pixels
    theta = vae_thetas(x)
    assert np.all(theta[-2:] == 0.0) and np.all(theta[:-2] > 0)
    prediction = linear_vae(x, latent_dim=6, beta=1e-3)
    assert prediction.collapsed.values.tolist() == [False] * 4 + [True] * 2
    assert np.all(np.isfinite(prediction.encoder_sv.values))


def test_cvae_residual_matches_least_squares(rng):
    x = rng.normal(size=(80, 4))
    x[:, 2] = 0.0  # rank-deficient E[x x^T]
    y = x @ rng.normal(size=(4, 3)) + 0.3 * rng.normal(size=(80, 3))
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coefficients
    np.testing.assert_allclose(residual_moment(x, y), residual.T @ residual / 80, atol=1e-12)
    np.testing.assert_allclose(cvae_thetas(x, y), np.sort(np.linalg.eigvalsh(residual.T @ residual / 80))[::-1],
                               atol=1e-12)


def test_perfectly_predictable_y_has_zero_thetas_and_collapses(rng):
    x = rng.normal(size=(60, 3))
    y = x @ rng.normal(size=(3, 2))
    assert np.all(cvae_thetas(x, y) == 0.0)
    assert linear_cvae(x, y, latent_dim=2, beta=1e-6).collapsed.values.all()


@pytest.mark.parametrize("bad, message", [
    (np.array([[1.0, np.nan]]), "x"),
    (np.array([[1.0, np.inf]]), "x"),
    (np.ones(3), "x"),
    (np.ones((2, 2, 2)), "x"),
    (np.ones((0, 3)), "x"),
])
def test_bad_data_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        vae_thetas(bad)


def test_mismatched_pairs_are_rejected(rng):
    with pytest.raises(ValueError, match="y"):
        cvae_thetas(rng.normal(size=(10, 2)), rng.normal(size=(9, 2)))
    with pytest.raises(ValueError, match="y"):
        cvae_thetas(rng.normal(size=(10, 2)), np.full((10, 2), np.nan))
