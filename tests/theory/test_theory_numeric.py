"""The numeric check itself: the expected losses are right, their gradients are right, the minimiser works.

The closed forms are tested against :mod:`ppl_vae.theory.numeric`, so the
expected losses there are checked independently: against a Monte Carlo
average of the sampled negative beta-ELBO (torch.distributions, model and
encoder written as in SPEC 2), and the NumPy gradients against torch autograd.
"""

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ppl_vae.theory import cvae_expected_loss, mhvae_expected_loss, numeric_linear_vae, vae_expected_loss
from ppl_vae.theory import numeric

N_DRAWS = 4000  # latent draws per data point
N_POINTS = 50


def gaussian(mean, std):
    return Normal(mean, std * torch.ones_like(mean))


def mc_check(per_draw_loss, exact):
    """The exact expectation lies within 5 standard errors of the Monte Carlo mean."""
    mean = per_draw_loss.mean().item()
    standard_error = per_draw_loss.std().item() / np.sqrt(per_draw_loss.numel())
    assert abs(mean - float(exact)) < 5 * standard_error + 1e-12
    assert standard_error < 0.01 * abs(mean)  # the check has teeth


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(3)


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_vae_expected_loss_is_the_mean_negative_elbo(gen):
    beta, eta_enc, eta_dec = 0.7, 1.3, 0.8
    x = randn(gen, N_POINTS, 4) * torch.tensor([2.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    decoder, encoder, std = randn(gen, 4, 2), randn(gen, 2, 4), torch.tensor([0.4, 0.9], dtype=torch.float64)
    q = gaussian((x @ encoder.T).unsqueeze(0).expand(N_DRAWS, -1, -1), std)
    z = q.mean + std * randn(gen, N_DRAWS, N_POINTS, 2)
    loss = (-gaussian(z @ decoder.T, eta_dec).log_prob(x).sum(-1)
            + beta * (q.log_prob(z) - gaussian(torch.zeros_like(z), eta_enc).log_prob(z)).sum(-1))
    exact = vae_expected_loss(decoder, encoder, std, x.T @ x / N_POINTS, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)
    mc_check(loss, exact)


def test_cvae_expected_loss_is_the_mean_negative_elbo(gen):
    beta, eta_enc, eta_dec = 1.4, 0.8, 0.6
    x = randn(gen, N_POINTS, 2)
    y = x @ randn(gen, 2, 3) + 0.5 * randn(gen, N_POINTS, 3)
    decoder_z, decoder_x = randn(gen, 3, 2), randn(gen, 3, 2)
    encoder_x, encoder_y = randn(gen, 2, 2), randn(gen, 2, 3)
    std = torch.tensor([0.3, 1.1], dtype=torch.float64)
    mean = x @ encoder_x.T + y @ encoder_y.T
    z = mean + std * randn(gen, N_DRAWS, N_POINTS, 2)
    loss = (-gaussian(z @ decoder_z.T + x @ decoder_x.T, eta_dec).log_prob(y).sum(-1)
            + beta * (gaussian(mean, std).log_prob(z) - gaussian(torch.zeros_like(z), eta_enc).log_prob(z)).sum(-1))
    n = N_POINTS
    exact = cvae_expected_loss(decoder_z, decoder_x, encoder_x, encoder_y, std, x.T @ x / n, y.T @ x / n, y.T @ y / n,
                               beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)
    mc_check(loss, exact)


def test_mhvae_expected_loss_is_the_mean_negative_elbo(gen):
    beta1, beta2, eta_enc, eta_dec, sigma1 = 0.6, 1.5, 1.2, 0.9, 0.7
    x = randn(gen, N_POINTS, 4) * torch.tensor([2.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    decoder1, decoder2 = randn(gen, 4, 3), randn(gen, 3, 2)
    encoder1, encoder2 = randn(gen, 3, 4), randn(gen, 2, 3)
    z2_std = torch.tensor([0.5, 1.3], dtype=torch.float64)
    z1_mean = x @ encoder1.T
    z1 = z1_mean + sigma1 * randn(gen, N_DRAWS, N_POINTS, 3)
    z2_mean = z1 @ encoder2.T
    z2 = z2_mean + z2_std * randn(gen, N_DRAWS, N_POINTS, 2)
    z1_term = gaussian(z1_mean, sigma1).log_prob(z1) - gaussian(z2 @ decoder2.T, eta_dec).log_prob(z1)
    kl_z2 = kl_divergence(gaussian(z2_mean, z2_std), gaussian(torch.zeros_like(z2_mean), eta_enc))
    loss = (-gaussian(z1 @ decoder1.T, eta_dec).log_prob(x).sum(-1) + beta1 * z1_term.sum(-1)
            + beta2 * kl_z2.sum(-1))
    exact = mhvae_expected_loss(decoder1, decoder2, encoder1, encoder2, z2_std, x.T @ x / N_POINTS, beta1=beta1,
                                beta2=beta2, eta_enc=eta_enc, eta_dec=eta_dec, sigma1=sigma1)
    mc_check(loss, exact)


def autograd_reference(loss, params):
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    value = loss(tensors)
    grads = torch.autograd.grad(value, list(tensors.values()))
    return float(value.detach()), {name: grad.numpy() for name, grad in zip(tensors, grads)}


def assert_matches_autograd(numpy_value_and_grad, torch_loss, params):
    value, grads = numpy_value_and_grad(params)
    reference_value, reference_grads = autograd_reference(torch_loss, params)
    np.testing.assert_allclose(value, reference_value, rtol=1e-12)
    assert set(grads) == set(reference_grads)
    for name in grads:
        np.testing.assert_allclose(grads[name], reference_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("fixed", [False, True])
def test_vae_gradient_matches_autograd(fixed):
    rng = np.random.default_rng(0)
    moment = (lambda f: f @ f.T / 5)(rng.normal(size=(5, 5)))
    hyper = dict(beta=0.7, eta_enc=1.3, eta_dec=0.8)
    params = dict(decoder=rng.normal(size=(5, 3)), encoder=rng.normal(size=(3, 5)))
    fixed_log_std = rng.normal(size=3) if fixed else None
    if not fixed:
        params["log_std"] = rng.normal(size=3)
    log_std = (lambda t: torch.tensor(fixed_log_std)) if fixed else (lambda t: t["log_std"])
    assert_matches_autograd(
        lambda p: numeric._vae_value_and_grad(p, moment, fixed_log_std, **hyper),
        lambda t: vae_expected_loss(t["decoder"], t["encoder"], torch.exp(log_std(t)), moment, **hyper), params)


def test_cvae_gradient_matches_autograd():
    rng = np.random.default_rng(1)
    joint = (lambda f: f @ f.T / 7)(rng.normal(size=(7, 7)))
    hyper = dict(beta=1.3, eta_enc=0.9, eta_dec=1.1)
    params = dict(decoder_z=rng.normal(size=(4, 2)), decoder_x=rng.normal(size=(4, 3)),
                  encoder_x=rng.normal(size=(2, 3)), encoder_y=rng.normal(size=(2, 4)), log_std=rng.normal(size=2))
    assert_matches_autograd(
        lambda p: numeric._cvae_value_and_grad(p, joint, 3, **hyper),
        lambda t: cvae_expected_loss(t["decoder_z"], t["decoder_x"], t["encoder_x"], t["encoder_y"],
                                     torch.exp(t["log_std"]), joint[:3, :3], joint[3:, :3], joint[3:, 3:], **hyper),
        params)


@pytest.mark.parametrize("fixed", [False, True])
def test_mhvae_gradient_matches_autograd(fixed):
    rng = np.random.default_rng(2)
    moment = (lambda f: f @ f.T / 5)(rng.normal(size=(5, 5)))
    hyper = dict(beta1=0.6, beta2=1.4, eta_enc=1.2, eta_dec=0.9, sigma1=0.7)
    params = dict(decoder1=rng.normal(size=(5, 3)), decoder2=rng.normal(size=(3, 2)),
                  encoder1=rng.normal(size=(3, 5)), encoder2=rng.normal(size=(2, 3)))
    fixed_log_std = rng.normal(size=2) if fixed else None
    if not fixed:
        params["log_std"] = rng.normal(size=2)
    log_std = (lambda t: torch.tensor(fixed_log_std)) if fixed else (lambda t: t["log_std"])
    assert_matches_autograd(
        lambda p: numeric._mhvae_value_and_grad(p, moment, fixed_log_std, **hyper),
        lambda t: mhvae_expected_loss(t["decoder1"], t["decoder2"], t["encoder1"], t["encoder2"],
                                      torch.exp(log_std(t)), moment, **hyper), params)


def test_minimise_finds_a_known_minimum_reproducibly():
    target = np.array([[1.0, -2.0], [0.5, 3.0]])

    def value_and_grad(params):
        difference = params["matrix"] - target
        return float(np.sum(difference**4) + np.sum(difference**2)), {"matrix": 4 * difference**3 + 2 * difference}

    first, losses = numeric.minimise(value_and_grad, {"matrix": (2, 2)}, n_restarts=3, seed=4)
    second, _ = numeric.minimise(value_and_grad, {"matrix": (2, 2)}, n_restarts=3, seed=4)
    np.testing.assert_allclose(first["matrix"], target, atol=1e-6)
    np.testing.assert_array_equal(first["matrix"], second["matrix"])
    assert losses.shape == (3,) and losses.min() < 1e-10


def test_numeric_functions_validate_their_arguments():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="latent_dim"):
        numeric_linear_vae(x, 4)
    with pytest.raises(ValueError, match="beta"):
        numeric_linear_vae(x, 2, beta=-1.0)
    with pytest.raises(ValueError, match="encoder_std"):
        numeric_linear_vae(x, 2, encoder_std=0.0)
