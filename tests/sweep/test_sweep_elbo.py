"""The per-configuration ELBO against Pyro's own estimators."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.models import CVAEConfig, MHVAEConfig, build_model
from ppl_vae.sweep.elbo import elbo_loss, per_config_loss
from ppl_vae.sweep.vectorised import BatchedModel


def _cvae_models(arch, betas):
    models = []
    for k, beta in enumerate(betas):
        torch.manual_seed(k)
        models.append(build_model(CVAEConfig(x_dim=5, y_dim=4, latent_dim=3, arch=arch, hidden_dims=(6,),
                                             beta=beta, eta_dec=0.5 + 0.25 * k)))
    return models


@pytest.mark.parametrize("arch", ["linear", "mlp"])
def test_sum_over_configurations_equals_trace_mean_field_elbo(arch):
    data = synthetic_pairs(32, 5, y_dim=4, seed=1)
    batched = BatchedModel(_cvae_models(arch, [0.5, 1.0, 2.0]))
    pyro.set_rng_seed(0)
    ours = per_config_loss(batched.model, batched.guide, *data.tensors())
    pyro.set_rng_seed(0)
    pyros = TraceMeanField_ELBO().differentiable_loss(batched.model, batched.guide, *data.tensors())
    assert ours.shape == (3,)
    torch.testing.assert_close(ours.sum(), pyros, rtol=1e-5, atol=1e-3)


def test_mhvae_sum_equals_trace_elbo():
    data = synthetic_gaussian(32, 6, seed=2)
    models = [build_model(MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(6,), beta1=b))
              for b in (0.5, 2.0)]
    batched = BatchedModel(models)
    assert not batched.mean_field
    pyro.set_rng_seed(0)
    ours = per_config_loss(batched.model, batched.guide, data.x, mean_field=False)
    pyro.set_rng_seed(0)
    pyros = Trace_ELBO().differentiable_loss(batched.model, batched.guide, data.x)
    torch.testing.assert_close(ours.sum(), pyros, rtol=1e-5, atol=1e-3)


def test_one_configuration_equals_the_ordinary_model():
    data = synthetic_pairs(16, 5, y_dim=4, seed=3)
    (model,) = _cvae_models("mlp", [0.7])
    batched = BatchedModel([model])
    pyro.set_rng_seed(4)
    ours = per_config_loss(batched.model, batched.guide, *data.tensors())
    pyro.set_rng_seed(4)
    ordinary = TraceMeanField_ELBO().differentiable_loss(model.model, model.guide, *data.tensors())
    torch.testing.assert_close(ours[0], ordinary, rtol=1e-5, atol=1e-3)


def test_sites_outside_the_configs_plate_are_refused():
    def model():
        with pyro.plate("data", 3, dim=-1):
            pyro.sample("x", pyro.distributions.Normal(0.0, 1.0), obs=torch.zeros(3))

    def guide():
        pass

    with pytest.raises(ValueError, match="configs"):
        per_config_loss(model, guide)


@pytest.mark.parametrize("family", ["cvae", "mhvae"])
def test_elbo_loss_equals_pyro_differentiable_loss_for_one_model(family):
    if family == "cvae":
        data = synthetic_pairs(24, 5, y_dim=4, seed=5)
        (model,) = _cvae_models("mlp", [0.5])
        elbo, mean_field = TraceMeanField_ELBO(), True
    else:
        data = synthetic_gaussian(24, 6, seed=5)
        model = build_model(MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(6,), beta1=0.5))
        elbo, mean_field = Trace_ELBO(), False
    pyro.set_rng_seed(6)
    ours = elbo_loss(model.model, model.guide, *data.tensors(), mean_field=mean_field)
    pyro.set_rng_seed(6)
    pyros = elbo.differentiable_loss(model.model, model.guide, *data.tensors())
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-3)
