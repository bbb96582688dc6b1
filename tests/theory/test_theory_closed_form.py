"""Closed forms of ppl_vae.theory against a direct minimisation of the exact expected loss.

Every configuration is random (seeded) with the data spectrum placed on both
sides of the model's collapse thresholds, 3% to 30% (in log ratio) away from
each threshold: closer than that the loss is quartic in the vanishing singular
value and no optimiser resolves it to 1e-4.  Singular values and stds are
compared as sorted sets with an ABSOLUTE tolerance of 1e-4: collapsed modes
are exactly 0 in the closed form, where a relative tolerance is meaningless;
the nonzero values are O(0.1 - 3).  As a second, stronger check the loss of
the closed-form parameters must not exceed the numeric minimum.
"""

import numpy as np
import pytest

from ppl_vae.theory import (
    cvae_expected_loss,
    linear_cvae,
    linear_mhvae,
    linear_vae,
    mhvae_expected_loss,
    numeric_linear_cvae,
    numeric_linear_mhvae,
    numeric_linear_vae,
    vae_expected_loss,
)

N_CONFIGS = 20
SV_TOL = 1e-4  # absolute
LOSS_SLACK = 1e-9  # the closed form may not be worse than the minimiser by more than round-off
MIN_MARGIN = 0.03  # |log(theta / threshold)| for every threshold of the configuration
N_RESTARTS = 4


# ---------------------------------------------------------------- data with a chosen spectrum
def random_rotation(dim, rng):
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def data_with_moment(moment):
    """Rows whose uncentred second moment is exactly ``moment`` (n = dim rows)."""
    eigenvalues, vectors = np.linalg.eigh(moment)
    root = (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T
    return np.sqrt(moment.shape[0]) * root


def data_with_spectrum(phi, rng):
    rotation = random_rotation(len(phi), rng)
    return data_with_moment((rotation * phi) @ rotation.T)


def paired_data_with_residual_spectrum(residual_spectrum, dim_x, rng):
    """(x, y) with E[yy^T] - E[yx^T]E[xx^T]^-1 E[xy^T] having eigenvalues ``residual_spectrum``."""
    dim_y = len(residual_spectrum)
    factor = rng.normal(size=(dim_x, dim_x))
    moment_xx = factor @ factor.T / dim_x + 0.1 * np.eye(dim_x)
    regression = rng.normal(size=(dim_y, dim_x))
    rotation = random_rotation(dim_y, rng)
    residual = (rotation * residual_spectrum) @ rotation.T
    moment_yx = regression @ moment_xx
    moment_yy = residual + regression @ moment_xx @ regression.T
    joint = np.block([[moment_xx, moment_yx.T], [moment_yx, moment_yy]])
    data = data_with_moment(joint)
    return data[:, :dim_x], data[:, dim_x:]


def straddle(thresholds, count, rng, far=0.3):
    """``count`` values each 3%-30% above or below a randomly chosen threshold, sorted descending."""
    chosen = rng.choice(np.asarray(thresholds, dtype=float), size=count)
    log_offset = rng.uniform(MIN_MARGIN * 1.2, far, size=count) * rng.choice([-1.0, 1.0], size=count)
    return np.sort(chosen * np.exp(log_offset))[::-1]


def clear_of(values, thresholds):
    values = np.asarray(values)[np.asarray(values) > 0]
    ratios = np.abs(np.log(values[:, None] / np.asarray(thresholds, dtype=float)[None, :]))
    return bool(np.all(ratios > MIN_MARGIN))


def assert_same_sorted(closed, numeric, name):
    closed = np.sort(closed[~np.isnan(closed)])
    numeric = np.sort(numeric[~np.isnan(numeric)])
    assert closed.shape == numeric.shape, name
    np.testing.assert_allclose(closed, numeric, rtol=0, atol=SV_TOL, err_msg=name)


def eigh_descending(moment):
    values, vectors = np.linalg.eigh(moment)
    return np.clip(values[::-1], 0, None), vectors[:, ::-1]


def safe_ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 1e-12)


