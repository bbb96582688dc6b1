"""Model/guide pairs: sites, KL weights, broadcasting, architectures, the ELBO they define."""

import math
from types import SimpleNamespace

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model

N = 5


def _batch(config, seed=0):
    generator = torch.Generator().manual_seed(seed)
    if config.family == "cvae":
        return (torch.randn(N, config.x_dim, generator=generator), torch.randn(N, config.y_dim, generator=generator))
    return (torch.randn(N, config.input_dim, generator=generator),)


CONFIGS = [
    VAEConfig(6, 3, beta=0.7),
    VAEConfig(6, 3, arch="mlp", hidden_dims=(8, 4), encoder_std=0.5),
    VAEConfig(64, 3, arch="cnn", image_shape=(8, 8), hidden_dims=(16,)),
    CVAEConfig(4, 5, 3, beta=1.5),
    CVAEConfig(4, 5, 3, arch="mlp", hidden_dims=(8, 8), prior="learned"),
    CVAEConfig(4, 5, 3, arch="mlp", hidden_dims=(8,), latent_mapping="separate"),
    CVAEConfig(16, 48, 3, arch="cnn", image_shape=(8, 8), split="quadrant", hidden_dims=(16,), prior="learned"),
    CVAEConfig(32, 32, 3, arch="cnn", image_shape=(8, 8), split="half", hidden_dims=(16,),
               latent_mapping="separate"),
    MHVAEConfig(6, (4, 3), beta1=0.5, beta2=2.0),
    MHVAEConfig(6, (4, 3), arch="mlp", hidden_dims=(8,), sigma1=None, sigma2=0.4),
    MHVAEConfig(64, (4, 3), arch="cnn", image_shape=(8, 8), hidden_dims=(16,)),
]


def _ids(config):
    return f"{config.family}-{config.arch}"


def _traces(model, batch):
    guide_trace = poutine.trace(model.guide).get_trace(*batch)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(*batch)
    return guide_trace, model_trace


def _weights(config):
    if config.family == "mhvae":
        return {"z1": config.beta1, "z2": config.beta2}
    return {"z": config.beta}


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_sites_shapes_and_kl_weights(config):
    model = build_model(config)
    batch = _batch(config)
    guide_trace, model_trace = _traces(model, batch)
    weights = _weights(config)
    assert model.latent_sites == tuple(weights)
    for site, weight in weights.items():
        for trace in (guide_trace, model_trace):
            node = trace.nodes[site]
            assert node["value"].shape == (N, model.latent_dims[site])
            assert float(node["scale"]) == pytest.approx(weight)  # beta in model AND guide
    observed = model_trace.nodes[model.observed_site]
    assert observed["is_observed"]
    assert torch.equal(observed["value"], batch[-1] if config.family == "cvae" else batch[0])
    assert observed["fn"].base_dist.scale.unique().item() == pytest.approx(config.eta_dec)


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_model_and_guide_broadcast_over_an_outer_samples_plate(config):
    model = build_model(config)
    batch = _batch(config)
    samples = 7

    def in_plate(fn):
        def wrapped(*args):
            with pyro.plate("samples", samples, dim=-2):
                return fn(*args)
        return wrapped

    wrapped = SimpleNamespace(guide=in_plate(model.guide), model=in_plate(model.model))
    guide_trace, model_trace = _traces(wrapped, batch)
    for site in model.latent_sites:
        assert guide_trace.nodes[site]["value"].shape == (samples, N, model.latent_dims[site])
        assert model_trace.nodes[site]["fn"].batch_shape == (samples, N)
    assert model_trace.nodes[model.observed_site]["fn"].batch_shape == (samples, N)
    # the samples are distinct draws, not one draw repeated
    first = model.latent_sites[0]
    values = guide_trace.nodes[first]["value"]
    assert not torch.allclose(values[0], values[1])


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.arch == "linear"], ids=_ids)
def test_linear_architecture_has_no_biases(config):
    model = build_model(config)
    names = [name for name, _ in model.named_parameters()]
    assert names and not any("bias" in name for name in names)


def test_instances_register_distinct_pyro_parameters():
    config = VAEConfig(4, 2)
    first, second = build_model(config), build_model(config)
    assert first.pyro_name != second.pyro_name
    batch = _batch(config)
    pyro.clear_param_store()
    first.guide(*batch)
    second.guide(*batch)
    store = pyro.get_param_store()
    assert any(name.startswith(first.pyro_name + "$$$") for name in store.keys())
    assert any(name.startswith(second.pyro_name + "$$$") for name in store.keys())
    # the store holds each module's own tensors, not the first module's copy
    for name, value in second.named_parameters():
        assert store[f"{second.pyro_name}$$${name}"] is value


