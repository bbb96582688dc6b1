"""The diagnostics read a program as Pyro does: poutine.mask, subsample plates, pyro.param, poutine.scale.

Every figure is checked against Pyro's own computation on the same program
(``Trace_ELBO`` / ``TraceMeanField_ELBO`` losses, ``kl_divergence`` of the
traced distributions), not against a re-derivation of ours.
"""

import json

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.diagnostics import diagnose
from ppl_vae.diagnostics._sites import coupled_sites
from standin_models import exact_posterior_vae

SMALL = dict(n_obs=4, n_draws=3, kl_samples=2, theory=False, progress=False, device="cpu")


class MaskedVAE:
    """The exact-posterior linear VAE taking ``(x, keep)``: rows with ``keep`` False masked (``poutine.mask``).

    ``on_latent`` / ``on_observed``: which sites the mask is applied to.
    """

    def __init__(self, on_latent: bool, on_observed: bool):
        self.vae, (self.U, self.eta_enc, self.eta_dec) = exact_posterior_vae(eta_dec=0.5)
        self.on_latent, self.on_observed = on_latent, on_observed

    @staticmethod
    def _masked(keep, applied: bool):
        return poutine.mask(mask=keep if applied else True)

    def model(self, x, keep):
        with pyro.plate("data", x.shape[0]):
            with self._masked(keep, self.on_latent):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.U.shape[1]), self.eta_enc).to_event(1))
            with self._masked(keep, self.on_observed):
                pyro.sample("x", dist.Normal(z @ self.vae.U.T, self.eta_dec).to_event(1), obs=x)

    def guide(self, x, keep):
        with pyro.plate("data", x.shape[0]):
            loc, scale = x @ self.vae.W.T, self.vae.s
            with self._masked(keep, self.on_latent):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


@pytest.fixture
def rows():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(30, 4, generator=gen)
    keep = torch.ones(30, dtype=torch.bool)
    keep[::3] = False
    return x, keep


def test_masked_latent_rows_stay_out_of_the_kl_as_in_trace_mean_field(rows):
    x, keep = rows
    program = MaskedVAE(on_latent=True, on_observed=False)
    idata = diagnose(program.model, program.guide, (x, keep), iw_samples=2, **SMALL)
    kl = idata.collapse.z_kl.values
    assert np.isnan(kl[~keep.numpy()]).all() and not np.isnan(kl[keep.numpy()]).any()
    # Pyro's TraceMeanField_ELBO with the likelihood hidden is the masked KL summed over the rows
    pyro_kl = TraceMeanField_ELBO().loss(poutine.block(program.model, hide=["x"]), program.guide, x, keep)
    assert np.nansum(kl) == pytest.approx(pyro_kl, rel=1e-5)
    np.testing.assert_allclose(idata.collapse.z_kl_mean.values, np.nanmean(kl, axis=0))
    # the collapse curve counts kept (point, dimension) pairs only
    assert float(idata.collapse.z_collapse_fraction.isel(epsilon=-1)) <= 1.0


def test_masked_observed_rows_get_no_log_likelihood_and_the_rest_match_trace_elbo(rows):
    x, keep = rows
    program = MaskedVAE(on_latent=True, on_observed=True)
    idata = diagnose(program.model, program.guide, (x, keep), iw_samples=5, **SMALL)
    pointwise = idata.metrics.iw_log_likelihood_pointwise.values
    assert np.isnan(pointwise[~keep.numpy()]).all()
    # an exact posterior: log p(x, z) - log q(z) = log p(x) at every draw, so Pyro's Trace_ELBO has no noise
    pyro_elbo = -Trace_ELBO().loss(program.model, program.guide, x, keep)
    assert np.nansum(pointwise) == pytest.approx(pyro_elbo, rel=1e-5)
    assert float(idata.metrics.iw_log_likelihood) == pytest.approx(pyro_elbo / int(keep.sum()), rel=1e-5)
    assert idata.metrics.attrs["n_eval"] == int(keep.sum())


