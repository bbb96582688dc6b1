import json

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr

from ppl_vae import __version__
from ppl_vae.data.bundle import DataBundle
from ppl_vae.diagnostics import combine, diagnose, load, save


def small_diagnose(model, bundle, **options):
    defaults = dict(n_obs=5, n_draws=8, iw_samples=10, kl_samples=4, theory=False, progress=False, device="cpu")
    return diagnose(model, bundle, **{**defaults, **options})


def test_vae_groups_dims_and_provenance(exact_vae, gaussian_bundle):
    idata = small_diagnose(exact_vae[0], gaussian_bundle, seed=4)
    assert isinstance(idata, az.InferenceData)
    for group in ("posterior", "posterior_predictive", "prior", "prior_predictive", "observed_data", "log_likelihood",
                  "collapse", "metrics"):
        assert group in idata.groups()
    assert idata.posterior.z.dims == ("chain", "draw", "obs", "z_dim")
    assert idata.posterior.z.shape == (1, 8, 5, 3)
    assert idata.prior.z.shape == (1, 8, 5, 3)
    assert idata.posterior_predictive.x.shape == idata.posterior_predictive.x_mean.shape == (1, 8, 5, 4)
    # ArviZ's groups describe one set of points: log_likelihood is on the points of observed_data
    assert idata.log_likelihood.x.dims == ("chain", "draw", "obs")
    np.testing.assert_array_equal(idata.log_likelihood.obs.values, idata.observed_data.obs.values)
    pointwise = idata.metrics.iw_log_likelihood_pointwise
    assert pointwise.sizes == {"eval_obs": gaussian_bundle.n}
    np.testing.assert_allclose(idata.log_likelihood.x.values.reshape(-1),
                               pointwise.isel(eval_obs=idata.observed_data.obs.values).values)
    np.testing.assert_allclose(float(pointwise.mean()), float(idata.metrics.iw_log_likelihood))
    # observed_data are the rows of the data set named by the obs coordinate
    rows = idata.observed_data.obs.values
    np.testing.assert_array_equal(idata.observed_data.x.values, gaussian_bundle.x.numpy()[rows])
    assert idata.collapse.z_kl.sizes == {"obs": gaussian_bundle.n, "z_dim": 3}
    assert int(idata.collapse.z_n_collapsed) == 1
    assert json.loads(idata.attrs["data_spec"]) == {"name": "synthetic"}
    assert json.loads(idata.attrs["hyperparameters"])["eta_dec"] == 0.5
    assert idata.attrs["seed"] == 4 and idata.attrs["ppl_vae_version"] == __version__
    assert idata.attrs["metrics_data"] == "train"


def test_posterior_draws_follow_the_guide(exact_vae, gaussian_bundle):
    model, _ = exact_vae
    idata = small_diagnose(model, gaussian_bundle, n_obs=3, n_draws=4000)
    rows = idata.posterior.obs.values
    loc = gaussian_bundle.x.double().numpy()[rows] @ model.W.detach().double().numpy().T
    draws = idata.posterior.z.isel(chain=0)
    np.testing.assert_allclose(draws.mean("draw").values, loc, atol=4 * float(model.s.detach().max()) / np.sqrt(4000))
    np.testing.assert_allclose(draws.std("draw").values, np.broadcast_to(model.s.detach().numpy(), loc.shape),
                               rtol=0.05)


def test_same_seed_same_inference_data(exact_vae, gaussian_bundle):
    a = small_diagnose(exact_vae[0], gaussian_bundle, seed=1)
    b = small_diagnose(exact_vae[0], gaussian_bundle, seed=1)
    c = small_diagnose(exact_vae[0], gaussian_bundle, seed=2)
    assert a.posterior.identical(b.posterior) and a.metrics.identical(b.metrics)
    assert not np.array_equal(a.posterior.obs, c.posterior.obs) or not a.posterior.identical(c.posterior)


def test_cvae_has_condition_and_completions(cvae_and_bundle):
    model, bundle = cvae_and_bundle
    idata = small_diagnose(model, bundle, test_data=bundle.subset(slice(0, 10)))
    assert idata.observed_data.y.dims == ("obs", "y_dim")
    assert idata.constant_data.x.sizes["x_dim"] == 3
    assert idata.prior_predictive.y.dims == ("chain", "draw", "obs", "y_dim")
    # completions from the prior p(z | x) differ from reconstructions that saw y
    assert not np.allclose(idata.prior_predictive.y_mean.values, idata.posterior_predictive.y_mean.values)
    assert idata.metrics.sizes["eval_obs"] == 10 and idata.attrs["metrics_data"] == "test"


