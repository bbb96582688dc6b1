"""diagnose_group: K configurations diagnosed in batched passes equal diagnose of each model alone."""

import functools

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr

from ppl_vae.data import synthetic_gaussian, synthetic_pairs, train_test_split
from ppl_vae.diagnostics import diagnose, diagnose_group
from ppl_vae.models import CVAEConfig, MHVAEConfig, build_model

#: Small but complete settings; one seed for every configuration, as in a sweep.
OPTIONS = {"n_obs": 5, "n_draws": 7, "iw_samples": 30, "kl_samples": 4, "seed": 3}
#: The stacked networks sum in another order than the lone ones: float32 round-off.
RTOL, ATOL = 1e-4, 1e-5


def _cvae(arch: str, beta: float, eta_dec: float) -> CVAEConfig:
    return CVAEConfig(x_dim=4, y_dim=5, latent_dim=3, arch=arch, hidden_dims=(8,), beta=beta, eta_dec=eta_dec)


def _mhvae(beta: float, eta_dec: float) -> MHVAEConfig:
    return MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(8,), beta1=beta, beta2=2 * beta,
                       eta_dec=eta_dec)


def _cnn_cvae(beta: float, eta_dec: float) -> CVAEConfig:
    """8x8 images, x the bottom-left quadrant: the batched ConvEncoder / ConvDecoder see (S, K, n, d) draws."""
    return CVAEConfig(x_dim=16, y_dim=48, latent_dim=3, arch="cnn", image_shape=(8, 8), split="quadrant",
                      hidden_dims=(8,), beta=beta, eta_dec=eta_dec, prior="learned")


#: (family builder, data) cases; each gets four configurations with distinct hyper-parameters and seeds.
CASES = {
    "linear-cvae": (lambda b, e: _cvae("linear", b, e), lambda: synthetic_pairs(90, 4, y_dim=5, seed=0)),
    "mlp-cvae": (lambda b, e: _cvae("mlp", b, e), lambda: synthetic_pairs(90, 4, y_dim=5, seed=1)),
    "mlp-mhvae": (_mhvae, lambda: synthetic_gaussian(90, 6, seed=2)),
    "cnn-cvae": (_cnn_cvae, lambda: synthetic_pairs(90, 16, y_dim=48, seed=3)),
}
HYPERPARAMETERS = [(0.5, 1.0), (1.0, 0.5), (2.0, 1.0), (0.25, 2.0)]


def _models(case: str) -> list:
    make_config, _ = CASES[case]
    models = []
    for seed, (beta, eta_dec) in enumerate(HYPERPARAMETERS, start=10):
        torch.manual_seed(seed)
        models.append(build_model(make_config(beta, eta_dec)))
    return models


def _split(case: str):
    _, make_data = CASES[case]
    return train_test_split(make_data(), 0.25, seed=0)


def _alone(model, train, test, **options):
    with model.unregistered():
        return diagnose(model, train, test_data=test, progress=False, **{**OPTIONS, **options})


def assert_same_diagnostics(got: az.InferenceData, expected: az.InferenceData) -> None:
    """Same groups, variables, dims, coords and attributes; values to float round-off."""
    assert got.groups() == expected.groups()
    assert set(got.attrs) == set(expected.attrs)
    for key, value in expected.attrs.items():
        np.testing.assert_array_equal(got.attrs[key], value, err_msg=key)
    for group in expected.groups():
        ours, theirs = got[group], expected[group]
        xr.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
        assert ours.attrs == theirs.attrs, group
        for name, variable in theirs.variables.items():
            assert ours[name].dims == variable.dims and ours[name].dtype == variable.dtype, (group, name)
            assert ours[name].attrs == variable.attrs, (group, name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_configuration_equals_diagnose_of_its_model(case):
    models = _models(case)
    train, test = _split(case)
    group = diagnose_group(models, train, test_data=test, **OPTIONS)
    assert len(group) == len(models)
    for k, model in enumerate(models):
        assert_same_diagnostics(group[k], _alone(model, train, test))
    # The configurations differ, so a configuration-index mix-up could not pass the comparison above.
    metrics = [idata.metrics.iw_log_likelihood.item() for idata in group]
    assert len(set(metrics)) == len(models)
    collapse = [idata.collapse for idata in group]
    site = models[0].latent_sites[0]
    assert not np.allclose(collapse[0][f"{site}_kl"], collapse[1][f"{site}_kl"])


@pytest.mark.parametrize("case", ["mlp-cvae", "mlp-mhvae"])
def test_a_configuration_does_not_depend_on_its_group(case):
    models = _models(case)
    train, test = _split(case)
    of_four = diagnose_group(models, train, test_data=test, **OPTIONS)
    of_two = diagnose_group([models[2], models[0]], train, test_data=test, **OPTIONS)
    assert_same_diagnostics(of_two[0], of_four[2])
    assert_same_diagnostics(of_two[1], of_four[0])


@pytest.mark.parametrize("max_elements", [1, 10**9])
def test_the_likelihood_pass_may_be_sliced_without_changing_a_number(max_elements):
    """max_elements=1: one configuration at a time (the lone models); 10**9: all four in one batch."""
    models = _models("mlp-cvae")
    train, test = _split("mlp-cvae")
    group = diagnose_group(models, train, test_data=test, max_elements=max_elements, **OPTIONS)
    for k, model in enumerate(models):
        assert_same_diagnostics(group[k], _alone(model, train, test))


def test_diagnostics_without_test_data_use_the_training_rows():
    models = _models("linear-cvae")[:2]
    train, _ = _split("linear-cvae")
    group = diagnose_group(models, train, **OPTIONS)
    assert group[1].attrs["metrics_data"] == "train"
    assert_same_diagnostics(group[1], _alone(models[1], train, None))


def test_models_that_cannot_share_a_batch_are_refused():
    train, test = _split("mlp-cvae")
    models = [build_model(_cvae("mlp", 1.0, 1.0)), build_model(_cvae("linear", 1.0, 1.0))]
    with pytest.raises(ValueError, match="one group"):
        diagnose_group(models, train, test_data=test, **OPTIONS)
    with pytest.raises(ValueError, match="at least one"):
        diagnose_group([], train, **OPTIONS)


@pytest.mark.parametrize("case", ["linear-cvae", "mlp-mhvae"])
def test_groups_copied_from_the_first_configuration_equal_groups_built_for_each(case, monkeypatch):
    """diagnose_group builds configuration 0's draw groups and copies them with the others' values.

    The result must equal, bit for bit and in every attribute and variable order, the
    groups built from scratch for every configuration (the code before the copies).
    """
    import ppl_vae.diagnostics.group as group

    models = _models(case)
    train, test = _split(case)
    copied = diagnose_group(models, train, test_data=test, as_inference_data=False, **OPTIONS)
    built_each = functools.partial(group.draw_datasets, like=None)
    monkeypatch.setattr(group, "draw_datasets", lambda *args, like=None: built_each(*args))
    built = diagnose_group(models, train, test_data=test, as_inference_data=False, **OPTIONS)
    for ours, theirs in zip(copied, built):
        assert ours.groups() == theirs.groups() and ours.attrs == theirs.attrs
        for name in theirs.groups():
            assert ours[name].identical(theirs[name]), name
            assert list(ours[name].variables) == list(theirs[name].variables), name
            for var in theirs[name].variables:
                assert ours[name][var].dtype == theirs[name][var].dtype, (name, var)
                assert ours[name][var].attrs == theirs[name][var].attrs, (name, var)