class SubsampledVAE:
    """The same VAE, written for minibatches: ``pyro.plate(..., subsample_size=B)`` indexing the full data."""

    def __init__(self, batch: int):
        self.vae, (self.U, self.eta_enc, self.eta_dec) = exact_posterior_vae(eta_dec=0.5)
        self.batch = batch

    def model(self, x):
        with pyro.plate("data", x.shape[0], subsample_size=self.batch) as index:
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.U.shape[1]), self.eta_enc).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.vae.U.T, self.eta_dec).to_event(1), obs=x[index])

    def guide(self, x):
        with pyro.plate("data", x.shape[0], subsample_size=self.batch) as index:
            loc, scale = x[index] @ self.vae.W.T, self.vae.s
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def test_a_subsampled_plate_is_diagnosed_on_every_point(rows):
    x, _ = rows
    program = SubsampledVAE(batch=8)
    idata = diagnose(program.model, program.guide, x, iw_samples=5, **SMALL)
    assert idata.collapse.z_kl.sizes["obs"] == x.shape[0]
    # Pyro on the full plate (subsample_size = size): the KL and, with an exact posterior, log p(x)
    full = SubsampledVAE(batch=x.shape[0])
    pyro_kl = TraceMeanField_ELBO().loss(poutine.block(full.model, hide=["x"]), full.guide, x)
    assert float(idata.collapse.z_kl.sum()) == pytest.approx(pyro_kl, rel=1e-5)
    assert float(idata.metrics.iw_log_likelihood_pointwise.sum()) == pytest.approx(
        -Trace_ELBO().loss(full.model, full.guide, x), rel=1e-5)
    # and Pyro's own subsampled estimate agrees with it in expectation (scale N / B)
    estimates = [-Trace_ELBO().loss(program.model, program.guide, x) for _ in range(200)]
    assert np.mean(estimates) == pytest.approx(-Trace_ELBO().loss(full.model, full.guide, x), rel=0.05)


def test_pyro_param_in_the_guide_is_read():
    pyro.clear_param_store()
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(20, 3, generator=gen)

    def model(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(-1, 3), 0.5).to_event(1), obs=data)

    def guide(data):
        weight = pyro.param("weight", torch.full((3, 2), 0.3))
        scale = pyro.param("scale", torch.tensor([0.4, 0.9]), constraint=dist.constraints.positive)
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(data @ weight, scale).to_event(1))

    idata = diagnose(model, guide, x, iw_samples=2, **SMALL)
    g = poutine.trace(guide).get_trace(x)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x)
    expected = torch.distributions.kl_divergence(g.nodes["z"]["fn"].base_dist, m.nodes["z"]["fn"].base_dist)
    np.testing.assert_allclose(idata.collapse.z_kl.values, expected.detach().numpy(), rtol=1e-5)


class ScaledVAE:
    """Every site under ``poutine.scale(total)`` (minibatch scaling), the latent also under ``beta``."""

    def __init__(self, total: float, beta: float):
        self.vae, (self.U, self.eta_enc, self.eta_dec) = exact_posterior_vae(eta_dec=0.5)
        self.total, self.beta = total, beta

    def model(self, x):
        with poutine.scale(scale=self.total), pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.U.shape[1]), self.eta_enc).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.vae.U.T, self.eta_dec).to_event(1), obs=x)

    def guide(self, x):
        with poutine.scale(scale=self.total), pyro.plate("data", x.shape[0]):
            loc, scale = x @ self.vae.W.T, self.vae.s
            with poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


