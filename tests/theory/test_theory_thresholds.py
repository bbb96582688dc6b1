"""collapse_thresholds: just below a threshold k modes are active, just above k - 1."""

import numpy as np
import pytest

from ppl_vae.theory import (
    collapse_thresholds,
    data_scale_eta_dec,
    linear_cvae,
    linear_mhvae,
    linear_vae,
    mhvae_collapse_thresholds,
    mhvae_thresholds_from_spectrum,
    numeric_linear_mhvae,
    thresholds_from_spectrum,
    vae_thetas,
)

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


# ---------------------------------------------------------------- MHVAE (Theorem 3, Sigma2 learnable)
MHVAE_LIMITS = {  # variable -> (level, hyper-parameter, side on which the k-th mode stays active)
    "z1_beta2_max": ("z1", "beta2", "below"), "z1_eta_dec_max": ("z1", "eta_dec", "below"),
    "z1_beta1_max": ("z1", "beta1", "below"), "z2_beta2_max": ("z2", "beta2", "below"),
    "z2_eta_dec_max": ("z2", "eta_dec", "below"), "z2_beta1_min": ("z2", "beta1", "above"),
}


def mhvae_setting(seed):
    """Data with a well-spread spectrum (ratio >= 1.8 between modes) and Theorem-3 hyper-parameters."""
    rng = np.random.default_rng(100 + seed)
    dim = 4
    theta = np.sort(1.5 * 1.9 ** -np.arange(dim) * rng.uniform(0.95, 1.05, size=dim))[::-1]
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    x = np.sqrt(dim) * np.diag(theta) @ rotation.T
    dims = [(4, 4), (4, 2), (2, 4), (3, 3)][seed % 4]
    # half the settings in case A (sqrt(beta1) sigma1 > sqrt(beta2) eta_dec), half in B/C
    sigma1 = 0.9 if seed % 2 == 0 else 0.35
    hyper = dict(beta1=float(rng.uniform(0.6, 1.5)), beta2=float(rng.uniform(0.6, 1.5)), eta_dec=0.5, sigma1=sigma1)
    return x, dims, hyper


def closed_form_active(x, dims, hyper):
    result = linear_mhvae(x, dims, **hyper)
    return {level: int((~result[f"{level}_collapsed"] & result[f"in_{level}"]).sum()) for level in ("z1", "z2")}


def numeric_active(x, dims, hyper, seed):
    result = numeric_linear_mhvae(x, dims, **hyper, n_restarts=3, seed=seed)
    active = lambda values: int(np.sum(np.nan_to_num(values, nan=0.0) > 1e-3))  # noqa: E731
    return {"z1": active(result.z1_encoder_sv.values), "z2": active(result.z2_decoder_sv.values)}


def finite_thresholds(table):
    """(variable, k, value) for every finite, positive threshold of the table (k >= 1)."""
    for name in MHVAE_LIMITS:
        for k in table.n_active.values[1:]:
            value = float(table[name].sel(n_active=k))
            if np.isfinite(value) and value > 0:
                yield name, int(k), value


def moved(hyper, name, value, factor):
    level, parameter, safe = MHVAE_LIMITS[name]
    return {**hyper, parameter: value * factor}, level, safe


@pytest.mark.parametrize("seed", range(8))
def test_mhvae_thresholds_match_the_closed_form_on_both_sides(seed):
    x, dims, hyper = mhvae_setting(seed)
    table = mhvae_collapse_thresholds(x, dims, **hyper)
    checked = 0
    for name, k, value in finite_thresholds(table):
        for factor, expect_active in ((1 - RELATIVE_STEP, True), (1 + RELATIVE_STEP, False)):
            setting, level, safe = moved(hyper, name, value, factor)
            active = closed_form_active(x, dims, setting)[level] >= k
            assert active == (expect_active if safe == "below" else not expect_active), (name, k, value, factor)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("seed", [1, 2, 3])  # together they cover all six thresholds, cases A and B/C
def test_mhvae_thresholds_match_direct_minimisation(seed):
    """Each side of each threshold (15% away: closer, the loss is too flat for the optimiser) against L-BFGS.

    The active counts come from the minimiser's singular values only (> 1e-3), never from the closed form.
    """
    x, dims, hyper = mhvae_setting(seed)
    table = mhvae_collapse_thresholds(x, dims, **hyper)
    checked = set()
    for name, k, value in finite_thresholds(table):
        for factor, expect_active in ((0.85, True), (1.15, False)):
            setting, level, safe = moved(hyper, name, value, factor)
            active = numeric_active(x, dims, setting, seed)[level] >= k
            assert active == (expect_active if safe == "below" else not expect_active), (name, k, value, factor)
        checked.add(name)
    assert len(checked) >= 3