# ---------------------------------------------------------------- VAE
def vae_config(seed, fixed):
    rng = np.random.default_rng(seed)
    while True:
        dim = int(rng.integers(2, 7))
        latent = int(rng.integers(1, min(dim, 4) + 1))
        beta, eta_enc, eta_dec = rng.uniform(0.3, 2.0, size=3)
        c = eta_dec / eta_enc
        if fixed:
            stds = np.sort(rng.uniform(0.4, 1.6, size=latent)) if rng.random() < 0.7 else np.full(latent, 0.8)
            thresholds = np.sqrt(beta) * c * stds
            theta = straddle(thresholds, dim, rng)
            top = theta[:latent]
            if not np.all(np.abs(np.log(top / thresholds)) > MIN_MARGIN):
                continue
        else:
            stds = None
            thresholds = [np.sqrt(beta) * eta_dec]
            theta = straddle(thresholds, dim, rng)
            if not clear_of(theta, thresholds):
                continue
        if rng.random() < 0.25:  # a blank direction: rank-deficient moment
            theta[-1] = 0.0
        x = data_with_spectrum(theta**2, rng)
        encoder_std = None if stds is None else (float(stds[0]) if np.all(stds == stds[0]) else rng.permutation(stds))
        return x, dict(latent_dim=latent, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec, encoder_std=encoder_std)


def vae_closed_form_loss(x, closed, kwargs):
    moment = x.T @ x / x.shape[0]
    phi, basis = eigh_descending(moment)
    latent = kwargs["latent_dim"]
    theta = np.sqrt(phi[:latent])
    encoder = safe_ratio(closed.encoder_sv.values, theta)[:, None] * basis[:, :latent].T
    decoder = basis[:, :latent] * closed.decoder_sv.values
    return float(vae_expected_loss(decoder, encoder, closed.encoder_std.values, moment, beta=kwargs["beta"],
                                   eta_enc=kwargs["eta_enc"], eta_dec=kwargs["eta_dec"]))


@pytest.mark.parametrize("fixed", [False, True], ids=["learnable_std", "fixed_std"])
@pytest.mark.parametrize("seed", range(N_CONFIGS))
def test_linear_vae_matches_minimiser(seed, fixed):
    x, kwargs = vae_config(seed, fixed)
    closed = linear_vae(x, **kwargs)
    numeric = numeric_linear_vae(x, **kwargs, n_restarts=N_RESTARTS, seed=seed)
    for name in ("decoder_sv", "encoder_sv", "encoder_std"):
        assert_same_sorted(closed[name].values, numeric[name].values, name)
    assert vae_closed_form_loss(x, closed, kwargs) <= numeric.attrs["loss"] + LOSS_SLACK


# ---------------------------------------------------------------- CVAE
def cvae_config(seed):
    rng = np.random.default_rng(1000 + seed)
    while True:
        dim_x, dim_y = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        latent = int(rng.integers(1, dim_y + 1))
        beta, eta_enc, eta_dec = rng.uniform(0.3, 2.0, size=3)
        thresholds = [beta * eta_dec**2]
        theta = straddle(thresholds, dim_y, rng)
        if clear_of(theta, thresholds):
            break
    x, y = paired_data_with_residual_spectrum(theta, dim_x, rng)
    return x, y, dict(latent_dim=latent, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)


def cvae_closed_form_loss(x, y, closed, kwargs):
    n, dim_x = x.shape
    moment_xx, moment_yx, moment_yy = x.T @ x / n, y.T @ x / n, y.T @ y / n
    regression = moment_yx @ np.linalg.pinv(moment_xx)
    theta, basis = eigh_descending(moment_yy - regression @ moment_yx.T)
    latent = kwargs["latent_dim"]
    encoder_y = safe_ratio(closed.encoder_sv.values, np.sqrt(theta[:latent]))[:, None] * basis[:, :latent].T
    return float(cvae_expected_loss(basis[:, :latent] * closed.decoder_sv.values, regression, -encoder_y @ regression,
                                    encoder_y, closed.encoder_std.values, moment_xx, moment_yx, moment_yy,
                                    beta=kwargs["beta"], eta_enc=kwargs["eta_enc"], eta_dec=kwargs["eta_dec"]))


