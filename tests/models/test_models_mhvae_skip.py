"""The MHVAE skip path x -> z2 (``z2_input='z1+x'``): shapes, what q(z2) reads, batching, the default unchanged."""

import dataclasses

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

from ppl_vae.data import synthetic_gaussian
from ppl_vae.diagnostics import diagnose
from ppl_vae.inference import fit
from ppl_vae.inference.batched import BatchedModel, can_vectorise
from ppl_vae.models import MHVAEConfig, build_model, config_from_dict
from ppl_vae.models.readout import theory_for

N, D, D1, D2 = 5, 6, 4, 3
SKIP = [MHVAEConfig(D, (D1, D2), z2_input="z1+x", beta2=2.0),
        MHVAEConfig(D, (D1, D2), arch="mlp", hidden_dims=(8,), sigma1=0.5, sigma2=None, z2_input="z1+x")]


def _ids(config):
    return config.arch


def _x(seed=0, n=N):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _seeded(config, seed=0):
    torch.manual_seed(seed)
    return build_model(config)


def _z2_given(model, x, z1):
    """The guide's q(z2 | .) at a given z1 (z1 conditioned, so only x can move it)."""
    trace = poutine.trace(poutine.condition(model.guide, data={"z1": z1})).get_trace(x)
    return trace.nodes["z2"]["fn"].base_dist


def test_the_default_is_the_markovian_encoder_and_builds_the_same_model():
    config = MHVAEConfig(D, (D1, D2), arch="mlp", hidden_dims=(8,))
    assert config.z2_input == "z1"
    explicit = dataclasses.replace(config, z2_input="z1")
    plain, same = _seeded(config), _seeded(explicit)
    assert plain.encoder2.body[0][0].in_features == D1  # q(z2|z1) reads z1 only
    for (name, a), b in zip(plain.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name
    # and a config written before the field existed loads as the default
    old = {key: value for key, value in config.to_dict().items() if key != "z2_input"}
    assert config_from_dict(old) == config


def test_without_the_skip_path_q_z2_ignores_x_given_z1():
    model = _seeded(MHVAEConfig(D, (D1, D2), arch="mlp", hidden_dims=(8,), sigma2=None))
    z1 = torch.randn(N, D1)
    first, second = _z2_given(model, _x(0), z1), _z2_given(model, _x(1), z1)
    assert torch.equal(first.loc, second.loc) and torch.equal(first.scale, second.scale)


@pytest.mark.parametrize("config", SKIP, ids=_ids)
def test_skip_path_shapes_and_q_z2_reads_x(config):
    model = _seeded(config)
    first_layer = model.encoder2.loc if config.arch == "linear" else model.encoder2.body[0][0]
    assert first_layer.in_features == D1 + D
    x = _x()
    guide_trace = poutine.trace(model.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    for site, dim in (("z1", D1), ("z2", D2)):
        assert guide_trace.nodes[site]["value"].shape == (N, dim)
        assert model_trace.nodes[site]["fn"].batch_shape == (N,)
    z1 = torch.randn(N, D1)
    assert not torch.allclose(_z2_given(model, _x(0), z1).loc, _z2_given(model, _x(1), z1).loc)
    assert model.analytic_kl_sites == ("z2",)  # p(z2) has no parent: KL(q(z2|z1, x) || p(z2)) exact given z1


@pytest.mark.parametrize("config", SKIP, ids=_ids)
def test_skip_path_broadcasts_over_an_outer_samples_plate(config):
    model = _seeded(config)
    samples = 7

    def guide(x):
        with pyro.plate("samples", samples, dim=-2):
            model.guide(x)

    trace = poutine.trace(guide).get_trace(_x())
    assert trace.nodes["z2"]["value"].shape == (samples, N, D2)
    assert trace.nodes["z2"]["fn"].batch_shape == (samples, N)


def test_linear_skip_path_is_w2_z1_plus_w3_x_without_biases():
    config = SKIP[0]
    model = _seeded(config)
    assert not any("bias" in name for name, _ in model.named_parameters())
    x, z1 = _x(), torch.randn(N, D1)
    weight = model.encoder2.loc.weight
    expected = z1 @ weight[:, :D1].T + x @ weight[:, D1:].T
    torch.testing.assert_close(_z2_given(model, x, z1).loc, expected)


def test_no_closed_form_is_claimed_for_the_skip_path():
    config = SKIP[0]
    model = _seeded(config)
    bundle = synthetic_gaussian(40, D, seed=0)
    with pytest.raises(ValueError, match="z2_input"):
        model.linear_readout(bundle)
    assert theory_for(config, bundle) is None
    idata = diagnose(model, bundle, iw_samples=2, n_obs=2, n_draws=2, kl_samples=2, progress=False)
    assert "theory" not in idata.groups() and "skip path" in idata.attrs["theory_unavailable"]


def test_cnn_skip_path_is_refused_by_name():
    with pytest.raises(ValueError, match="z2_input.*linear' and 'mlp'"):
        MHVAEConfig(64, (4, 3), arch="cnn", image_shape=(8, 8), hidden_dims=(16,), z2_input="z1+x")
    with pytest.raises(ValueError, match="z2_input must be one of"):
        MHVAEConfig(D, (D1, D2), z2_input="x")


def test_skip_and_plain_models_are_not_vectorised_together():
    ok, reason = can_vectorise([SKIP[1], dataclasses.replace(SKIP[1], z2_input="z1")])
    assert not ok and "z2_input" in reason
    assert can_vectorise([SKIP[1], dataclasses.replace(SKIP[1], beta2=0.5)]) == (True, "")


@pytest.mark.parametrize("config", SKIP, ids=_ids)
def test_batched_skip_guide_equals_each_model_s_own(config):
    """K stacked models, with a shared and a per-configuration minibatch: each slice is its own model."""
    models = [_seeded(dataclasses.replace(config, beta2=b), seed) for seed, b in enumerate((0.5, 1.0, 2.0))]
    batched = BatchedModel(models)
    x = _x()
    z1 = torch.randn(3, N, D1)
    for data in (x, torch.stack([x, _x(1), _x(2)])):
        together = poutine.trace(poutine.condition(batched.guide, data={"z1": z1})).get_trace(data)
        q = together.nodes["z2"]["fn"].base_dist
        for k, model in enumerate(models):
            alone = _z2_given(model, data if data.dim() == 2 else data[k], z1[k])
            torch.testing.assert_close(q.loc[k], alone.loc)
            torch.testing.assert_close(q.scale[k].expand_as(alone.scale), alone.scale)


def test_k_skip_models_train_as_their_separate_runs():
    data = synthetic_gaussian(200, D, seed=0)
    options = {"steps": 40, "batch_size": 64, "lr": 1e-2, "clip_norm": 5.0, "device": "cpu", "progress": False}
    configs = [dataclasses.replace(SKIP[1], beta2=b) for b in (0.5, 2.0)]
    seeds = [3, 11]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        together = fit([_seeded(c, s) for c, s in zip(configs, seeds)], data, seed=seeds, **options)
        for k in range(2):
            alone = fit(_seeded(configs[k], seeds[k]), data, seed=seeds[k], **options)
            np.testing.assert_allclose(together.loss.values[k], alone.loss.values, rtol=1e-5, atol=1e-5)
            for (name, mine), theirs in zip(together.models[k].state_dict().items(),
                                            alone.model.state_dict().values()):
                torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=name)
    finally:
        torch.set_num_threads(previous)
