"""The 'what to change' tables and the predicted per-mode KL, from a run's theory group."""

import json

import numpy as np
import pytest
import xarray as xr

from ppl_vae.report.advice import format_limit, predicted_kl, rows_to_show, what_to_change
from ppl_vae.report.runs import KL_HISTORY_NAME, read_converged, read_kl_history
from ppl_vae.theory import linear_cvae, linear_mhvae, linear_vae
from report_testing import kl_history_fixture


def spectrum_data(theta, seed=0):
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(len(theta), len(theta))))
    return np.sqrt(len(theta)) * np.diag(theta) @ rotation.T


def test_vae_table_marks_the_runs_own_count_and_moving_past_a_threshold_changes_it():
    x = spectrum_data([3.0, 2.0, 1.0, 0.5])
    theory = linear_vae(x, 4, beta=1.5, eta_dec=1.0)
    (change,) = what_to_change(theory, ["z"])
    assert change.predicted_active == 4 - theory.attrs["n_collapsed"] == 2
    assert change.current == {"beta": 1.5, "eta_dec": 1.0}
    for k in (1, 2, 3):
        beta_max = float(change.table.beta_max.sel(n_active=k))
        eta_max = float(change.table.eta_dec_max.sel(n_active=k))
        assert 4 - linear_vae(x, 4, beta=beta_max * 0.99, eta_dec=1.0).attrs["n_collapsed"] >= k
        assert 4 - linear_vae(x, 4, beta=beta_max * 1.01, eta_dec=1.0).attrs["n_collapsed"] < k
        assert 4 - linear_vae(x, 4, beta=1.5, eta_dec=eta_max * 1.01).attrs["n_collapsed"] < k


def test_cvae_and_mhvae_tables():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = x @ rng.normal(size=(3, 4)) + rng.normal(size=(200, 4)) * [2.0, 1.0, 0.5, 0.1]
    (cvae,) = what_to_change(linear_cvae(x, y, 3, eta_dec=0.8), ["z"])
    assert cvae.table.sizes["n_active"] == 4
    theory = linear_mhvae(spectrum_data([3.0, 1.5, 0.8, 0.2]), (3, 2), beta2=2.0, eta_dec=0.7, sigma1=0.5)
    z1, z2 = what_to_change(theory, ["z1", "z2"])
    assert z1.table.n_active.values.max() == 3 and z2.table.n_active.values.max() == 2
    assert [c[1] for c in z2.columns] == ["beta2", "eta_dec", "beta1"] and z2.columns[2][2] == ">="
    assert z1.predicted_active == theory.attrs["latent_dim_z1"] - theory.attrs["n_z1_collapsed"]


def test_no_table_where_no_threshold_is_derived():
    x = spectrum_data([3.0, 1.0])
    with pytest.raises(ValueError, match="learnable"):
        what_to_change(linear_vae(x, 2, encoder_std=0.5), ["z"])
    with pytest.raises(ValueError, match="Theorem 3"):
        what_to_change(linear_mhvae(x, (2, 2), sigma2=0.5), ["z1", "z2"])
    with pytest.raises(ValueError, match="no threshold form"):
        what_to_change(xr.Dataset(attrs={"model": "other"}), ["z"])


def test_predicted_kl_of_an_active_vae_mode_is_log_theta_over_its_threshold():
    """At the optimum (lambda^2 + s^2) / eta_enc^2 = 1, so KL_i = log(theta_i / (sqrt(beta) eta_dec)), or 0."""
    theta = np.array([3.0, 2.0, 1.0, 0.5])
    beta, eta_dec = 1.5, 0.9
    theory = linear_vae(spectrum_data(theta), 4, beta=beta, eta_enc=2.0, eta_dec=eta_dec)
    kl = predicted_kl(theory, ["z"])
    expected = np.maximum(0.0, np.log(theta / (np.sqrt(beta) * eta_dec)))
    np.testing.assert_allclose(kl.z_kl.values, expected, atol=1e-9)
    assert int(kl.z_n_active) == int(np.sum(expected > 0))


def test_rows_and_limits_as_shown():
    assert rows_to_show(5, 2) == [1, 2, 3, 4, 5]
    rows = rows_to_show(64, 30)
    assert {1, 64, 28, 30, 32} <= set(rows) and len(rows) < 20
    assert format_limit(np.inf, "<=") == "any value" and format_limit(0.0, "<=") == "none can"
    assert format_limit(1.23456, ">=") == ">= 1.23" and format_limit(np.nan, "<=") == "-"