@pytest.mark.parametrize("seed", range(N_CONFIGS))
def test_linear_cvae_matches_minimiser(seed):
    x, y, kwargs = cvae_config(seed)
    closed = linear_cvae(x, y, **kwargs)
    numeric = numeric_linear_cvae(x, y, **kwargs, n_restarts=N_RESTARTS, seed=seed)
    for name in ("decoder_sv", "encoder_sv", "encoder_std"):
        assert_same_sorted(closed[name].values, numeric[name].values, name)
    assert cvae_closed_form_loss(x, y, closed, kwargs) <= numeric.attrs["loss"] + LOSS_SLACK


# ---------------------------------------------------------------- MHVAE
def mhvae_thresholds(beta1, beta2, eta_enc, eta_dec, sigma1, sigma2):
    """Every theta at which some singular value of Theorem 3 / 5 switches on."""
    if sigma2 is None:
        return [np.sqrt(beta2) * eta_dec, np.sqrt(beta1) * sigma1, beta2 * eta_dec**2 / (np.sqrt(beta1) * sigma1)]
    c = eta_dec / eta_enc
    k = np.sqrt(beta1 * beta2) * c * sigma1 * sigma2
    return [np.sqrt(k), beta2 * c**2 * sigma2**2 / (np.sqrt(beta1) * sigma1), np.sqrt(beta1) * sigma1]


def mhvae_config(seed, fixed):
    rng = np.random.default_rng(2000 + seed)
    while True:
        dim = int(rng.integers(2, 7))
        d1, d2 = int(rng.integers(1, min(dim, 4) + 1)), int(rng.integers(1, 5))
        beta1 = rng.uniform(0.3, 1.0) if seed % 2 == 0 else rng.uniform(0.3, 2.0)  # half the configs beta1 < 1
        beta2, eta_enc, eta_dec, sigma1 = rng.uniform(0.3, 2.0), *rng.uniform(0.5, 1.5, size=3)
        c = eta_dec / eta_enc
        sigma2 = None
        if fixed:  # alternate the two regimes of Theorem 5: sqrt(beta1) sigma1 above / below sqrt(beta2) c sigma2
            balance = np.sqrt(beta1) * sigma1 / (np.sqrt(beta2) * c)
            sigma2 = float(balance * (rng.uniform(0.5, 0.85) if seed % 4 < 2 else rng.uniform(1.2, 2.0)))
        # stay clear of the case boundaries too (there a singular value vanishes for every theta)
        boundary = (np.sqrt(beta1) * sigma1 / (np.sqrt(beta2) * c * sigma2) if fixed
                    else sigma1**2 * beta1 / (beta2 * eta_dec**2))
        if abs(np.log(boundary)) < 0.1:
            continue
        thresholds = mhvae_thresholds(beta1, beta2, eta_enc, eta_dec, sigma1, sigma2)
        theta = straddle(thresholds, dim, rng)
        if fixed and seed % 4 == 2:  # every mode coupled, the weakest one under sqrt(beta1) sigma1: both collapse
            dim = min(dim, 4)
            d1 = d2 = dim
            theta = np.sort(np.append(theta[: dim - 1], thresholds[2] * np.exp(-rng.uniform(0.05, 0.3))))[::-1]
        if clear_of(theta, thresholds):
            break
    x = data_with_spectrum(theta**2, rng)
    return x, dict(latent_dims=(d1, d2), beta1=beta1, beta2=beta2, eta_enc=eta_enc, eta_dec=eta_dec, sigma1=sigma1,
                   sigma2=sigma2)


