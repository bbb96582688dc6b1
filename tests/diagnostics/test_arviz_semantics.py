"""ArviZ's own functions on diagnose() output read back from files: summary, plot_ppc, compare."""

import arviz as az
import matplotlib
import numpy as np
import pytest
import torch

from ppl_vae.data.bundle import DataBundle
from ppl_vae.diagnostics import compare_heldout, diagnose, heldout_elpd, load, save
from standin_models import exact_posterior_vae

matplotlib.use("Agg")


@pytest.fixture
def two_saved_runs(tmp_path):
    """Two linear VAEs on data from the first (one with the right decoder noise, one without), saved to .nc."""
    _, (U, eta_enc, eta_dec) = exact_posterior_vae(eta_dec=0.5)
    cov = eta_enc**2 * U @ U.T + eta_dec**2 * torch.eye(U.shape[0], dtype=U.dtype)
    gen = torch.Generator().manual_seed(7)
    x = (torch.linalg.cholesky(cov) @ torch.randn(U.shape[0], 60, generator=gen, dtype=U.dtype)).T.float()
    bundle = DataBundle("matched", x=x)
    train, test = bundle.subset(slice(0, 40)), bundle.subset(slice(40, 60))
    paths = {}
    for name, eta_dec in (("matched", 0.5), ("noisy", 1.5)):
        model, _ = exact_posterior_vae(eta_dec=eta_dec)
        idata = diagnose(model, train, test_data=test, n_obs=6, n_draws=50, iw_samples=200, kl_samples=2,
                         theory=False, progress=False, device="cpu")
        paths[name] = save(idata, tmp_path / f"{name}.nc")
    return {name: load(path) for name, path in paths.items()}, test


def test_summary_of_the_posterior_draws(two_saved_runs):
    idata = two_saved_runs[0]["matched"]
    table = az.summary(idata, var_names=["z"], kind="stats")
    assert len(table) == 6 * 3  # one row per (point, latent dimension)
    draws = idata.posterior.z.values.reshape(-1, 6, 3)
    np.testing.assert_allclose(table["mean"].values, draws.mean(0).reshape(-1), atol=1e-3)


def test_plot_ppc_compares_likelihood_draws_with_the_data(two_saved_runs):
    idata = two_saved_runs[0]["matched"]
    axes = az.plot_ppc(idata, var_names=["x"], num_pp_samples=20, random_seed=0)
    assert len(np.atleast_1d(axes)) == 1
    # predictive draws scatter around the decoder means with the likelihood's std (eta_dec = 0.5)
    noise = idata.posterior_predictive.x - idata.posterior_predictive.x_mean
    assert float(noise.std()) == pytest.approx(0.5, rel=0.1)


def test_compare_gives_the_elpd_difference_and_its_standard_error(two_saved_runs):
    runs, test = two_saved_runs
    table = compare_heldout(runs)
    assert list(table.index) == ["matched", "noisy"]  # the data follow the matched model
    matched = runs["matched"].metrics.iw_log_likelihood_pointwise.values  # every held-out point
    noisy = runs["noisy"].metrics.iw_log_likelihood_pointwise.values
    assert matched.size == test.n
    diff = matched - noisy
    assert table.loc["noisy", "elpd_diff"] == pytest.approx(diff.sum())
    assert table.loc["noisy", "dse"] == pytest.approx(np.sqrt(diff.size * diff.var()))
    assert table.loc["matched", "elpd_loo"] == pytest.approx(matched.sum())
    elpd = heldout_elpd(runs["matched"])
    assert elpd["se"] == pytest.approx(np.sqrt(matched.size * matched.var()))


def test_compare_refuses_runs_on_different_points(two_saved_runs, gaussian_bundle):
    runs, _ = two_saved_runs
    model, _ = exact_posterior_vae()
    other = diagnose(model, gaussian_bundle, test_data=gaussian_bundle.subset(slice(0, 20)), n_obs=2, n_draws=2,
                     iw_samples=2, kl_samples=2, theory=False, progress=False, device="cpu")
    with pytest.raises(ValueError, match="different held-out points"):
        compare_heldout({"matched": runs["matched"], "other": other})
    with pytest.raises(ValueError, match="at least two"):
        compare_heldout({"matched": runs["matched"]})