def test_learned_prior_is_the_model_z_site_and_depends_on_x():
    config = CVAEConfig(4, 5, 3, arch="mlp", hidden_dims=(8,), prior="learned")
    model = build_model(config)
    x, y = _batch(config)
    _, model_trace = _traces(model, (x, y))
    prior = model_trace.nodes["z"]["fn"].base_dist
    expected_loc, expected_scale = model.prior(x)
    assert torch.allclose(prior.loc, expected_loc) and torch.allclose(prior.scale, expected_scale)
    _, other_trace = _traces(model, (x + 1.0, y))
    assert not torch.allclose(other_trace.nodes["z"]["fn"].base_dist.loc, prior.loc)


def test_standard_cvae_prior_is_zero_mean_with_eta_enc():
    config = CVAEConfig(4, 5, 3, eta_enc=1.7)
    _, model_trace = _traces(build_model(config), _batch(config))
    prior = model_trace.nodes["z"]["fn"].base_dist
    assert torch.all(prior.loc == 0) and torch.allclose(prior.scale, torch.tensor(1.7))


def test_separate_latent_mappings_keep_x_and_y_paths_apart():
    config = CVAEConfig(4, 5, 3, arch="mlp", hidden_dims=(8,), latent_mapping="separate")
    encoder = build_model(config).encoder
    x, y = _batch(config)
    loc, scale = encoder(x, y)
    x_loc, x_scale = encoder.x_head(x)
    y_loc, y_scale = encoder.y_head(y)
    assert torch.allclose(loc, x_loc + y_loc) and torch.allclose(scale, x_scale * y_scale)


@torch.no_grad()
def _linear_vae_exact_loss(model, x):
    """Per-sample negative beta-ELBO of the linear VAE in closed form (expectations over q exact)."""
    c = model.config
    W, U = model.encoder.loc.weight.double(), model.decoder.weight.double()
    std = model.encoder.log_std.exp().double()
    x = x.double()
    mean = x @ W.T
    d = x.shape[1]
    residual = ((x - mean @ U.T) ** 2).sum(-1) + (std**2 * (U**2).sum(0)).sum()
    recon = 0.5 * d * math.log(2 * math.pi * c.eta_dec**2) + residual / (2 * c.eta_dec**2)
    kl = (torch.log(c.eta_enc / std) + (std**2 + mean**2) / (2 * c.eta_enc**2) - 0.5).sum(-1)
    return (recon + c.beta * kl).mean().item()


def test_pyro_elbo_matches_closed_form_loss_of_linear_vae():
    torch.manual_seed(0)
    config = VAEConfig(5, 3, beta=1.7, eta_enc=1.3, eta_dec=0.8)
    model = build_model(config)
    with torch.no_grad():
        model.encoder.log_std.copy_(torch.tensor([-0.5, 0.0, 0.3]))
    (x,) = _batch(config)
    particles = 20000
    elbo = TraceMeanField_ELBO(num_particles=particles, vectorize_particles=True)
    pyro_loss = elbo.differentiable_loss(model.model, model.guide, x).item() / N
    assert pyro_loss == pytest.approx(_linear_vae_exact_loss(model, x), rel=5e-3)


def test_mhvae_trace_elbo_weights_each_level():
    torch.manual_seed(0)
    config = MHVAEConfig(5, (3, 2), beta1=0.5, beta2=3.0, sigma1=0.7)
    model = build_model(config)
    (x,) = _batch(config)
    guide_trace, model_trace = _traces(model, (x,))
    for trace in (guide_trace, model_trace):
        trace.compute_log_prob()
    expected = -(model_trace.nodes["x"]["log_prob_sum"]
                 + 0.5 * (model_trace.nodes["z1"]["unscaled_log_prob"].sum()
                          - guide_trace.nodes["z1"]["unscaled_log_prob"].sum())
                 + 3.0 * (model_trace.nodes["z2"]["unscaled_log_prob"].sum()
                          - guide_trace.nodes["z2"]["unscaled_log_prob"].sum()))
    assert model.analytic_kl_sites == ("z2",)  # z1 stays sampled: p(z1|z2) has a guide-later parent
    elbo = (model_trace.log_prob_sum() - guide_trace.log_prob_sum()).item()
    assert elbo == pytest.approx(-expected.item(), rel=1e-5)
    # and the z1 model site is N(U2 z2, eta_dec), i.e. top-down
    z2 = guide_trace.nodes["z2"]["value"]
    assert torch.allclose(model_trace.nodes["z1"]["fn"].base_dist.loc, model.decoder2(z2))