def mhvae_closed_form_loss(x, closed, kwargs):
    """Loss at the closed form's W1, U2, Sigma2 with U1 and W2 set to their exact (quadratic) optima."""
    moment = x.T @ x / x.shape[0]
    phi, basis = eigh_descending(moment)
    d1, d2 = kwargs["latent_dims"]
    beta1, beta2, eta_enc, eta_dec, sigma1 = (kwargs[k] for k in ("beta1", "beta2", "eta_enc", "eta_dec", "sigma1"))
    lam = closed.z1_encoder_sv.values[:d1]
    encoder1 = safe_ratio(lam, np.sqrt(phi[:d1]))[:, None] * basis[:, :d1].T
    decoder2 = np.zeros((d1, d2))
    coupled = min(d1, d2)
    decoder2[np.arange(coupled), np.arange(coupled)] = closed.z2_decoder_sv.values[:coupled]
    z2_std = closed.z2_encoder_std.values[:d2] if kwargs["sigma2"] is None else np.full(d2, kwargs["sigma2"])
    z1_moment = encoder1 @ moment @ encoder1.T + sigma1**2 * np.eye(d1)
    decoder1 = moment @ encoder1.T @ np.linalg.inv(z1_moment)
    c = eta_dec / eta_enc
    encoder2 = np.linalg.solve(beta1 * decoder2.T @ decoder2 + beta2 * c**2 * np.eye(d2), beta1 * decoder2.T)
    return float(mhvae_expected_loss(decoder1, decoder2, encoder1, encoder2, z2_std, moment, beta1=beta1,
                                     beta2=beta2, eta_enc=eta_enc, eta_dec=eta_dec, sigma1=sigma1))


@pytest.mark.parametrize("fixed", [False, True], ids=["learnable_sigma2", "fixed_sigma2"])
@pytest.mark.parametrize("seed", range(N_CONFIGS))
def test_linear_mhvae_matches_minimiser(seed, fixed):
    x, kwargs = mhvae_config(seed, fixed)
    closed = linear_mhvae(x, **kwargs)
    numeric = numeric_linear_mhvae(x, **kwargs, n_restarts=N_RESTARTS, seed=seed)
    d1, d2 = kwargs["latent_dims"]
    closed_z2_sv = closed.z2_decoder_sv.values[: min(d1, d2)]  # U2 has min(d1, d2) singular values
    assert_same_sorted(closed.z1_encoder_sv.values, numeric.z1_encoder_sv.values, "z1_encoder_sv")
    assert_same_sorted(closed_z2_sv, numeric.z2_decoder_sv.values, "z2_decoder_sv")
    if not fixed:
        assert_same_sorted(closed.z2_encoder_std.values, numeric.z2_encoder_std.values, "z2_encoder_std")
    assert mhvae_closed_form_loss(x, closed, kwargs) <= numeric.attrs["loss"] + LOSS_SLACK


# ---------------------------------------------------------------- the configurations do test something
def test_configurations_cover_collapsed_and_active_modes():
    vae = [linear_vae(x, **kwargs) for x, kwargs in (vae_config(s, f) for s in range(N_CONFIGS) for f in (0, 1))]
    cvae = [linear_cvae(x, y, **kwargs) for x, y, kwargs in map(cvae_config, range(N_CONFIGS))]
    mhvae = [linear_mhvae(x, **kwargs) for x, kwargs in (mhvae_config(s, f) for s in range(N_CONFIGS) for f in (0, 1))]
    for name, results, flags in (("vae", vae, ["collapsed"]), ("cvae", cvae, ["collapsed"]),
                                 ("mhvae", mhvae, ["z1_collapsed", "z2_collapsed"])):
        for flag in flags:
            values = np.concatenate([r[flag].values[r[flag].notnull().values] for r in results])
            assert values.any() and not values.all(), (name, flag)
    branches = set()  # (case, z1 mean alive, z2 alive) over the coupled modes
    for r in mhvae:
        coupled = r.in_z1.values & r.in_z2.values
        branches |= {(r.attrs["case"], bool(lam > 0), bool(omega > 0))
                     for lam, omega in zip(r.z1_encoder_sv.values[coupled], r.z2_decoder_sv.values[coupled])}
    every_branch = {("A", True, True), ("A", False, True), ("B/C", True, True), ("B/C", True, False),
                    ("B/C", False, False), ("theorem 5", True, True), ("theorem 5", False, True),
                    ("theorem 5", True, False), ("theorem 5", False, False)}
    assert every_branch <= branches, every_branch - branches
    assert any(r.attrs["latent_dim_z1"] > r.attrs["latent_dim_z2"] for r in mhvae)
    assert any(r.attrs["latent_dim_z1"] < r.attrs["latent_dim_z2"] for r in mhvae)


