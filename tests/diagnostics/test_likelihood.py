import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from standin_models import LinearVAE, exact_posterior_vae
from ppl_vae.diagnostics import evaluation_metrics, iw_log_likelihood


def exact_log_marginal(x, U, eta_enc, eta_dec):
    cov = eta_enc**2 * (U @ U.T) + eta_dec**2 * np.eye(U.shape[0])
    return multivariate_normal(mean=np.zeros(U.shape[0]), cov=cov).logpdf(x)


def test_iw_log_likelihood_is_exact_when_the_guide_is_the_posterior(exact_vae, gaussian_bundle):
    model, (U, eta_enc, eta_dec) = exact_vae
    expected = exact_log_marginal(gaussian_bundle.x.double().numpy(), U.numpy(), eta_enc, eta_dec)
    ll = iw_log_likelihood(model, gaussian_bundle, iw_samples=7, sample_chunk=3, batch_size=16, progress=False)
    assert ll.dims == ("eval_obs",)
    # every importance weight equals p(x) exactly, so even K = 7 recovers it (float32 model)
    np.testing.assert_allclose(ll.values, expected, rtol=1e-4)


def test_elbo_is_below_iw_bound_for_an_imperfect_guide(gaussian_bundle):
    model, (U, eta_enc, eta_dec) = exact_posterior_vae()
    with torch.no_grad():
        model.s.mul_(0.5)  # a too-narrow guide: the ELBO is strictly below log p(x)
    metrics = evaluation_metrics(model, gaussian_bundle, iw_samples=400, seed=1, progress=False)
    exact = exact_log_marginal(gaussian_bundle.x.double().numpy(), U.numpy(), eta_enc, eta_dec).mean()
    assert float(metrics.elbo) < float(metrics.iw_log_likelihood) < exact + 0.05
    assert exact - float(metrics.iw_log_likelihood) < exact - float(metrics.elbo)


def test_elbo_beta_weights_the_kl_by_the_training_beta(gaussian_bundle):
    model, _ = exact_posterior_vae()
    weighted = LinearVAE(model.U.detach(), model.W.detach(), model.s.detach(), beta=3.0, eta_dec=0.5)
    metrics = evaluation_metrics(weighted, gaussian_bundle, iw_samples=4000, sample_chunk=1000, progress=False)
    # elbo - elbo_beta = (beta - 1) E_q[log q - log p] = 2 KL; the exact KL per point in closed form:
    loc = gaussian_bundle.x.double().numpy() @ model.W.detach().double().numpy().T
    s = model.s.detach().double().numpy()
    kl = (np.log(1 / s) + (s**2 + loc**2) / 2 - 0.5).sum(1).mean()
    assert float(metrics.elbo - metrics.elbo_beta) == pytest.approx(2 * kl, rel=0.02)


def test_reconstruction_mse_matches_its_expectation(exact_vae, gaussian_bundle):
    model, (U, _, _) = exact_vae
    metrics = evaluation_metrics(model, gaussian_bundle, iw_samples=3000, sample_chunk=1000, progress=False)
    x = gaussian_bundle.x.double().numpy()
    W, s, U = (t.detach().double().numpy() for t in (model.W, model.s, model.U))
    expected = (((x - x @ W.T @ U.T) ** 2).sum(1) + (U**2 @ s**2).sum()) / x.shape[1]
    np.testing.assert_allclose(metrics.squared_error_pointwise.values, expected, rtol=0.05)
    assert float(metrics.reconstruction_mse) == pytest.approx(expected.mean(), rel=0.01)


def test_metrics_are_reproducible_with_a_seed_and_leave_global_rng_alone(exact_vae, gaussian_bundle):
    model, _ = exact_vae
    with torch.no_grad():
        model.s.mul_(0.7)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = evaluation_metrics(model, gaussian_bundle, iw_samples=20, seed=5, progress=False)
    after = torch.rand(1)
    b = evaluation_metrics(model, gaussian_bundle, iw_samples=20, seed=5, progress=False)
    c = evaluation_metrics(model, gaussian_bundle, iw_samples=20, seed=6, progress=False)
    assert before == after
    assert a.identical(b)
    assert not np.allclose(a.iw_log_likelihood_pointwise, c.iw_log_likelihood_pointwise)


def test_cvae_metrics_score_y_given_x(cvae_and_bundle):
    model, bundle = cvae_and_bundle
    metrics = evaluation_metrics(model, bundle, iw_samples=50, progress=False)
    assert metrics.sizes["eval_obs"] == bundle.n
    assert np.isfinite(metrics.iw_log_likelihood_pointwise).all()
    assert float(metrics.elbo) <= float(metrics.iw_log_likelihood)


@pytest.mark.parametrize("name,value", [("iw_samples", 0), ("sample_chunk", 0), ("batch_size", -1)])
def test_evaluation_metrics_rejects_bad_sizes(exact_vae, gaussian_bundle, name, value):
    with pytest.raises(ValueError, match=name):
        evaluation_metrics(exact_vae[0], gaussian_bundle, progress=False, **{name: value})


def _metrics_one_summary_at_a_time(pointwise, *, iw_samples, seed, digest):
    """The ``metrics`` group as it was first built (each summary assigned to the Dataset in turn)."""
    import xarray as xr

    rows = len(pointwise["iw_log_likelihood"])
    ds = xr.Dataset({f"{k}_pointwise": ("eval_obs", v) for k, v in pointwise.items()},
                    coords={"eval_obs": np.arange(rows)})
    n = int((~np.isnan(pointwise["iw_log_likelihood"])).sum())
    ds["iw_log_likelihood"] = ds.iw_log_likelihood_pointwise.mean()
    ds["iw_log_likelihood_se"] = ds.iw_log_likelihood_pointwise.std(ddof=1) / np.sqrt(max(n, 1))
    ds["elbo"] = ds.elbo_pointwise.mean()
    ds["elbo_beta"] = ds.elbo_beta_pointwise.mean()
    ds["reconstruction_mse"] = ds.squared_error_pointwise.mean()
    for name in ("iw_log_likelihood", "iw_log_likelihood_pointwise", "elbo", "elbo_pointwise"):
        ds[name].attrs["units"] = "nats per data point"
    ds["elbo_beta"].attrs["long_name"] = "ELBO with each KL term times the training beta"
    ds["elbo_beta_pointwise"].attrs["long_name"] = ds["elbo_beta"].attrs["long_name"]
    return ds.assign_attrs(iw_samples=iw_samples, n_eval=n, seed=seed, eval_data_sha256=digest)


@pytest.mark.parametrize("masked", [False, True])
def test_metrics_dataset_equals_the_group_built_one_summary_at_a_time(masked):
    from ppl_vae.diagnostics.likelihood import metrics_dataset

    rng = np.random.default_rng(3)
    pointwise = {name: rng.normal(size=37) for name in ("iw_log_likelihood", "elbo", "elbo_beta", "squared_error")}
    if masked:  # fully masked points are NaN (no likelihood): skipped by the summaries, not counted in n_eval
        for values in pointwise.values():
            values[[2, 30]] = np.nan
    got = metrics_dataset(pointwise, iw_samples=11, seed=4, digest="d")
    want = _metrics_one_summary_at_a_time(pointwise, iw_samples=11, seed=4, digest="d")
    assert got.identical(want)  # values (bit for bit), dims, coords and every attribute
    assert list(got.variables) == list(want.variables)  # the order the file is written in
    for name in want.variables:
        assert got[name].attrs == want[name].attrs and got[name].dtype == want[name].dtype
    assert got.attrs["n_eval"] == (35 if masked else 37)
