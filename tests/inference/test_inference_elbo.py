"""The one ELBO module against Pyro's own estimators, on the suite's real models.

Both sides draw the guide's noise from the same per-configuration generators
(``ConfigNoise``), so a sampled term must equal Pyro's number exactly, not only
in expectation.
"""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference.batched import BatchedModel
from ppl_vae.inference.elbo import (ANALYTIC, SAMPLED, collect_sites, elbo_loss, estimator_name, kl_to_prior,
                                    per_config_loss, site_estimators)
from ppl_vae.inference.randomness import NOISE_STREAM, ConfigNoise, make_generators
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model

CPU = torch.device("cpu")


def _noise(seeds):
    return ConfigNoise(make_generators(seeds, NOISE_STREAM, CPU))


def _cvae_models(arch, betas):
    models = []
    for k, beta in enumerate(betas):
        torch.manual_seed(k)
        models.append(build_model(CVAEConfig(x_dim=5, y_dim=4, latent_dim=3, arch=arch, hidden_dims=(6,),
                                             beta=beta, eta_dec=0.5 + 0.25 * k)))
    return models


def _mhvae_models(beta1s):
    models = []
    for k, beta1 in enumerate(beta1s):
        torch.manual_seed(k)
        models.append(build_model(MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(6,),
                                              beta1=beta1, beta2=1.5)))
    return models


def test_the_estimator_rule_lives_on_the_guide_structure():
    (cvae,) = _cvae_models("mlp", [1.0])
    (mhvae,) = _mhvae_models([1.0])
    vae = build_model(VAEConfig(input_dim=4, latent_dim=2))
    assert site_estimators(cvae) == {"z": ANALYTIC} == site_estimators(vae)
    # p(z1|z2) has a parent the bottom-up guide draws later; p(z2) has none.
    assert site_estimators(mhvae) == {"z1": SAMPLED, "z2": ANALYTIC}
    assert estimator_name(site_estimators(cvae)) == "TraceMeanField_ELBO"
    assert estimator_name({"z1": SAMPLED, "z2": SAMPLED}) == "Trace_ELBO"
    assert estimator_name(site_estimators(mhvae)) == "Trace_ELBO+analytic_KL(z2)"


@pytest.mark.parametrize("arch", ["linear", "mlp"])
def test_configurations_sum_to_trace_mean_field_elbo(arch):
    data = synthetic_pairs(32, 5, y_dim=4, seed=1)
    batched = BatchedModel(_cvae_models(arch, [0.5, 1.0, 2.0]))
    with _noise([0, 1, 2]):
        ours = per_config_loss(batched.model, batched.guide, *data.tensors(), estimators={"z": ANALYTIC})
    with _noise([0, 1, 2]):
        pyros = TraceMeanField_ELBO().differentiable_loss(batched.model, batched.guide, *data.tensors())
    assert ours.shape == (3,)
    torch.testing.assert_close(ours.sum(), pyros, rtol=1e-6, atol=1e-4)


def test_mhvae_sampled_terms_equal_trace_elbo_exactly():
    data = synthetic_gaussian(32, 6, seed=2)
    batched = BatchedModel(_mhvae_models([0.5, 2.0]))
    with _noise([3, 4]):
        ours = per_config_loss(batched.model, batched.guide, data.x, estimators={"z1": SAMPLED, "z2": SAMPLED})
    with _noise([3, 4]):
        pyros = Trace_ELBO().differentiable_loss(batched.model, batched.guide, data.x)
    torch.testing.assert_close(ours.sum(), pyros, rtol=1e-6, atol=1e-4)


def test_mhvae_analytic_z2_is_unbiased_for_trace_elbo_and_has_lower_gradient_variance():
    data = synthetic_gaussian(64, 6, seed=3)
    (model,) = _mhvae_models([1.0])
    estimators = site_estimators(model)
    ours, pyros, grads = [], [], {SAMPLED: [], ANALYTIC: []}
    pyro.set_rng_seed(0)
    for _ in range(400):
        pyros.append(Trace_ELBO().differentiable_loss(model.model, model.guide, data.x).item())
    with _noise([5]):
        for _ in range(400):
            ours.append(elbo_loss(model.model, model.guide, data.x, estimators=estimators).item())
    ours, pyros = torch.tensor(ours), torch.tensor(pyros)
    # Same expectation: the difference of the means is within 4 standard errors.
    standard_error = (ours.var() / len(ours) + pyros.var() / len(pyros)).sqrt()
    assert abs(ours.mean() - pyros.mean()) < 4 * standard_error
    # The analytic z2 term removes the z2 noise from the gradient of the z2 encoder.
    encoder2 = list(model.encoder2.parameters())
    with _noise([6]):
        for _ in range(200):
            for kind in (SAMPLED, ANALYTIC):
                loss = elbo_loss(model.model, model.guide, data.x, estimators={"z1": SAMPLED, "z2": kind})
                grads[kind].append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, encoder2)]))
    variance = {kind: torch.stack(values).var(0).sum() for kind, values in grads.items()}
    assert variance[ANALYTIC] < 0.5 * variance[SAMPLED]