def test_mhvae_has_both_levels(mhvae, gaussian_bundle):
    idata = small_diagnose(mhvae, gaussian_bundle)
    assert set(idata.posterior.data_vars) == {"z1", "z2"}
    for site, dim in (("z1", 3), ("z2", 2)):
        assert idata.collapse[f"{site}_kl_mean"].sizes == {f"{site}_dim": dim}
        assert idata.collapse[f"{site}_collapse_fraction"].dims == ("epsilon",)


def test_labels_become_an_obs_coordinate(exact_vae, gaussian_bundle):
    labels = torch.arange(gaussian_bundle.n) % 3
    bundle = DataBundle("digits", x=gaussian_bundle.x, labels=labels)
    idata = small_diagnose(exact_vae[0], bundle)
    np.testing.assert_array_equal(idata.collapse.label.values, labels.numpy())
    np.testing.assert_array_equal(idata.posterior.label.values, labels.numpy()[idata.posterior.obs.values])


def test_save_load_round_trip_is_equal(exact_vae, gaussian_bundle, tmp_path):
    idata = small_diagnose(exact_vae[0], gaussian_bundle)
    path = save(idata, tmp_path / "diagnostics.nc")
    loaded = load(path)
    assert loaded.groups() == idata.groups()
    for group in idata.groups():
        assert loaded[group].identical(idata[group]), group
    assert dict(loaded.attrs) == dict(idata.attrs)
    assert [p.name for p in tmp_path.iterdir()] == ["diagnostics.nc"]  # no temporary file left behind


def test_load_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no diagnostics"):
        load(tmp_path / "absent.nc")


def test_combine_stacks_runs_with_hyperparameter_coordinates(gaussian_bundle, mhvae):
    from standin_models import exact_posterior_vae

    runs = []
    for beta, latent in ((0.5, 3), (2.0, 4)):
        base, _ = exact_posterior_vae(latent=latent)
        base.config = type(base.config)("vae", beta=beta, eta_dec=0.5)
        runs.append(small_diagnose(base, gaussian_bundle))
    combined = combine(runs, run_names=["small", "large"])
    collapse = combined.collapse
    assert collapse.sizes["run"] == 2 and collapse.sizes["z_dim"] == 4
    assert collapse.beta.values.tolist() == [0.5, 2.0]
    by_beta = collapse.swap_dims(run="beta")
    assert float(by_beta.z_n_collapsed.sel(beta=2.0)) == float(runs[1].collapse.z_n_collapsed)
    # the three-dimensional run is padded with NaN in its missing fourth dimension
    assert np.isnan(collapse.z_kl_mean.sel(run="small", z_dim=3))
    np.testing.assert_allclose(collapse.z_kl_mean.sel(run="large").values, runs[1].collapse.z_kl_mean.values)
    assert json.loads(combined.attrs["runs"])["large"]["family"] == "vae"
    mixed = combine([runs[0], small_diagnose(mhvae, gaussian_bundle)])
    assert np.isnan(mixed.collapse.beta2.sel(run="run0"))
    with pytest.raises(ValueError, match="run_names"):
        combine(runs, run_names=["same", "same"])


REAL_MODELS = [
    ("vae", dict(input_dim=64, latent_dim=3), False),
    ("cvae", dict(x_dim=16, y_dim=48, latent_dim=3), True),
    ("cvae", dict(x_dim=16, y_dim=48, latent_dim=3, arch="mlp", hidden_dims=(8,), prior="learned"), True),
    ("mhvae", dict(input_dim=64, latent_dims=(3, 2)), False),
]


@pytest.mark.parametrize("family,options,paired", REAL_MODELS)
def test_real_models_get_a_theory_group(family, options, paired):
    from ppl_vae.data import load as load_data
    from ppl_vae.models import CONFIG_CLASSES, build_model

    torch.manual_seed(0)
    model = build_model(CONFIG_CLASSES[family](**options))
    bundle = load_data("digits", paired=paired, classes=[3])
    idata = diagnose(model, bundle, n_obs=4, n_draws=3, iw_samples=4, kl_samples=2, progress=False, device="cpu")
    theory = idata.theory
    assert theory.sizes["mode"] >= 3
    sv = [name for name in theory.data_vars if name.endswith("_sv") and not name.startswith("learned_")]
    assert sv
    if options.get("arch", "linear") == "linear":
        assert theory.attrs["prediction"].startswith("closed form")
        for name in sv:
            np.testing.assert_allclose(theory[f"{name}_error"], theory[f"learned_{name}"] - theory[name])
    else:
        assert theory.attrs["prediction"].startswith("linear-model prediction")
        assert not any(name.startswith("learned_") for name in theory.data_vars)
    assert json.loads(idata.attrs["model_config"])["family"] == family
    for site in model.latent_sites:
        assert idata.collapse[f"{site}_kl"].sizes[f"{site}_dim"] == model.latent_dims[site]