# ---------------------------------------------------------------- labelled output and conventions
@pytest.fixture
def spectrum_data():
    return data_with_spectrum(np.array([4.0, 2.25, 1.0, 0.36, 0.04]), np.random.default_rng(11))


def test_vae_dataset_is_labelled(spectrum_data):
    result = linear_vae(spectrum_data, 3, beta=0.8)
    assert result.mode.values.tolist() == [0, 1, 2]
    assert np.all(np.diff(result.theta.values) < 0)  # mode 0 = largest theta
    assert result.collapsed.dtype == bool and result.complete_collapse.dtype == bool
    assert result.attrs["n_collapsed"] == int(result.collapsed.sum())
    assert {"model", "beta", "eta_enc", "eta_dec", "latent_dim", "n_samples", "data_dim"} <= set(result.attrs)
    assert all("description" in result[name].attrs for name in result.data_vars)


def test_learnable_collapse_means_q_equals_prior(spectrum_data):
    result = linear_vae(spectrum_data, 5, beta=1.0, eta_enc=1.7, eta_dec=0.9)
    collapsed = result.collapsed.values
    assert collapsed.any() and not collapsed.all()
    assert np.all(result.encoder_sv.values[collapsed] == 0.0)
    assert np.all(result.encoder_std.values[collapsed] == 1.7)
    np.testing.assert_array_equal(result.complete_collapse.values, collapsed)


def test_fixed_std_is_paired_ascending_and_collapse_is_partial(spectrum_data):
    result = linear_vae(spectrum_data, 3, beta=1.0, eta_enc=1.0, encoder_std=[2.0, 0.5, 1.0])
    assert result.encoder_std.values.tolist() == [0.5, 1.0, 2.0]
    # theta = (2, 1.5, 1) against sqrt(beta) c s = (0.5, 1, 2): only mode 2's mean collapses, and its std
    # 2.0 differs from eta_enc, so q is not the prior
    assert result.collapsed.values.tolist() == [False, False, True]
    assert not result.complete_collapse.values.any()
    # theta = (2, 1.5, 1) against sqrt(0.81) c s = (0.45, 0.9, 0.9): no mode collapses, so none is at the prior
    # even where s = eta_enc (kept off the theta = threshold knife edge, which rounding decides)
    at_prior = linear_vae(spectrum_data, 3, beta=0.81, eta_enc=1.0, encoder_std=[0.5, 1.0, 1.0])
    assert at_prior.collapsed.values.tolist() == [False, False, False]
    assert at_prior.complete_collapse.values.tolist() == [False, False, False]
    at_prior = linear_vae(spectrum_data, 3, beta=1.0, eta_enc=2.0, eta_dec=1.6, encoder_std=2.0)
    assert at_prior.complete_collapse.values.tolist() == at_prior.collapsed.values.tolist() == [False, True, True]