def test_direct_minimisation_settings_cover_every_threshold():
    names = set()
    for seed in (1, 2, 3):
        x, dims, hyper = mhvae_setting(seed)
        names |= {name for name, _, _ in finite_thresholds(mhvae_collapse_thresholds(x, dims, **hyper))}
    assert names == set(MHVAE_LIMITS)


def test_mhvae_infinite_and_impossible_thresholds_are_what_the_closed_form_says():
    x, dims, hyper = mhvae_setting(0)  # case A: a large fixed sigma1 keeps every coupled z2 mode
    table = mhvae_collapse_thresholds(x, (4, 2), **hyper)
    # no z2 partner for z1 modes 2, 3: no eta_dec rescues them once theta <= sqrt(beta1) sigma1
    for k in (3, 4):
        value = float(table.z1_eta_dec_max.sel(n_active=k))
        assert value == 0.0 or np.isinf(value)
        if np.isinf(value):
            assert closed_form_active(x, (4, 2), {**hyper, "eta_dec": 50.0})["z1"] >= k
    # z2 has only two modes
    assert np.isnan(float(table.z2_beta2_max.sel(n_active=3)))
    wide = mhvae_collapse_thresholds(x, (2, 4), **hyper)
    assert float(wide.z2_beta2_max.sel(n_active=3)) == 0.0 and np.isinf(float(wide.z2_beta1_min.sel(n_active=3)))
    assert closed_form_active(x, (2, 4), {**hyper, "beta2": 1e-4})["z2"] == 2


def test_mhvae_thresholds_from_spectrum_agree_with_the_data_version_and_reject_bad_input():
    x, dims, hyper = mhvae_setting(1)
    from_data = mhvae_collapse_thresholds(x, dims, **hyper)
    from_theory = mhvae_thresholds_from_spectrum(linear_mhvae(x, dims, **hyper).theta.values, dims, **hyper)
    for name in MHVAE_LIMITS:
        np.testing.assert_array_equal(from_data[name].values, from_theory[name].values)
    with pytest.raises(ValueError, match="theta"):
        mhvae_thresholds_from_spectrum([1.0], (2, 2))
    with pytest.raises(ValueError, match="beta2"):
        mhvae_collapse_thresholds(x, dims, beta2=0.0)
    with pytest.raises(ValueError, match="latent_dims"):
        mhvae_collapse_thresholds(x, 3)


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_thresholds_from_spectrum_agree_with_collapse_thresholds(model):
    rng = np.random.default_rng(7)
    data = (vae_data(rng),) if model == "vae" else cvae_data(rng)
    table = collapse_thresholds(*data, model=model, latent_dim=3, beta=1.3, eta_dec=0.7)
    again = thresholds_from_spectrum(table.theta.values[1:], model=model, beta=1.3, eta_dec=0.7)
    np.testing.assert_array_equal(table.beta_max.values, again.beta_max.values)
    np.testing.assert_array_equal(table.eta_dec_max.values, again.eta_dec_max.values)


def test_data_scale_eta_dec_is_probabilistic_pcas_noise_estimate():
    """Against scikit-learn's PCA.noise_variance_ (the PPCA ML noise) on centred data, where both agree."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    x -= x.mean(axis=0)  # the theory's moments are uncentred; sklearn centres: agree on centred data
    n = x.shape[0]
    for k in (1, 3, 5):
        noise_variance = PCA(n_components=k).fit(x).noise_variance_ * (n - 1) / n  # sklearn divides by n - 1
        eta = data_scale_eta_dec(vae_thetas(x), k, model="vae")
        assert eta == pytest.approx(np.sqrt(noise_variance), rel=1e-9)
    # CVAE: theta are variances already; nothing left out -> a tenth of the rms scale, still positive
    assert data_scale_eta_dec([4.0, 1.0, 0.25], 1, model="cvae") == pytest.approx(np.sqrt(0.625))
    assert data_scale_eta_dec([4.0, 1.0], 2, model="cvae") == pytest.approx(0.1 * np.sqrt(2.5))
    with pytest.raises(ValueError, match="spectrum"):
        data_scale_eta_dec([0.0, 0.0], 1, model="vae")
    with pytest.raises(ValueError, match="model"):
        data_scale_eta_dec([1.0], 1, model="pca")
