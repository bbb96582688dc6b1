"""Counterfactual programs a record cannot follow: with tracing on they must train exactly as eager does.

Each program's numbers depend on the values of its tensors (a Python branch on the batch or
on a latent draw, a ``numpy.random`` draw, a latent width read off the data). A record kept
from one batch would be silently wrong; the checks must see it, say so once, and run
eagerly, so ``fit`` with ``jit=True`` and ``jit=False`` give the same parameters bit for bit.
The suite's own models and a well-behaved user program, by contrast, must keep the record.
"""

import re
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference import fit, trainer
from ppl_vae.inference.traced import TracedLoss
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model
from ppl_vae.models.vae import VAE

D, Z = 4, 3


class BranchOnData(VAE):
    """A suite model subclass whose decoder noise depends on the batch's values."""

    def model(self, x):
        c = self.config
        with pyro.plate("data", x.shape[-2], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[:-1] + (c.latent_dim,)), 1.0).to_event(1))
            noisy = 2.0 if x.mean() > 0 else 0.5  # a Python branch on the data
            pyro.sample("x", dist.Normal(self.decoder(z), noisy).to_event(1), obs=x)


class _Program(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc, self.dec = torch.nn.Linear(D, Z), torch.nn.Linear(Z, D)

    def latent(self, x):
        return Z

    def model(self, x):
        pyro.module("dec", self.dec)
        width = self.latent(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], width), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decode(z), 1.0).to_event(1), obs=x)

    def decode(self, z):
        return torch.nn.functional.linear(z, self.dec.weight[:, :z.shape[-1]], self.dec.bias)

    def guide(self, x):
        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.enc(x)[:, :self.latent(x)], 0.5).to_event(1))


class BranchOnLatent(_Program):
    def decode(self, z):
        out = super().decode(z)
        return out * 2.0 if z[0, 0] > 0 else out  # a Python branch on a latent draw


class NumpyDraw(_Program):
    def decode(self, z):
        return super().decode(z) + float(np.random.normal())  # randomness the record cannot see


class DataWidth(_Program):
    def latent(self, x):
        return 1 + int((x[:, 0] > 0).sum()) % Z  # a latent width read off the data


def _train(build, jit, data, **options):
    pyro.clear_param_store()
    np.random.seed(0)
    torch.manual_seed(0)
    program = build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(program, data, steps=12, batch_size=8, lr=0.05, progress=False, jit=jit, **options)
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()} or \
        {k: v.detach().clone() for k, v in program.state_dict().items()}
    return params, [str(w.message) for w in caught if "not traced" in str(w.message)]


@pytest.mark.parametrize("build, reason, suite", [
    (lambda: BranchOnData(VAEConfig(input_dim=D, latent_dim=Z, arch="mlp", hidden_dims=(5,))), "Python boolean",
     True),
    (BranchOnLatent, "Python boolean", False),
    (NumpyDraw, "second batch", False),
    (DataWidth, "shapes differ|Python integer", False),
], ids=["branch-on-data", "branch-on-latent", "numpy-random", "data-dependent-width"])
def test_a_program_a_record_cannot_follow_trains_exactly_as_eager(build, reason, suite):
    data = synthetic_gaussian(40, D, seed=2)
    data = data if suite else data.x  # a suite model takes its bundle, a user's program raw rows
    eager, quiet = _train(build, False, data)
    traced, said = _train(build, True, data)
    assert not quiet
    assert len(said) == 1 and re.search(reason, said[0])  # one warning, naming why
    assert eager.keys() == traced.keys() and all(torch.equal(eager[k], traced[k]) for k in eager)


def _spy(monkeypatch):
    made = []

    class Spy(TracedLoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(trainer, "TracedLoss", Spy)
    return made


@pytest.mark.parametrize("config, data", [
    (VAEConfig(input_dim=D, latent_dim=Z), synthetic_gaussian(40, D, seed=1)),
    (CVAEConfig(x_dim=5, y_dim=D, latent_dim=Z, arch="mlp", hidden_dims=(6,)), synthetic_pairs(40, 5, y_dim=D, seed=1)),
    (MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(5,)), synthetic_gaussian(40, 6, seed=1)),
], ids=["vae", "cvae", "mhvae"])
@pytest.mark.parametrize("k", [1, 2])
def test_the_suites_models_keep_the_record_and_match_eager_bit_for_bit(monkeypatch, config, data, k):
    made = _spy(monkeypatch)

    def run(jit):
        models = []
        for seed in range(k):
            torch.manual_seed(seed)
            models.append(build_model(config))
        result = fit(models if k > 1 else models[0], data, steps=12, batch_size=16, seed=list(range(k)) if k > 1
                     else 0, lr=0.01, progress=False, jit=jit, kl_every=4)
        return [m.state_dict() for m in models], result

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback for the suite's own models
        traced, traced_result = run(True)
    eager, eager_result = run(False)
    assert made[0].traced and made[0].recorded_shapes and made[0].fallback_reason is None
    assert not made[1].traced
    for ours, theirs in zip(traced, eager):
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert traced_result.kl_history.identical(eager_result.kl_history)


def test_a_well_behaved_user_program_keeps_the_record(monkeypatch):
    made = _spy(monkeypatch)
    data = synthetic_gaussian(40, D, seed=2).x
    eager, _ = _train(_Program, False, data)
    traced, said = _train(_Program, True, data)
    assert not said and made[1].recorded_shapes
    assert all(torch.equal(eager[k], traced[k]) for k in eager)


def test_a_long_runs_kl_steps_get_their_own_checked_record(monkeypatch):
    from ppl_vae.inference import kl_history

    monkeypatch.setattr(kl_history, "SHORT_RUN_STEPS", 4)  # 12 steps count as a long run
    made = _spy(monkeypatch)
    data = synthetic_gaussian(40, D, seed=1)

    def run(jit):
        torch.manual_seed(0)
        model = build_model(VAEConfig(input_dim=D, latent_dim=Z, arch="mlp", hidden_dims=(5,)))
        result = fit(model, data, steps=12, batch_size=8, lr=0.01, progress=False, jit=jit, kl_every=3)
        return model.state_dict(), result.kl_history

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        traced, traced_kl = run(True)
    eager, eager_kl = run(False)
    kinds = {key[2] for key, record in made[0]._records.items() if record.recorded}
    assert kinds == {False, True}  # the plain record and the one with the KL outputs
    assert all(torch.equal(traced[name], eager[name]) for name in traced)
    assert traced_kl.identical(eager_kl) and list(traced_kl["step"].values) == [3, 6, 9, 12]
