"""The traced loss against the eager one it records: the same numbers, bit for bit, step after step."""

import contextlib

import pyro
import pytest
import torch

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference.batched import BatchedModel
from ppl_vae.inference.elbo import per_config_loss, site_estimators
from ppl_vae.inference.randomness import NOISE_STREAM, ConfigNoise, make_generators
from ppl_vae.inference.traced import TracedLoss
from ppl_vae.models import CVAEConfig, MHVAEConfig, build_model

CPU = torch.device("cpu")


def _models(family, k):
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        if family == "mhvae":
            config = MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(5,), beta1=0.5 + seed,
                                 beta2=1.5)
        else:
            config = CVAEConfig(x_dim=5, y_dim=4, latent_dim=3, arch=family, hidden_dims=(6,), beta=0.5 + seed,
                                eta_dec=0.5 + 0.25 * seed)
        models.append(build_model(config))
    return models


def _batches(family, k, steps, rows=12):
    """``steps`` batches as the trainer makes them: per configuration ``(K, B, d)``, or ``(B, d)`` for one."""
    data = synthetic_gaussian(40, 6, seed=1) if family == "mhvae" else synthetic_pairs(40, 5, y_dim=4, seed=1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.stack([torch.randperm(data.n, generator=generator)[:rows] for _ in range(k)])
        yield tuple(t[index] if k > 1 else t[index[0]] for t in data.tensors())


def _program(family, k):
    models = _models(family, k)
    module = BatchedModel(models) if k > 1 else models[0]
    return module, [p for p in module.parameters() if p.requires_grad], site_estimators(models[0])


def _noise(k):
    return ConfigNoise(make_generators(list(range(k)), NOISE_STREAM, CPU))


@pytest.mark.parametrize("family, k", [("linear", 1), ("mlp", 3), ("mhvae", 1), ("mhvae", 2)])
def test_traced_losses_and_gradients_equal_the_eager_loss_bit_for_bit(family, k):
    module, parameters, estimators = _program(family, k)
    sites = module.latent_sites
    weights = [torch.full((k, 1) if k > 1 else (), w) for w in (0.25, 0.5, 1.0, 0.75, 0.1)]
    traced = TracedLoss(module, parameters, estimators=estimators, free_bits=None, noise=_noise(k))
    with pyro.validation_enabled(False), module.unregistered() if k == 1 else contextlib.nullcontext(), _noise(k) as noise:
        for step, batch in enumerate(_batches("mhvae" if family == "mhvae" else family, k, steps=5)):
            multipliers = {sites[0]: weights[step]}  # a KL schedule: an input of the record, not a constant
            ours = traced(batch, multipliers)
            eager = per_config_loss(module.model, module.guide, *batch, estimators=estimators,
                                    kl_multipliers=multipliers) / batch[0].shape[-2]
            assert torch.equal(ours, eager), f"step {step}"
            ours_grads = torch.autograd.grad(ours.sum(), parameters)
            eager_grads = torch.autograd.grad(eager.sum(), parameters)
            assert all(torch.equal(a, b) for a, b in zip(ours_grads, eager_grads)), f"step {step}"
    assert traced.traced and traced.recorded_shapes
    assert noise.generators[0].get_state().equal(traced.noise.generators[0].get_state())


def test_each_batch_shape_gets_its_own_record():
    module, parameters, estimators = _program("linear", 1)
    traced = TracedLoss(module, parameters, estimators=estimators, free_bits=None, noise=_noise(1))
    data = synthetic_pairs(40, 5, y_dim=4, seed=2)
    with pyro.validation_enabled(False), module.unregistered(), _noise(1):
        for rows in (16, 16, 7, 16, 7, 7):  # an epoch's ragged last batch comes back at every epoch
            batch = tuple(t[:rows] for t in data.tensors())
            eager = per_config_loss(module.model, module.guide, *batch, estimators=estimators) / rows
            assert torch.equal(traced(batch), eager)
    assert sorted(shapes[0][0] for shapes in traced.recorded_shapes) == [7, 16]


class _BakedRows(torch.nn.Module):
    """A toy program whose numbers depend on ``len(x)``, a size a record keeps as a constant."""

    latent_sites = ("z",)

    def __init__(self):
        super().__init__()
        self.shift = torch.nn.Parameter(torch.ones(2))

    def model(self, x):
        with pyro.plate("data", x.shape[-2], dim=-1):
            z = pyro.sample("z", pyro.distributions.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(z + self.shift * len(x), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[-2], dim=-1):
            pyro.sample("z", pyro.distributions.Normal(self.shift.expand_as(x), 1.0).to_event(1))


def _counting_traces(monkeypatch):
    calls = []
    trace = torch.jit.trace

    def counted(*args, **kwargs):
        calls.append(1)
        return trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", counted)
    return calls


@pytest.mark.parametrize("program, traces", [("cvae", 1), ("baked", 2)])
def test_a_record_serves_another_batch_shape_only_if_it_reproduces_it(monkeypatch, program, traces):
    calls = _counting_traces(monkeypatch)
    if program == "cvae":
        module, parameters, estimators = _program("linear", 1)
        data = synthetic_pairs(40, 5, y_dim=4, seed=3).tensors()
        context = module.unregistered()
    else:
        module = _BakedRows()
        parameters, estimators = list(module.parameters()), {"z": "sampled"}
        data = (torch.randn(40, 2, generator=torch.Generator().manual_seed(3)),)
        context = contextlib.nullcontext()
    traced = TracedLoss(module, parameters, estimators=estimators, free_bits=None, noise=_noise(1))
    with pyro.validation_enabled(False), context, _noise(1):
        for rows in (16, 16, 7, 7, 16, 7):
            batch = tuple(t[:rows] for t in data)
            eager = per_config_loss(module.model, module.guide, *batch, estimators=estimators) / rows
            assert torch.equal(traced(batch), eager)
    # The CVAE reads its batch size off its tensors: the 16-row record serves the 7-row batches.
    # The toy bakes len(x) into its record: the 7-row batches get a record of their own.
    assert len(calls) == traces


def test_free_bits_floors_are_honoured_by_the_record():
    module, parameters, estimators = _program("mlp", 2)
    floors = {"z": torch.tensor([[0.0], [50.0]])}
    traced = TracedLoss(module, parameters, estimators=estimators, free_bits=floors, noise=_noise(2))
    with pyro.validation_enabled(False), _noise(2):
        for batch in _batches("mlp", 2, steps=3):
            eager = per_config_loss(module.model, module.guide, *batch, estimators=estimators, free_bits=floors)
            assert torch.equal(traced(batch), eager / batch[0].shape[-2])


def test_a_program_that_cannot_be_traced_runs_eagerly_with_the_same_numbers(monkeypatch):
    module, parameters, estimators = _program("linear", 1)

    def refuse(*args, **kwargs):
        raise RuntimeError("tracing is unavailable")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    traced = TracedLoss(module, parameters, estimators=estimators, free_bits=None, noise=_noise(1))
    with pyro.validation_enabled(False), module.unregistered(), _noise(1):
        batches = list(_batches("linear", 1, steps=3))
        with pytest.warns(RuntimeWarning, match="could not be traced"):
            losses = [traced(batch) for batch in batches]
        for batch, loss in zip(batches, losses):
            eager = per_config_loss(module.model, module.guide, *batch, estimators=estimators)
            assert torch.equal(loss, eager / batch[0].shape[-2])
    assert not traced.traced