def test_one_configuration_in_the_plate_equals_the_ordinary_model():
    data = synthetic_pairs(16, 5, y_dim=4, seed=3)
    (model,) = _cvae_models("mlp", [0.7])
    batched = BatchedModel([model])
    with _noise([4]):
        ours = per_config_loss(batched.model, batched.guide, *data.tensors(), estimators={"z": ANALYTIC})
    with _noise([4]):
        ordinary = TraceMeanField_ELBO().differentiable_loss(model.model, model.guide, *data.tensors())
    torch.testing.assert_close(ours[0], ordinary, rtol=1e-6, atol=1e-4)


def test_kl_multipliers_scale_only_the_latent_terms():
    data = synthetic_pairs(16, 5, y_dim=4, seed=4)
    (model,) = _cvae_models("mlp", [1.0])
    with _noise([1]):
        full = per_config_loss(model.model, model.guide, *data.tensors(), estimators={"z": ANALYTIC})
    with _noise([1]):
        half = per_config_loss(model.model, model.guide, *data.tensors(), estimators={"z": ANALYTIC},
                               kl_multipliers={"z": torch.tensor(0.5)})
    with _noise([1]):
        none = per_config_loss(model.model, model.guide, *data.tensors(), estimators={"z": ANALYTIC},
                               kl_multipliers={"z": torch.tensor(1e-30)})
    kl = full - none
    assert kl.item() > 0
    torch.testing.assert_close(half, none + 0.5 * kl)


def test_free_bits_floor_the_batch_mean_kl_of_each_dimension():
    data = synthetic_pairs(16, 5, y_dim=4, seed=5)
    (model,) = _cvae_models("mlp", [1.0])
    estimators = {"z": ANALYTIC}
    with _noise([2]):
        plain = per_config_loss(model.model, model.guide, *data.tensors(), estimators=estimators)
    with _noise([2]):
        tiny = per_config_loss(model.model, model.guide, *data.tensors(), estimators=estimators,
                               free_bits={"z": torch.tensor(0.0)})
    torch.testing.assert_close(plain, tiny)  # lambda = 0: the ordinary KL
    with _noise([2]):
        floored = per_config_loss(model.model, model.guide, *data.tensors(), estimators=estimators,
                                  free_bits={"z": torch.tensor(100.0)})
    encoder = list(model.encoder.parameters())
    grads = torch.autograd.grad(floored.sum(), encoder, allow_unused=True)
    # Every dimension sits below a 100-nat floor: the KL term is constant, the encoder
    # only feels the reconstruction.
    with _noise([2]):
        recon_only = per_config_loss(model.model, model.guide, *data.tensors(), estimators=estimators,
                                     kl_multipliers={"z": torch.tensor(0.0)})
    expected = torch.autograd.grad(recon_only.sum(), encoder, allow_unused=True)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    assert floored.item() == pytest.approx(recon_only.item() + 16 * 3 * 100.0, rel=1e-5)


def test_free_bits_on_a_sampled_site_floor_its_one_sample_per_dimension_kl():
    data = synthetic_gaussian(8, 6, seed=6)
    (model,) = _mhvae_models([1.0])
    estimators = site_estimators(model)
    with _noise([0]):
        plain = per_config_loss(model.model, model.guide, data.x, estimators=estimators)
    with _noise([0]):
        zero = per_config_loss(model.model, model.guide, data.x, estimators=estimators,
                               free_bits={"z1": torch.tensor(0.0)})
    with _noise([0]):
        floored = per_config_loss(model.model, model.guide, data.x, estimators=estimators,
                                  free_bits={"z1": torch.tensor(50.0)})
    with _noise([0]):
        no_z1 = per_config_loss(model.model, model.guide, data.x, estimators=estimators,
                                kl_multipliers={"z1": torch.tensor(0.0)})
    # lambda = 0 keeps the one-sample estimate only where it is positive per dimension: never below it
    assert zero.item() >= plain.item() - 1e-4
    # far above every dimension's estimate: the z1 term is the constant B * d1 * lambda (times beta1 = 1)
    assert floored.item() == pytest.approx(no_z1.item() + 8 * 3 * 50.0, rel=1e-5)


