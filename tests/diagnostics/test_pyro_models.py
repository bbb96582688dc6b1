"""diagnose() on models written the usual Pyro way (pyro_style_models.py), checked against hand computations."""

import json
import warnings

import numpy as np
import pyro
import pytest
import torch

from ppl_vae import theory
from ppl_vae.data import load
from ppl_vae.diagnostics import diagnose
from ppl_vae.diagnostics.theory_link import TheoryMismatchWarning
from pyro_style_models import CVAE, BernoulliVAE, TwoLevel, laplace_guide, laplace_model, train

SMALL = dict(n_obs=4, n_draws=6, kl_samples=2, progress=False, device="cpu")


def normal_kl(loc, scale, prior_loc=0.0, prior_scale=1.0):
    """KL(N(loc, scale^2) || N(prior_loc, prior_scale^2)) per coordinate, written out."""
    return (torch.log(prior_scale / scale) + (scale**2 + (loc - prior_loc) ** 2) / (2 * prior_scale**2) - 0.5)


def hand_iw(vae, x, K, seed):
    """log p(x) by importance sampling, written without Pyro: K draws from the encoder per point."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn(K, *loc.shape, generator=gen)
        probs = vae.decoder(z).clamp(1e-7, 1 - 1e-7)
        log_lik = (x * probs.log() + (1 - x) * (1 - probs).log()).sum(-1)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        return (torch.logsumexp(log_lik + log_prior - log_q, 0) - np.log(K)).double().numpy()


@pytest.fixture(scope="module")
def binary_digits():
    return (load("digits").x > 0.5).float()


@pytest.fixture(scope="module")
def bernoulli_vae(binary_digits):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = BernoulliVAE(z_dim=6, hidden=32)
    losses = train(vae.model, vae.guide, (binary_digits,), steps=120, lr=1e-2)
    assert losses[-1] < losses[0]
    return vae


def test_bernoulli_vae_sites_kl_and_groups(bernoulli_vae, binary_digits):
    x = binary_digits[:300]
    idata = diagnose(bernoulli_vae.model, bernoulli_vae.guide, x, iw_samples=20, **SMALL)
    assert idata.attrs["latent_sites"] == "latent" and idata.attrs["observed_site"] == "obs"
    # "obs" names a dimension of the InferenceData, so the variable is obs_site
    assert idata.attrs["observed_variable"] == "obs_site"
    assert json.loads(idata.attrs["kl_method"]) == {"latent": "analytic"}
    loc, scale = bernoulli_vae.encoder(x)
    expected = normal_kl(loc, scale).detach().numpy()
    np.testing.assert_allclose(idata.collapse.latent_kl.values, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(idata.collapse.latent_kl_mean.values, expected.mean(0), rtol=1e-4, atol=1e-6)
    collapsed = expected.mean(0) < 0.01
    np.testing.assert_array_equal(idata.collapse.latent_collapsed.values, collapsed)
    au = (loc.detach().double().numpy().var(0, ddof=1) > 0.01).sum()
    assert int(idata.collapse.latent_active_units) == au
    draws = idata.posterior_predictive.obs_site.values
    assert set(np.unique(draws)) <= {0.0, 1.0}  # likelihood draws, not decoder means
    means = idata.posterior_predictive.obs_site_mean.values
    assert means.min() > 0 and means.max() < 1 and not set(np.unique(means)) <= {0.0, 1.0}
    np.testing.assert_array_equal(idata.observed_data.obs_site.values, x.numpy()[idata.observed_data.obs.values])
    assert "constant_data" not in idata.groups()  # the only argument is the observed one
    assert idata.prior.latent.dims == ("chain", "draw", "obs", "latent_dim")
    assert json.loads(idata.attrs["hyperparameters"]) == {"beta": 1.0, "eta_enc": 1.0, "latent_dim": 6}
    assert json.loads(idata.attrs["model_config"])["arch"] == "BernoulliVAE"


def test_bernoulli_vae_iw_log_likelihood_matches_a_hand_estimate(bernoulli_vae, binary_digits):
    x = binary_digits[:40]
    K = 3000
    idata = diagnose(bernoulli_vae.model, bernoulli_vae.guide, x, iw_samples=K, **SMALL)
    ours = idata.metrics.iw_log_likelihood_pointwise.values
    hand = hand_iw(bernoulli_vae, x, K, seed=123)
    np.testing.assert_allclose(ours, hand, atol=0.15)
    assert float(idata.metrics.elbo) < float(idata.metrics.iw_log_likelihood)


def test_bernoulli_vae_theory_needs_a_gaussian_likelihood_or_a_given_eta_dec(bernoulli_vae, binary_digits):
    idata = diagnose(bernoulli_vae.model, bernoulli_vae.guide, binary_digits[:200], iw_samples=2, **SMALL)
    assert "theory" not in idata.groups()
    assert "Bernoulli" in idata.attrs["theory_unavailable"] and "eta_dec" in idata.attrs["theory_unavailable"]
    given = diagnose(bernoulli_vae.model, bernoulli_vae.guide, binary_digits[:200], iw_samples=2,
                     theory={"eta_dec": 0.5}, **SMALL)
    assert given.theory.attrs["prediction"].startswith("linear-model prediction")
    assert json.loads(given.theory.attrs["hyperparameter_source"])["eta_dec"] == "given"
    expected = theory.linear_vae(binary_digits[:200].double().numpy(), 6, beta=1.0, eta_enc=1.0, eta_dec=0.5)
    np.testing.assert_allclose(given.theory.decoder_sv, expected.decoder_sv)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        diagnose(bernoulli_vae.model, bernoulli_vae.guide, binary_digits[:20], iw_samples=2,
                 theory={"eta": 0.5}, **SMALL)


def test_beta_is_read_from_poutine_scale(binary_digits):
    pyro.clear_param_store()
    torch.manual_seed(1)
    vae = BernoulliVAE(z_dim=3, hidden=8, beta=4.0)
    idata = diagnose(vae.model, vae.guide, binary_digits[:50], iw_samples=3, theory=False, **SMALL)
    assert json.loads(idata.attrs["hyperparameters"])["beta"] == 4.0
    assert float(idata.metrics.elbo_beta) < float(idata.metrics.elbo)  # the KL counted four times


@pytest.mark.parametrize("learned_prior", [True, False])
def test_cvae_with_tuple_arguments(learned_prior):
    bundle = load("digits", paired=True)
    x, y = bundle.x[:120], bundle.y[:120]
    pyro.clear_param_store()
    torch.manual_seed(2)
    cvae = CVAE(16, 48, z_dim=4, hidden=16, learned_prior=learned_prior)
    train(cvae.model, cvae.guide, (x, y), steps=60)
    idata = diagnose(cvae.model, cvae.guide, (x, y), iw_samples=5, **SMALL)
    assert idata.attrs["observed_site"] == "y"
    assert set(idata.constant_data.data_vars) == {"x"}  # the condition, named by the model's parameter
    rows = idata.constant_data.obs.values.copy()
    np.testing.assert_array_equal(idata.constant_data.x.values, x[rows].numpy())
    q_loc, q_scale = cvae.encoder(torch.cat([x, y], -1))
    p_loc, p_scale = cvae.prior(x)
    expected = normal_kl(q_loc, q_scale, p_loc, p_scale).detach().numpy()
    np.testing.assert_allclose(idata.collapse.z_kl.values, expected, rtol=1e-4, atol=1e-6)
    if learned_prior:
        assert "theory" not in idata.groups() and "prior" in idata.attrs["theory_unavailable"]
        # the prior draws are conditional on x: their mean follows the prior network
        prior_mean = idata.prior.z.mean(("chain", "draw")).values
        np.testing.assert_allclose(prior_mean, p_loc[rows].detach().numpy(), atol=0.6)
        given = diagnose(cvae.model, cvae.guide, (x, y), iw_samples=2, theory={"eta_enc": 1.0}, **SMALL)
        assert given.theory.attrs["prediction"].startswith("linear-model prediction")
    else:
        expected_theory = theory.linear_cvae(x.double().numpy(), y.double().numpy(), 4, beta=1.0, eta_enc=1.0,
                                             eta_dec=0.5)
        np.testing.assert_allclose(idata.theory.theta, expected_theory.theta)
        np.testing.assert_array_equal(idata.theory.collapsed, expected_theory.collapsed)
        assert json.loads(idata.theory.attrs["hyperparameter_source"])["eta_dec"] == "inferred from the traces"


@pytest.fixture
def two_level():
    gen = torch.Generator().manual_seed(4)
    A = torch.randn(3, 2, generator=gen)
    A[:, 1] = 0.0  # z2's second dimension is never used: its posterior is the prior
    B = torch.randn(5, 3, generator=gen)
    return TwoLevel(A, B, s1=0.7, s0=0.5)


def test_two_level_model_kl_and_marginal_likelihood(two_level):
    pyro.clear_param_store()
    x = two_level.marginal().sample(torch.Size((50,)))
    idata = diagnose(two_level.model, two_level.guide, x, n_obs=3, n_draws=4, iw_samples=4000, kl_samples=4000,
                     progress=False, device="cpu", seed=3)
    assert idata.attrs["latent_sites"] == "z1 z2"  # the guide's order
    assert set(idata.posterior.data_vars) == set(idata.prior.data_vars) == {"z1", "z2"}
    # KL(q(z2 | z1) || N(0, I)) averaged over z1 ~ q(z1 | x), in closed form
    with torch.no_grad():
        m1, e1, W2, e2 = x @ two_level.W1.T, two_level.e1, two_level.W2, two_level.e2
        second_moment = (m1 @ W2.T) ** 2 + (W2**2 @ e1**2)
        expected = (torch.log(1 / e2) + (e2**2 + second_moment) / 2 - 0.5).numpy()
    np.testing.assert_allclose(idata.collapse.z2_kl.values, expected, rtol=0.05, atol=5e-3)
    assert idata.collapse.z2_collapsed.values.tolist() == [False, True]
    exact = two_level.marginal().log_prob(x).numpy()
    ours = idata.metrics.iw_log_likelihood_pointwise.values
    assert np.all(ours < exact + 0.02)
    np.testing.assert_allclose(ours, exact, atol=0.05)


def test_laplace_latent_takes_the_monte_carlo_path():
    pyro.clear_param_store()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 4, generator=gen)
    laplace_guide(x)  # create the parameters, then set them by hand
    store = pyro.get_param_store()
    with torch.no_grad():
        store["encoder_weight"].copy_(torch.tensor([[0.8, 0.1, 0.0, 0.0], [0.0, 0.5, 0.3, 0.0], [0.0] * 4]))
        store["encoder_log_scale"].copy_(torch.tensor([-1.0, -0.5, 0.0]))  # third dimension: q = prior exactly
    idata = diagnose(laplace_model, laplace_guide, x, iw_samples=10, n_obs=3, n_draws=4, kl_samples=4000,
                     progress=False, device="auto")
    method = json.loads(idata.attrs["kl_method"])["z"]
    assert method.startswith("monte carlo") and "4000" in method
    loc = x @ store["encoder_weight"].detach().T
    q = torch.distributions.Laplace(loc, store["encoder_log_scale"].detach().exp())
    exact = torch.distributions.kl_divergence(q, torch.distributions.Laplace(0.0, 1.0)).mean(0).numpy()
    np.testing.assert_allclose(idata.collapse.z_kl_mean.values, exact, rtol=0.05, atol=1e-9)
    assert idata.collapse.z_kl.values[:, 2].tolist() == [0.0] * 40  # log q - log p is exactly 0 when q = p
    assert idata.collapse.z_collapsed.values.tolist() == [False, False, True]
    np.testing.assert_allclose(idata.collapse.z_au_stat.values, loc.double().numpy().var(0, ddof=1), rtol=1e-5)
    assert "theory_unavailable" in idata.attrs  # a Laplace prior is not the theory's N(0, eta_enc^2 I)


def test_repeat_and_plate_vectorisation_agree_on_a_suite_model(exact_vae, gaussian_bundle):
    model, _ = exact_vae
    options = dict(iw_samples=30, n_obs=3, n_draws=5, kl_samples=3, theory=False, progress=False, device="cpu")
    plate = diagnose(model, gaussian_bundle, vectorize="plate", **options)
    repeat = diagnose(model, gaussian_bundle, vectorize="repeat", **options)
    for group in ("collapse", "posterior", "prior", "posterior_predictive", "log_likelihood", "metrics"):
        assert plate[group].identical(repeat[group]), group


def test_site_errors_name_the_sites(bernoulli_vae, binary_digits):
    x = binary_digits[:10]
    with pytest.raises(ValueError, match="latent_sites 'z' not found.*'latent'"):
        diagnose(bernoulli_vae.model, bernoulli_vae.guide, x, latent_sites=("z",), **SMALL)
    with pytest.raises(ValueError, match="needs the guide"):
        diagnose(bernoulli_vae.model, x)
    with pytest.raises(ValueError, match="same number of rows"):
        diagnose(bernoulli_vae.model, bernoulli_vae.guide, (x, x[:5]), **SMALL)

    def global_model(data):
        scale = pyro.sample("scale", pyro.distributions.LogNormal(0.0, 1.0))
        with pyro.plate("data", data.shape[0]):
            pyro.sample("obs", pyro.distributions.Normal(0.0, scale).expand([data.shape[0], 64]).to_event(1), obs=data)

    def global_guide(data):
        pyro.sample("scale", pyro.distributions.LogNormal(0.0, 0.1))

    with pytest.raises(ValueError, match="site 'scale' .* one value per data point"):
        diagnose(global_model, global_guide, x, iw_samples=2, **SMALL)


def test_a_two_level_model_gets_the_mhvae_prediction_when_told(two_level):
    pyro.clear_param_store()
    x = two_level.marginal().sample(torch.Size((60,)))
    small = dict(n_obs=2, n_draws=2, iw_samples=2, kl_samples=2, progress=False, device="cpu")
    plain = diagnose(two_level.model, two_level.guide, x, **small)
    # the traces read the two-level structure, and that it is not the theory's: p(z1|z2) has std s1 = 0.7,
    # the likelihood s0 = 0.5 (the theory has eta_dec for both)
    assert "theory" not in plain.groups() and "p(z1 | z2) has std 0.7" in plain.attrs["theory_unavailable"]
    given = {"family": "mhvae", "latent_dims": (3, 2), "beta1": 1.0, "beta2": 1.0, "eta_enc": 1.0, "eta_dec": 0.5,
             "sigma1": 0.7}
    with pytest.warns(TheoryMismatchWarning, match="differs from the linear mhvae"):
        told = diagnose(two_level.model, two_level.guide, x, theory=given, **small)
    assert told.theory.attrs["prediction_basis"] == "given"
    assert set(json.loads(told.theory.attrs["model_mismatch"])) == {"family", "sigma1"}  # learned q(z1|x) std
    expected = theory.linear_mhvae(x.double().numpy(), (3, 2), beta1=1.0, beta2=1.0, eta_enc=1.0, eta_dec=0.5,
                                   sigma1=0.7, sigma2=None)
    np.testing.assert_allclose(told.theory.z1_encoder_sv, expected.z1_encoder_sv)
    assert json.loads(told.theory.attrs["hyperparameter_source"])["sigma1"] == "given"
    wrong = diagnose(two_level.model, two_level.guide, x, theory={**given, "eta_dec": -1.0}, **small)
    assert "theory" not in wrong.groups() and "eta_dec" in wrong.attrs["theory_unavailable"]


@pytest.mark.parametrize("learned_prior", [True, False])
def test_a_given_theory_warns_when_the_traced_model_is_not_the_theorys(learned_prior):
    """theory={"eta_enc": 1} on a learned-prior CVAE is the standard-prior prediction: said, not silent."""
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(40, 3, generator=gen), torch.randn(40, 5, generator=gen)
    pyro.clear_param_store()
    torch.manual_seed(4)
    cvae = CVAE(3, 5, z_dim=2, hidden=8, learned_prior=learned_prior)
    options = dict(iw_samples=2, theory={"eta_enc": 1.0}, **SMALL)
    if learned_prior:
        with pytest.warns(TheoryMismatchWarning, match="eta_enc: the prior of 'z' is not N"):
            idata = diagnose(cvae.model, cvae.guide, (x, y), **options)
        assert "eta_enc" in json.loads(idata.theory.attrs["model_mismatch"])
    else:  # counterfactual: the standard prior IS the theory's, and the given value is the one the traces read
        with warnings.catch_warnings():
            warnings.simplefilter("error", TheoryMismatchWarning)
            idata = diagnose(cvae.model, cvae.guide, (x, y), **options)
        assert json.loads(idata.theory.attrs["model_mismatch"]) == {}
    assert idata.theory.attrs["prediction_basis"] == "given and traces"
    assert json.loads(idata.theory.attrs["hyperparameter_source"])["eta_enc"] == "given"
    with pytest.warns(TheoryMismatchWarning, match="the traces read eta_dec = 0.5"):
        diagnose(cvae.model, cvae.guide, (x, y), **{**options, "theory": {"eta_enc": 1.0, "eta_dec": 2.0}})
