"""The headline's thresholds as options, low-information dimensions, convergence, and ArviZ's entry points."""

import arviz as az
import numpy as np
import pytest
import xarray as xr

from ppl_vae.diagnostics import collapse_dataset, combine, compare_heldout, diagnose, load, loo, save, waic
from ppl_vae.diagnostics.collapse import low_information_dimensions

SMALL = dict(n_obs=4, n_draws=3, iw_samples=5, kl_samples=2, theory=False, progress=False, device="cpu")


def _beta_vae_like_kl() -> xr.Dataset:
    """16 dimensions: 5 at ~1 nat, 9 at 0.012-0.028 nats, 2 below 0.01 (the issue's beta-VAE)."""
    means = np.array([1.1, 0.9, 1.0, 1.2, 0.95] + list(np.linspace(0.012, 0.028, 9)) + [0.008, 0.009])
    kl = np.tile(means, (10, 1))
    return xr.Dataset({"z_kl": (("obs", "z_dim"), kl), "z_mean": (("obs", "z_dim"), np.random.default_rng(0)
                                                                    .normal(size=kl.shape))})


def test_low_information_dimensions_are_counted_beside_the_collapsed_ones():
    collapse = collapse_dataset(_beta_vae_like_kl(), ("z",), low_information_share=0.01)
    assert int(collapse.z_n_collapsed) == 2
    assert int(collapse.z_n_low_information) == 9  # each < 1% of the ~5.4 nats in total
    assert collapse.attrs["low_information_share"] == 0.01 and collapse.attrs["collapse_epsilon"] == 0.01
    np.testing.assert_allclose(float(collapse.z_kl_share.sum()), 1.0)
    # counterfactual: a share below each dimension's says no, a higher epsilon moves them to collapsed
    assert int(collapse_dataset(_beta_vae_like_kl(), ("z",), low_information_share=0.001).z_n_low_information) == 0
    assert int(collapse_dataset(_beta_vae_like_kl(), ("z",), collapse_epsilon=0.03).z_n_collapsed) == 11


def test_low_information_needs_a_share_in_the_unit_interval():
    kl_mean = xr.DataArray([1.0, 0.001], dims="z_dim")
    assert low_information_dimensions(kl_mean, xr.DataArray([False, False], dims="z_dim")).values.tolist() == [
        False, True]
    for bad in (0, 1, -0.5, 2.0, "1%"):
        with pytest.raises(ValueError, match="low_information_share"):
            low_information_dimensions(kl_mean, xr.DataArray([False, False], dims="z_dim"), bad)


def test_diagnose_takes_the_thresholds_and_the_convergence_verdict(exact_vae, gaussian_bundle):
    model, _ = exact_vae
    idata = diagnose(model, gaussian_bundle, collapse_epsilon=1e-6, low_information_share=0.2,
                     converged={"converged": False, "reason": "loss still falling"}, **SMALL)
    assert idata.attrs["collapse_epsilon"] == 1e-6 == idata.collapse.attrs["collapse_epsilon"]
    assert idata.attrs["low_information_share"] == 0.2
    assert idata.attrs["converged"] == 0 and idata.attrs["convergence_reason"] == "loss still falling"
    assert "converged" not in diagnose(model, gaussian_bundle, **SMALL).attrs
    with pytest.raises(ValueError, match="collapse_epsilon"):
        diagnose(model, gaussian_bundle, collapse_epsilon=0, **SMALL)
    with pytest.raises(ValueError, match="converged"):
        diagnose(model, gaussian_bundle, converged="yes", **SMALL)


def test_held_out_points_for_every_arviz_group(exact_vae, gaussian_bundle):
    model, _ = exact_vae
    train, test = gaussian_bundle.subset(slice(0, 40)), gaussian_bundle.subset(slice(40, 60))
    idata = diagnose(model, train, test_data=test, **SMALL)
    rows = idata.observed_data.obs.values
    np.testing.assert_array_equal(idata.observed_data.x.values, test.x.numpy()[rows])
    for group in ("posterior", "posterior_predictive", "log_likelihood"):
        np.testing.assert_array_equal(idata[group].obs.values, rows)
    assert idata.collapse.z_kl.sizes["obs"] == test.n and idata.attrs["diagnosed_data"] == "test"


@pytest.fixture
def two_runs(tmp_path, exact_vae, gaussian_bundle):
    model, _ = exact_vae
    train, test = gaussian_bundle.subset(slice(0, 40)), gaussian_bundle.subset(slice(40, 60))
    runs = [diagnose(model, train, test_data=test, seed=seed, **SMALL) for seed in (0, 1)]
    return [load(save(run, tmp_path / f"run{i}.nc")) for i, run in enumerate(runs)]


def test_loo_and_waic_say_why_they_do_not_apply(two_runs):
    for fn in (loo, waic):
        with pytest.raises(ValueError, match="point estimates.*heldout_elpd"):
            fn(two_runs[0])


def test_combine_and_compare_heldout_take_a_list_or_a_dict(two_runs):
    as_dict = {"a": two_runs[0], "b": two_runs[1]}
    assert list(combine(as_dict).collapse.run.values) == ["a", "b"]
    assert list(combine(two_runs, run_names=["a", "b"]).collapse.run.values) == ["a", "b"]
    by_dict, by_list = compare_heldout(as_dict), compare_heldout(two_runs, run_names=["a", "b"])
    assert sorted(by_dict.index) == sorted(by_list.index) == ["a", "b"]
    np.testing.assert_allclose(by_dict.loc["a", "elpd_loo"], by_list.loc["a", "elpd_loo"])
    with pytest.raises(ValueError, match="run_names"):
        combine(as_dict, run_names=["x", "y"])
    with pytest.raises(ValueError, match="list of InferenceData or a dict"):
        compare_heldout(two_runs[0])


def test_arviz_compare_on_two_of_our_files_through_the_elpd_object(two_runs):
    from ppl_vae.diagnostics import heldout_elpd

    table = az.compare({"a": heldout_elpd(two_runs[0]), "b": heldout_elpd(two_runs[1])}, ic="loo")
    pointwise = two_runs[0].metrics.iw_log_likelihood_pointwise.values
    assert table.loc["a", "elpd_loo"] == pytest.approx(pointwise.sum())


def test_the_public_names_import_from_the_package():
    from ppl_vae.diagnostics import combine, compare_heldout, diagnose, load, save  # noqa: F401