@pytest.mark.parametrize("total, beta", [(11.23, 1.0), (30.0, 2.5), (1.0, 0.5)])
def test_beta_is_the_latent_scale_over_the_observed_scale(rows, total, beta):
    x, _ = rows
    program = ScaledVAE(total, beta)
    idata = diagnose(program.model, program.guide, x, iw_samples=2, **{**SMALL, "theory": True})
    assert json.loads(idata.attrs["hyperparameters"])["beta"] == pytest.approx(beta)
    assert json.loads(idata.theory.attrs["hyperparameters"])["beta"] == pytest.approx(beta)
    # elbo_beta weighs each KL by beta, not by the factor on every site: beta = 1 gives the ELBO
    if beta == 1.0:
        assert float(idata.metrics.elbo_beta) == pytest.approx(float(idata.metrics.elbo))


def test_distribution_mask_is_read_like_poutine_mask(rows):
    """``Normal(...).mask(keep)`` (a MaskedDistribution) masks rows exactly as ``poutine.mask`` does."""
    x, keep = rows
    by_handler = MaskedVAE(on_latent=True, on_observed=True)
    vae, U, eta_enc, eta_dec = by_handler.vae, by_handler.vae.U, by_handler.eta_enc, by_handler.eta_dec

    def model(data, rows_kept):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(U.shape[1]), eta_enc).mask(rows_kept[:, None])
                            .to_event(1))
            pyro.sample("x", dist.Normal(z @ U.T, eta_dec).mask(rows_kept[:, None]).to_event(1), obs=data)

    def guide(data, rows_kept):
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(data @ vae.W.T, vae.s).mask(rows_kept[:, None]).to_event(1))

    ours = diagnose(model, guide, (x, keep), iw_samples=5, **SMALL)
    handler = diagnose(by_handler.model, by_handler.guide, (x, keep), iw_samples=5, **SMALL)
    np.testing.assert_allclose(ours.collapse.z_kl.values, handler.collapse.z_kl.values, rtol=1e-6)
    np.testing.assert_allclose(ours.metrics.iw_log_likelihood_pointwise, handler.metrics.iw_log_likelihood_pointwise,
                               rtol=1e-6)
    assert float(ours.metrics.iw_log_likelihood_pointwise.sum()) == pytest.approx(
        -Trace_ELBO().loss(model, guide, x, keep), rel=1e-5)


def test_coupled_sites_are_those_whose_prior_follows_a_later_guide_draw():
    # MHVAE: the model draws z2 then z1 | z2, the guide z1 then z2 | z1: z1's prior depends on its own draw
    assert coupled_sites(["z1", "z2"], ["z2", "z1"]) == {"z1"}
    # counterfactual: a top-down guide (z2 first) decouples nothing, nor does one latent
    assert coupled_sites(["z2", "z1"], ["z2", "z1"]) == set()
    assert coupled_sites(["z"], ["z"]) == set()


@pytest.mark.parametrize("total", [1.0, 7.5])
def test_a_two_level_models_hyper_parameters_are_read_off_the_traces(mhvae, gaussian_bundle, total):
    """latent_dims, beta1 / beta2 (scale ratios), eta_enc, eta_dec, sigma1 and a learned sigma2, from traces alone."""
    from ppl_vae import theory

    def model(x):
        with poutine.scale(scale=total):
            mhvae.model(x)

    def guide(x):
        with poutine.scale(scale=total):
            mhvae.guide(x)

    idata = diagnose(model, guide, gaussian_bundle.x, iw_samples=2, **{**SMALL, "theory": True})
    read = json.loads(idata.theory.attrs["hyperparameters"])
    assert read.pop("latent_dims") == [3, 2]
    assert read == pytest.approx({"beta1": 0.5, "beta2": 2.0, "eta_enc": 1.0, "eta_dec": 0.8,
                                  "sigma1": 0.6})  # s2 differs per dimension: sigma2 learned (Theorem 3)
    assert idata.theory.attrs["prediction_basis"] == "traces"
    expected = theory.linear_mhvae(gaussian_bundle.x.double().numpy(), (3, 2), beta1=0.5, beta2=2.0, eta_enc=1.0,
                                   eta_dec=0.8, sigma1=0.6, sigma2=None)
    np.testing.assert_allclose(idata.theory.z1_encoder_sv, expected.z1_encoder_sv)
