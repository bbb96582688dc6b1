"""The one ELBO follows Pyro's semantics on a user's program: each idiom against Pyro's own estimators.

Pyro's ``Trace_ELBO`` / ``TraceMeanField_ELBO`` and ours run the same program from the
same global random state, so the guide draws the same noise (and a subsampled plate the
same rows): the loss and the gradient of every parameter in the param store must agree.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.inference.elbo import ANALYTIC, SAMPLED, collect_sites, elbo_loss

N, D, Z, B = 40, 4, 2, 8


@pytest.fixture(autouse=True)
def _clean_param_store():
    pyro.clear_param_store()
    torch.manual_seed(0)
    yield
    pyro.clear_param_store()


def _program(idiom):
    """A VAE written the ordinary Pyro way, with one idiom; ``(model, guide, x)``."""
    enc, dec = torch.nn.Linear(D, 2 * Z), torch.nn.Linear(Z, D)
    x = torch.randn(N, D) * 2
    keep = torch.arange(N) % 3 != 0
    size, sub = (N, B) if idiom == "subsample" else (N, None)
    scale = N / B if idiom == "scale" else 1.0

    def rows(idx):
        return x if idx is None or sub is None else x[idx]

    def model(x):
        pyro.module("dec", dec)
        obs_scale = pyro.param("obs_scale", torch.tensor(0.8), constraint=constraints.positive)
        prior_loc = pyro.param("prior_loc", torch.full((Z,), 0.3)) if idiom == "param" else torch.zeros(Z)
        with poutine.scale(scale=scale), pyro.plate("data", size, subsample_size=sub) as idx:
            with poutine.mask(mask=keep if idiom == "mask" else True):
                n = len(idx)
                z = pyro.sample("z", dist.Normal(prior_loc.expand(n, Z), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(dec(z), obs_scale).to_event(1), obs=rows(idx))

    def guide(x):
        pyro.module("enc", enc)
        q_scale = pyro.param("q_scale", torch.full((Z,), 0.7), constraint=constraints.positive)
        with poutine.scale(scale=scale), pyro.plate("data", size, subsample_size=sub) as idx:
            with poutine.mask(mask=keep if idiom == "mask" else True):
                h = enc(rows(idx))
                loc = h[:, :Z]
                if idiom == "auxiliary":  # a guide-only latent pays its log q, as in Pyro
                    loc = loc + pyro.sample("u", dist.Normal(h[:, :Z], 0.3).to_event(1),
                                            infer={"is_auxiliary": True})
                pyro.sample("z", dist.Normal(loc, h[:, Z:].exp() * q_scale).to_event(1))

    return model, guide, x


def _loss_and_grads(loss_fn, model, guide, x, seed):
    pyro.set_rng_seed(seed)
    loss = loss_fn(model, guide, x)
    store = pyro.get_param_store()
    params = {name: store[name].unconstrained() for name in sorted(store.keys())}
    grads = torch.autograd.grad(loss, list(params.values()))
    return loss.detach(), dict(zip(params, grads))


@pytest.mark.parametrize("idiom", ["mask", "subsample", "scale", "param", "auxiliary", "plain"])
@pytest.mark.parametrize("pyro_elbo, estimator", [(Trace_ELBO, SAMPLED), (TraceMeanField_ELBO, ANALYTIC)])
def test_each_idiom_gives_pyros_loss_and_gradients(idiom, pyro_elbo, estimator):
    model, guide, x = _program(idiom)
    pyro.set_rng_seed(0)
    pyro_elbo().differentiable_loss(model, guide, x)  # registers every param once, before either side reads them

    def ours(m, g, data):
        return elbo_loss(m, g, data, estimators={"z": estimator})

    theirs_loss, theirs = _loss_and_grads(pyro_elbo().differentiable_loss, model, guide, x, seed=1)
    our_loss, mine = _loss_and_grads(ours, model, guide, x, seed=1)
    torch.testing.assert_close(our_loss, theirs_loss, rtol=1e-5, atol=1e-4)
    assert mine.keys() == theirs.keys() and {"obs_scale", "q_scale", "enc$$$weight"} <= set(mine)
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-4, msg=name)


def test_the_model_scores_the_rows_the_guide_subsampled():
    seen = {}
    x = torch.randn(N, D)

    def model(x):
        with pyro.plate("data", N, subsample_size=B) as idx:
            seen["model"] = idx
            z = pyro.sample("z", dist.Normal(torch.zeros(B, D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x[idx])

    def guide(x):
        with pyro.plate("data", N, subsample_size=B) as idx:
            seen["guide"] = idx
            pyro.sample("z", dist.Normal(x[idx], 1.0).to_event(1))

    model_sites, guide_sites = collect_sites(model, guide, x)
    assert torch.equal(seen["model"], seen["guide"])
    assert torch.equal(model_sites["x"]["value"], x[seen["guide"]])
    assert model_sites["x"]["scale"] == pytest.approx(N / B) == guide_sites["z"]["scale"]


def test_masked_rows_contribute_nothing():
    model, guide, x = _program("mask")
    pyro.set_rng_seed(0)
    full = elbo_loss(model, guide, x, estimators={"z": ANALYTIC})
    changed = x.clone()
    changed[torch.arange(N) % 3 == 0] += 100.0  # only masked rows change
    pyro.set_rng_seed(0)
    assert torch.equal(elbo_loss(model, guide, changed, estimators={"z": ANALYTIC}), full)