def test_sites_outside_the_data_plate_are_refused():
    def model():
        with pyro.plate("a", 2, dim=-3), pyro.plate("b", 2, dim=-2), pyro.plate("data", 3, dim=-1):
            pyro.sample("x", pyro.distributions.Normal(0.0, 1.0), obs=torch.zeros(2, 2, 3))

    def guide():
        pass

    with pytest.raises(ValueError, match="configs"):
        per_config_loss(model, guide, estimators={})


@pytest.mark.parametrize("arch", ["linear", "mlp"])
def test_gradients_equal_pyros_for_sampled_and_observed_sites(arch):
    # The closed forms of the Normal densities and KLs must carry Pyro's gradients, also through
    # a sampled site's value (z1 depends on the encoder through the reparameterisation).
    data = synthetic_gaussian(32, 6, seed=7)
    torch.manual_seed(3)
    model = build_model(MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch=arch, hidden_dims=(6,), beta1=0.7,
                                    beta2=1.3, sigma1=0.8))
    parameters = [p for p in model.parameters() if p.requires_grad]
    with _noise([8]):
        ours = per_config_loss(model.model, model.guide, data.x, estimators={"z1": SAMPLED, "z2": ANALYTIC})
    with _noise([8]):
        guide_trace = pyro.poutine.trace(model.guide).get_trace(data.x)
        model_trace = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_trace)).get_trace(data.x)
    # Pyro's own terms (its traces' log_prob are scaled): log q(z1|x) - log p(z1|z2) - log p(x|z1) at the
    # draws, and TraceMeanField_ELBO's closed-form KL for z2.
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    z2_kl = pyro.distributions.kl.kl_divergence(guide_trace.nodes["z2"]["fn"], model_trace.nodes["z2"]["fn"])
    pyros = (guide_trace.nodes["z1"]["log_prob"] - model_trace.nodes["z1"]["log_prob"]
             - model_trace.nodes["x"]["log_prob"] + z2_kl * guide_trace.nodes["z2"]["scale"]).sum()
    torch.testing.assert_close(ours.sum(), pyros, rtol=1e-6, atol=1e-4)
    for got, want in zip(torch.autograd.grad(ours.sum(), parameters), torch.autograd.grad(pyros, parameters)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["cvae", "mhvae"])
@pytest.mark.parametrize("floors", [None, 0.3])
def test_the_kl_record_of_an_analytic_site_is_its_per_dimension_kl_bit_for_bit(family, floors):
    # An analytic site's recorded KL comes from the parts of the loss's own closed form; it must be
    # the per-dimension KL computed afresh, and asking for it must not move the loss or its gradient.
    if family == "cvae":
        models, data = _cvae_models("mlp", [1.0, 2.0]), synthetic_pairs(16, 5, y_dim=4, seed=7)
    else:
        models, data = _mhvae_models([1.0, 0.5]), synthetic_gaussian(16, 6, seed=7)
    batched = BatchedModel(models)
    estimators = site_estimators(models[0])
    free_bits = None if floors is None else {site: torch.full((2, 1), floors) for site in estimators}
    parameters = list(batched.parameters())
    with _noise([3, 4]):
        plain = per_config_loss(batched.model, batched.guide, *data.tensors(), estimators=estimators,
                                free_bits=free_bits)
    plain_grads = torch.autograd.grad(plain.sum(), parameters, allow_unused=True)
    recorded: dict = {}
    with _noise([3, 4]):
        loss = per_config_loss(batched.model, batched.guide, *data.tensors(), estimators=estimators,
                               free_bits=free_bits, kl_out=recorded)
    assert torch.equal(loss, plain)
    for ours, theirs in zip(torch.autograd.grad(loss.sum(), parameters, allow_unused=True), plain_grads):
        assert (ours is None and theirs is None) or torch.equal(ours, theirs)
    with _noise([3, 4]):
        model_sites, guide_sites = collect_sites(batched.model, batched.guide, *data.tensors())
    for site in estimators:
        fresh = kl_to_prior(guide_sites[site]["fn"], model_sites[site]["fn"], per_dimension=True)
        assert torch.equal(recorded[site], fresh.detach().mean(-2)), site
