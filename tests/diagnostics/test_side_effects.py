"""diagnose leaves no trace on the caller's run: RNG, train / eval flags, BatchNorm statistics, device, parameters."""

import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppl_vae.diagnostics import diagnose

SMALL = dict(n_obs=3, n_draws=2, iw_samples=3, kl_samples=2, theory=False, progress=False)


class NormVAE(nn.Module):
    """A VAE whose encoder has BatchNorm and dropout; ``pyro.param`` for the decoder noise."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 4))
        self.decoder = nn.Linear(2, 4)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        noise = pyro.param("noise", torch.tensor(0.7), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), noise).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            out = self.encoder(x)
            pyro.sample("z", dist.Normal(out[:, :2], nn.functional.softplus(out[:, 2:]) + 1e-3).to_event(1))


def _train(vae, x, steps, every=None):
    """An ordinary SVI loop; with ``every``, diagnose is called every ``every`` steps. Returns the losses."""
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    losses = []
    for step in range(steps):
        losses.append(svi.step(x[torch.randint(0, x.shape[0], (16,))]))
        if every and step % every == 0:
            diagnose(vae.model, vae.guide, x, **SMALL)
    return losses


def _fresh(seed=0):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    return NormVAE(), torch.randn(64, 4)


def test_a_loop_that_calls_diagnose_gives_the_same_losses_as_without_it():
    vae, x = _fresh()
    plain = _train(vae, x, 12)
    vae, x = _fresh()
    watched = _train(vae, x, 12, every=4)
    assert watched == plain


def test_rng_states_are_restored():
    vae, x = _fresh()
    random.seed(3)
    np.random.seed(3)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    diagnose(vae.model, vae.guide, x, **SMALL)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    np.testing.assert_array_equal(np.random.get_state()[1], states[2])


@pytest.mark.parametrize("training", [True, False])
def test_modules_are_diagnosed_in_eval_mode_and_put_back(training):
    vae, x = _fresh()
    vae.train(training)
    norm = vae.encoder[1]
    running = norm.running_mean.clone(), norm.running_var.clone(), int(norm.num_batches_tracked)
    idata = diagnose(vae.model, vae.guide, x, **SMALL)
    assert all(module.training == training for module in vae.modules())
    assert torch.equal(norm.running_mean, running[0]) and torch.equal(norm.running_var, running[1])
    assert int(norm.num_batches_tracked) == running[2]
    # eval mode: dropout off, so the per-point KL is a deterministic function of the point
    again = diagnose(vae.model, vae.guide, x, **{**SMALL, "seed": 9})
    np.testing.assert_allclose(idata.collapse.z_kl.values, again.collapse.z_kl.values, rtol=1e-6)


def test_modules_of_plain_functions_are_found_through_their_names():
    vae, x = _fresh()
    encoder = vae.encoder
    encoder.train()
    norm = encoder[1]
    before = norm.running_mean.clone()

    def guide(data):
        pyro.module("encoder", encoder)
        with pyro.plate("data", data.shape[0]):
            out = encoder(data)
            pyro.sample("z", dist.Normal(out[:, :2], nn.functional.softplus(out[:, 2:]) + 1e-3).to_event(1))

    diagnose(vae.model, guide, x, **SMALL)
    assert encoder.training and torch.equal(norm.running_mean, before)


def test_the_parameter_store_is_unchanged():
    vae, x = _fresh()
    _train(vae, x, 2)
    store = pyro.get_param_store()
    before = {name: store.get_param(name).detach().clone() for name in store.keys()}
    diagnose(vae.model, vae.guide, x, **SMALL)
    assert set(store.keys()) == set(before)
    for name, value in before.items():
        assert torch.equal(store.get_param(name).detach(), value), name
    # names a first call registers are removed again
    pyro.clear_param_store()
    diagnose(vae.model, vae.guide, x, **SMALL)
    assert list(store.keys()) == []


def test_auto_device_moves_nothing():
    vae, x = _fresh()
    idata = diagnose(vae.model, vae.guide, x, device="auto", **SMALL)
    assert idata.attrs["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in vae.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_device_leaves_cuda_modules_on_cuda_and_cuda_rng_is_restored():
    vae, x = _fresh()
    vae.cuda()
    state = torch.cuda.get_rng_state()
    idata = diagnose(vae.model, vae.guide, x.cuda(), device="auto", **SMALL)
    assert idata.attrs["device"].startswith("cuda")
    assert all(p.device.type == "cuda" for p in vae.parameters())
    assert torch.equal(torch.cuda.get_rng_state(), state)