@pytest.mark.parametrize("dims", [(3, 1), (2, 4), (3, 3)])
@pytest.mark.parametrize("sigma2", [None, 0.7])
def test_mhvae_mode_layout(spectrum_data, dims, sigma2):
    d1, d2 = dims
    result = linear_mhvae(spectrum_data, dims, beta1=0.5, sigma2=sigma2)
    assert result.sizes["mode"] == max(d1, d2)
    np.testing.assert_array_equal(result.in_z1.values, np.arange(max(dims)) < d1)
    np.testing.assert_array_equal(result.in_z2.values, np.arange(max(dims)) < d2)
    assert np.all(np.isnan(result.z1_encoder_sv.values[d1:])) and np.all(np.isnan(result.z2_decoder_sv.values[d2:]))
    assert not result.z1_collapsed.values[d1:].any() and not result.z2_collapsed.values[d2:].any()
    assert np.all(result.z2_decoder_sv.values[d1:d2] == 0.0)  # z2 modes with no z1 partner collapse
    assert ("z2_encoder_std" in result) == (sigma2 is None)
    assert result.attrs["n_collapsed"] == int(result.z1_collapsed.sum() + result.z2_collapsed.sum())


def test_torch_and_numpy_inputs_agree(spectrum_data):
    import torch

    x = spectrum_data[:, :4]
    y = spectrum_data[:, 4:]
    for function, args in ((linear_vae, (x, 2)), (linear_cvae, (x, y, 1)), (linear_mhvae, (x, (2, 2)))):
        from_numpy = function(*args)
        from_torch = function(*(torch.as_tensor(a) if isinstance(a, np.ndarray) else a for a in args))
        assert from_numpy.identical(from_torch)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["beta", "eta_enc", "eta_dec"])
@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf])
def test_non_positive_hyper_parameters_are_rejected(spectrum_data, name, value):
    with pytest.raises(ValueError, match=name):
        linear_vae(spectrum_data, 2, **{name: value})
    with pytest.raises(ValueError, match=name):
        linear_cvae(spectrum_data[:, :2], spectrum_data[:, 2:], 2, **{name: value})


@pytest.mark.parametrize("name", ["beta1", "beta2", "eta_enc", "eta_dec", "sigma1", "sigma2"])
def test_mhvae_hyper_parameters_are_rejected(spectrum_data, name):
    with pytest.raises(ValueError, match=name):
        linear_mhvae(spectrum_data, (2, 2), **{name: -0.5})


def test_bad_shapes_are_rejected(spectrum_data):
    with pytest.raises(ValueError, match="latent_dim"):
        linear_vae(spectrum_data, 6)
    with pytest.raises(ValueError, match="latent_dim"):
        linear_vae(spectrum_data, 0)
    with pytest.raises(ValueError, match="latent_dim"):
        linear_cvae(spectrum_data[:, :3], spectrum_data[:, 3:], 3)
    with pytest.raises(ValueError, match="latent_dims"):
        linear_mhvae(spectrum_data, (6, 2))
    with pytest.raises(ValueError, match="latent_dims"):
        linear_mhvae(spectrum_data, 3)
    with pytest.raises(ValueError, match="encoder_std"):
        linear_vae(spectrum_data, 3, encoder_std=[1.0, 2.0])
    with pytest.raises(ValueError, match="encoder_std"):
        linear_vae(spectrum_data, 2, encoder_std=[1.0, -2.0])
    with pytest.raises(ValueError, match="y"):
        linear_cvae(spectrum_data, spectrum_data[:-1], 1)
    with pytest.raises(ValueError, match="x"):
        linear_vae(spectrum_data[0], 1)
    with pytest.raises(ValueError, match="x"):
        linear_mhvae(np.where(spectrum_data > 0, np.nan, spectrum_data), (1, 1))


def test_predictions_survive_a_netcdf_round_trip(spectrum_data, tmp_path):
    import xarray as xr

    predictions = [linear_vae(spectrum_data, 3), linear_vae(spectrum_data, 3, encoder_std=0.5),
                   linear_cvae(spectrum_data[:, :2], spectrum_data[:, 2:], 2),
                   linear_mhvae(spectrum_data, (3, 2)), linear_mhvae(spectrum_data, (2, 3), sigma2=0.4)]
    for index, prediction in enumerate(predictions):
        path = tmp_path / f"{index}.nc"
        prediction.to_netcdf(path)
        assert xr.load_dataset(path).identical(prediction)
