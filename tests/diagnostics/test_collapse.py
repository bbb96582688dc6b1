import numpy as np
import pytest
import torch
import xarray as xr
from pyro import poutine

from ppl_vae.diagnostics import (
    active_units,
    collapse_dataset,
    collapsed_dimensions,
    epsilon_collapse_curve,
    epsilon_grid,
    kl_per_dimension,
    latent_statistics,
)


def normal_kl(q_loc, q_scale, p_loc, p_scale):
    return np.log(p_scale / q_scale) + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5


def test_kl_per_dimension_matches_closed_form_for_a_linear_vae(exact_vae, gaussian_bundle):
    model, _ = exact_vae
    stats = latent_statistics(model, gaussian_bundle, num_samples=2, batch_size=7)
    x = gaussian_bundle.x.double().numpy()
    loc = x @ model.W.detach().double().numpy().T
    expected = normal_kl(loc, model.s.detach().double().numpy(), 0.0, model.config.eta_enc)
    assert stats.z_kl.dims == ("obs", "z_dim")
    np.testing.assert_allclose(stats.z_kl.values, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.z_mean.values, loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl_per_dimension(model, gaussian_bundle)["z"].values, expected, rtol=1e-5, atol=1e-6)


def test_collapsed_dimension_has_zero_kl_and_is_counted(exact_vae, gaussian_bundle):
    model, _ = exact_vae  # third decoder column is zero: q(z_3 | x) = p(z_3)
    collapse = collapse_dataset(latent_statistics(model, gaussian_bundle), ("z",))
    assert collapse.z_kl_mean.sel(z_dim=2) < 1e-6
    assert collapse.z_kl_mean.sel(z_dim=0) > 0.1
    assert collapse.z_collapsed.values.tolist() == [False, False, True]
    assert int(collapse.z_n_collapsed) == 1
    assert int(collapse.z_active_units) == 2
    curve = collapse.z_collapse_fraction
    assert curve.dims == ("epsilon",)
    assert np.all(np.diff(curve.values) >= 0)
    # one dimension of three is exactly collapsed: at least a third of the pairs sit below any epsilon
    assert curve.isel(epsilon=0) >= 1 / 3


def _z1_term(mhvae, x):
    """Closed form per point and dimension of E_{q(z1|x) q(z2|z1)}[log q(z1_j|x) - log p(z1_j|z2)].

    z1 = m1 + s1 e', z2 = W2 z1 + s2 e: the residual z1 - U2 z2 = (I - U2 W2) z1 - U2 s2 e, with z2
    drawn AT the sampled z1 (the decoupled variant would put (U2 W2)^2 s1^2 + s1^2 where (I - U2 W2)^2 s1^2 is).
    """
    W1, W2, U2 = (t.detach().double().numpy() for t in (mhvae.W1, mhvae.W2, mhvae.U2))
    s1, s2 = mhvae.s1.detach().double().numpy(), mhvae.s2.detach().double().numpy()
    eta = mhvae.config.eta_dec
    keep = np.eye(W1.shape[0]) - U2 @ W2
    resid_mean = (x @ W1.T) @ keep.T
    resid_var = (keep**2) @ (s1**2) + (U2**2) @ (s2**2)
    return np.log(eta / s1) + (resid_mean**2 + resid_var) / (2 * eta**2) - 0.5


def test_mhvae_z1_kl_is_the_term_the_objective_pays(mhvae, gaussian_bundle):
    stats = latent_statistics(mhvae, gaussian_bundle, num_samples=4000, seed=3)
    x = gaussian_bundle.x.double().numpy()
    expected = _z1_term(mhvae, x)
    # Monte-Carlo average over 4000 draws per point, 60 points: compare the data mean per dimension
    np.testing.assert_allclose(stats.z1_kl.mean("obs").values, expected.mean(0), rtol=0.01)
    assert "monte carlo at the guide's draws" in stats.z1_kl.attrs["kl_method"]
    assert stats.z2_kl.attrs["kl_method"] == "analytic"  # p(z2) has no parent: exact given the sampled z1
    assert stats.z2_kl.dims == ("obs", "z2_dim") and stats.z2_kl.sizes["z2_dim"] == 2
    # and against Pyro's own traces: the objective's z1 term, log q(z1|x) - log p(z1|z2) at Pyro's draws
    terms = []
    with torch.no_grad():
        for _ in range(300):
            guide = poutine.trace(mhvae.guide).get_trace(gaussian_bundle.x)
            model = poutine.trace(poutine.replay(mhvae.model, trace=guide)).get_trace(gaussian_bundle.x)
            z1 = guide.nodes["z1"]["value"]
            terms.append(float((guide.nodes["z1"]["fn"].log_prob(z1) - model.nodes["z1"]["fn"].log_prob(z1)).mean()))
    pyro_mean, pyro_se = np.mean(terms), np.std(terms) / np.sqrt(len(terms))
    assert abs(float(stats.z1_kl.mean("obs").sum()) - pyro_mean) < 4 * pyro_se + 0.01


def test_epsilon_collapse_curve_counts_pairs_below_each_threshold():
    kl = xr.DataArray([[1e-5, 0.5], [2e-3, 3.0]], dims=("obs", "z_dim"))
    eps = xr.DataArray([1e-4, 1e-2, 1.0, 10.0], dims="epsilon")
    assert epsilon_collapse_curve(kl, eps).values.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_epsilon_grid_spans_the_brief():
    grid = epsilon_grid()
    assert grid[0] == pytest.approx(1e-4) and grid[-1] == pytest.approx(1.0)
    assert np.all(np.diff(np.log(grid.values)) > 0)


def test_active_units_uses_variance_over_points():
    mean = xr.DataArray(np.stack([np.linspace(-1, 1, 50), np.full(50, 3.0), 0.05 * np.sin(np.arange(50))], 1),
                        dims=("obs", "z_dim"))
    assert int(active_units(mean)) == 1
    assert int(active_units(mean, threshold=1e-4)) == 2
    with pytest.raises(ValueError, match="threshold"):
        active_units(mean, threshold=0)


def test_collapsed_dimensions_uses_the_data_mean():
    kl = xr.DataArray([[0.0, 0.018], [0.015, 0.0]], dims=("obs", "z_dim"))
    assert collapsed_dimensions(kl, 0.01).values.tolist() == [True, True]
    assert collapsed_dimensions(kl, 0.005).values.tolist() == [False, False]


def test_latent_statistics_rejects_bad_arguments(exact_vae, gaussian_bundle):
    with pytest.raises(ValueError, match="num_samples"):
        latent_statistics(exact_vae[0], gaussian_bundle, num_samples=0)