def test_reading_a_kl_history_and_the_convergence_flag(tmp_path):
    assert read_kl_history(tmp_path) is None and read_converged(tmp_path) is None
    kl_history_fixture({"z": 3}).to_netcdf(tmp_path / KL_HISTORY_NAME)
    history = read_kl_history(tmp_path)
    assert history["z_kl"].dims == ("step", "z_dim") and history.attrs["collapse_epsilon"] == 0.01
    (tmp_path / "metrics.json").write_text(json.dumps({"converged": False}))
    assert read_converged(tmp_path) is False
    (tmp_path / "metrics.json").write_text(json.dumps({"converged": [True, None]}))  # a K-model fit: not one flag
    assert read_converged(tmp_path) is None
    (tmp_path / KL_HISTORY_NAME).write_bytes(b"not netcdf")
    with pytest.raises(Exception, match=KL_HISTORY_NAME):
        read_kl_history(tmp_path)


@pytest.mark.parametrize("dims, sigma2", [((3, 2), None), ((2, 3), None), ((3, 3), 0.6)])
def test_mhvae_mode_kl_sums_to_the_kl_terms_of_the_expected_loss(dims, sigma2):
    """The library's expected loss is R + beta1 K1 + beta2 K2 at fixed parameters: K1, K2 by finite differences."""
    from ppl_vae.report.advice import mhvae_mode_kl
    from ppl_vae.theory import mhvae_expected_loss

    x = spectrum_data([2.5, 1.4, 0.6, 0.3], seed=3)
    hyper = dict(beta1=0.8, beta2=1.3, eta_enc=1.2, eta_dec=0.6, sigma1=0.7)
    theory = linear_mhvae(x, dims, **hyper, sigma2=sigma2)
    params = closed_form_parameters(x, theory, dims, sigma2, **hyper)
    loss = lambda b1, b2: float(mhvae_expected_loss(*params, x.T @ x / x.shape[0], beta1=b1, beta2=b2,  # noqa: E731
                                                    eta_enc=hyper["eta_enc"], eta_dec=hyper["eta_dec"],
                                                    sigma1=hyper["sigma1"]))
    k1, k2 = loss(2.0, 1.0) - loss(1.0, 1.0), loss(1.0, 2.0) - loss(1.0, 1.0)
    kl = mhvae_mode_kl(theory)
    # The loss scores z1 against a z2 drawn from that same z1; the diagnostics' per-dimension KL integrates z1
    # afresh against a z2 drawn from another z1 sample (analytic Normal KL): that adds sigma1^2 omega g / eta_dec^2
    # per mode, g = beta1 omega / (beta1 omega^2 + beta2 c^2) the z2 encoder's gain.
    omega = np.nan_to_num(theory.z2_decoder_sv.values) * (theory.in_z1.values & theory.in_z2.values)
    c = hyper["eta_dec"] / hyper["eta_enc"]
    gain = hyper["beta1"] * omega / (hyper["beta1"] * omega**2 + hyper["beta2"] * c**2)
    cross = np.sum(hyper["sigma1"] ** 2 * omega * gain / hyper["eta_dec"] ** 2)
    assert cross > 0.1  # the configurations have coupled, active modes
    assert np.nansum(kl["z1"]) == pytest.approx(k1 + cross, rel=1e-9, abs=1e-12)
    assert np.nansum(kl["z2"]) == pytest.approx(k2, rel=1e-9, abs=1e-12)


def closed_form_parameters(x, theory, dims, sigma2, *, beta1, beta2, eta_enc, eta_dec, sigma1):
    """(U1, U2, W1, W2, z2 std) of the closed-form optimum, in the data's eigenbasis (U1, W2 at their exact optima)."""
    moment = x.T @ x / x.shape[0]
    phi, basis = np.linalg.eigh(moment)
    order = np.argsort(phi)[::-1]
    phi, basis = phi[order], basis[:, order]
    d1, d2 = dims
    lam = theory.z1_encoder_sv.values[:d1]
    encoder1 = (lam / np.sqrt(phi[:d1]))[:, None] * basis[:, :d1].T
    decoder2 = np.zeros((d1, d2))
    coupled = min(d1, d2)
    decoder2[np.arange(coupled), np.arange(coupled)] = theory.z2_decoder_sv.values[:coupled]
    z2_std = theory.z2_encoder_std.values[:d2] if sigma2 is None else np.full(d2, sigma2)
    z1_moment = encoder1 @ moment @ encoder1.T + sigma1**2 * np.eye(d1)
    decoder1 = moment @ encoder1.T @ np.linalg.inv(z1_moment)
    c = eta_dec / eta_enc
    encoder2 = np.linalg.solve(beta1 * decoder2.T @ decoder2 + beta2 * c**2 * np.eye(d2), beta1 * decoder2.T)
    return decoder1, decoder2, encoder1, encoder2, z2_std
