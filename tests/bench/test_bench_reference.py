"""The plain-PyTorch losses are the losses Pyro computes."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.bench.reference import gaussian_kl, gaussian_log_density, plain_loss
from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model


def test_gaussian_helpers_match_torch_distributions():
    torch.manual_seed(0)
    value, loc, scale = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5, 3) + 0.1
    expected = torch.distributions.Normal(loc, scale).log_prob(value).sum(-1)
    torch.testing.assert_close(gaussian_log_density(value, loc, scale), expected)
    q, p = torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 2.0)
    torch.testing.assert_close(gaussian_kl(loc, scale, 0.0, 2.0), torch.distributions.kl_divergence(q, p).sum(-1))


@pytest.mark.parametrize("config, data", [
    (CVAEConfig(x_dim=5, y_dim=4, latent_dim=3, arch="mlp", hidden_dims=(6,), beta=0.7, eta_dec=0.6),
     synthetic_pairs(40, 5, y_dim=4, seed=0)),
    (CVAEConfig(x_dim=5, y_dim=4, latent_dim=3, arch="mlp", hidden_dims=(6,), prior="learned", beta=1.4),
     synthetic_pairs(40, 5, y_dim=4, seed=0)),
    (VAEConfig(input_dim=5, latent_dim=2, arch="linear", beta=2.0, eta_enc=0.5), synthetic_gaussian(40, 5, seed=0)),
])
def test_single_latent_losses_equal_trace_mean_field_elbo(config, data):
    model = build_model(config)
    torch.manual_seed(3)
    plain = plain_loss(model, *data.tensors(), data_size=data.n)
    pyro.set_rng_seed(3)
    reference = TraceMeanField_ELBO().differentiable_loss(model.model, model.guide, *data.tensors())
    torch.testing.assert_close(plain, reference, rtol=1e-5, atol=1e-3)


def test_minibatch_loss_is_scaled_to_the_data_set():
    model = build_model(CVAEConfig(x_dim=3, y_dim=3, latent_dim=2))
    data = synthetic_pairs(8, 3, seed=0)
    torch.manual_seed(0)
    small = plain_loss(model, *data.tensors(), data_size=8)
    torch.manual_seed(0)
    scaled = plain_loss(model, *data.tensors(), data_size=80)
    torch.testing.assert_close(scaled, 10 * small)


def test_mhvae_loss_has_the_expectation_of_trace_elbo():
    """Same estimator for z1, closed-form KL for z2: equal on average over many draws."""
    torch.manual_seed(0)
    model = build_model(MHVAEConfig(input_dim=5, latent_dims=(3, 2), arch="mlp", hidden_dims=(6,),
                                    beta1=0.7, beta2=1.5, sigma1=None))
    x = synthetic_gaussian(8, 5, seed=0).x
    draws = 4000
    with torch.no_grad():
        plain = plain_loss(model, x.repeat(draws, 1), data_size=x.shape[0])
        pyro.set_rng_seed(1)
        elbo = Trace_ELBO(num_particles=draws, vectorize_particles=True, max_plate_nesting=1)
        reference = elbo.differentiable_loss(model.model, model.guide, x)
    torch.testing.assert_close(plain, reference, rtol=0.01, atol=0.0)