def test_configurations_outside_the_theorems_still_diagnose():
    from ppl_vae.data import load as load_data
    from ppl_vae.models import CVAEConfig, MHVAEConfig, build_model

    small = dict(n_obs=2, n_draws=2, iw_samples=2, kl_samples=2, progress=False, device="cpu")
    mhvae = build_model(MHVAEConfig(input_dim=64, latent_dims=(3, 2), sigma1=None))
    idata = diagnose(mhvae, load_data("digits", classes=[1]), **small)
    assert "theory" not in idata.groups() and "sigma1" in idata.attrs["theory_unavailable"]
    learned_prior = build_model(CVAEConfig(x_dim=16, y_dim=48, latent_dim=3, prior="learned"))
    idata = diagnose(learned_prior, load_data("digits", paired=True, classes=[1]), **small)
    assert idata.theory.attrs["prediction"].startswith("linear-model prediction")
    assert "prior" in idata.theory.attrs["readout_unavailable"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_diagnose_on_cuda_agrees_with_the_cpu(exact_vae, gaussian_bundle):
    from scipy.stats import multivariate_normal

    model, (U, eta_enc, eta_dec) = exact_vae
    on_cpu = small_diagnose(model, gaussian_bundle)
    on_gpu = small_diagnose(model, gaussian_bundle, device="cuda")
    assert on_gpu.attrs["device"].startswith("cuda")
    # the KL of a single latent involves no random draw: the devices must agree to float32 precision
    np.testing.assert_allclose(on_gpu.collapse.z_kl, on_cpu.collapse.z_kl, rtol=1e-5, atol=1e-6)
    cov = eta_enc**2 * (U @ U.T).numpy() + eta_dec**2 * np.eye(U.shape[0])
    exact = multivariate_normal(np.zeros(U.shape[0]), cov).logpdf(gaussian_bundle.x.double().numpy())
    np.testing.assert_allclose(on_gpu.metrics.iw_log_likelihood_pointwise, exact, rtol=1e-4)


def test_diagnose_refuses_data_that_does_not_fit_the_model(cvae_and_bundle):
    from ppl_vae.models import CVAEConfig, build_model

    _, bundle = cvae_and_bundle
    model = build_model(CVAEConfig(x_dim=3, y_dim=5, latent_dim=2))
    narrow = DataBundle("narrow", bundle.x[:, :-1], bundle.y)
    with pytest.raises(ValueError, match="data x must have shape"):
        diagnose(model, narrow, iw_samples=2, progress=False, device="cpu")


def test_the_log_likelihood_group_is_the_metrics_pointwise_values_at_the_observed_points():
    from ppl_vae.diagnostics.core import log_likelihood_group
    from ppl_vae.diagnostics.likelihood import metrics_dataset

    rng = np.random.default_rng(0)
    pointwise = {name: rng.normal(size=9) for name in ("iw_log_likelihood", "elbo", "elbo_beta", "squared_error")}
    metrics = metrics_dataset(pointwise, iw_samples=7, seed=2, digest="abc")
    obs_index = np.array([1, 4, 8])
    got = log_likelihood_group(metrics, "y", "test", obs_index)
    # what it is, spelled with xarray's selection (as the group was first built)
    source = metrics["iw_log_likelihood_pointwise"]
    expected = xr.Dataset({"y": source.isel(eval_obs=obs_index).rename(eval_obs="obs").assign_coords(obs=obs_index)
                           .expand_dims(chain=[0], draw=[0]).assign_attrs(
        units="nats per data point", long_name="importance-weighted log p(y) per point, K = 7 guide draws",
        evaluated_on="test")}).assign_attrs(eval_data_sha256="abc", iw_samples=7)
    xr.testing.assert_identical(got, expected)
    assert got["y"].attrs == expected["y"].attrs and got["y"].dims == ("chain", "draw", "obs")
    np.testing.assert_array_equal(got["y"].values[0, 0], pointwise["iw_log_likelihood"][obs_index])
