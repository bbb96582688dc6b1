"""fit over K configurations: each configuration equals its own separate run."""

import dataclasses

import numpy as np
import pytest
import torch

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference import fit
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model
from ppl_vae.inference import TrainingDivergedError
from ppl_vae.inference.batched import BatchedConfig, BatchedModel, can_vectorise, clip_per_config_
from ppl_vae.inference.elbo import per_config_loss, site_estimators


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _seeded(config, seed):
    torch.manual_seed(seed)
    return build_model(config)


@pytest.mark.parametrize("config, data", [
    (CVAEConfig(x_dim=5, y_dim=4, latent_dim=2, arch="mlp", hidden_dims=(8,), beta=0.7),
     synthetic_pairs(300, 5, y_dim=4, seed=0)),
    (MHVAEConfig(input_dim=6, latent_dims=(3, 2), arch="mlp", hidden_dims=(8,), beta2=1.5),
     synthetic_gaussian(300, 6, seed=0)),
    (VAEConfig(input_dim=6, latent_dim=3, arch="linear", beta=1.3), synthetic_gaussian(300, 6, seed=1)),
])
def test_each_of_four_configurations_equals_a_separate_run_with_its_seed(config, data):
    """Distinct seeds, minibatches, clipping and a learning-rate schedule: grouping changes nothing."""
    options = {"steps": 60, "batch_size": 64, "lr": 1e-2, "lr_decay": 0.99, "clip_norm": 5.0, "device": "cpu",
               "progress": False}
    seeds = [3, 11, 12, 40]
    hyper = next(iter(config.hyperparameters()))
    configs = [dataclasses.replace(config, **{hyper: 0.5 + 0.5 * k}) for k in range(4)]
    together = fit([_seeded(c, s) for c, s in zip(configs, seeds)], data, seed=seeds, **options)
    assert together.loss.dims == ("config", "step") and together.loss.shape == (4, 60)
    for k in range(4):
        alone = fit(_seeded(configs[k], seeds[k]), data, seed=seeds[k], **options)
        np.testing.assert_allclose(together.loss.values[k], alone.loss.values, rtol=1e-5, atol=1e-5)
        for (name, mine), theirs in zip(together.models[k].state_dict().items(), alone.model.state_dict().values()):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=name)
    # and the seeds matter: two configurations with equal hyper-parameters but other seeds differ
    twins = fit([_seeded(configs[0], 3), _seeded(configs[0], 4)], data, seed=[3, 4], **options)
    assert np.abs(twins.loss.values[0] - twins.loss.values[1]).max() > 1e-3


def test_configurations_train_independently_of_each_other():
    data = synthetic_pairs(200, 4, seed=0)
    config = CVAEConfig(x_dim=4, y_dim=4, latent_dim=2, arch="mlp", hidden_dims=(8,))
    together = BatchedModel([_seeded(config, 0), _seeded(dataclasses.replace(config, beta=3.0), 1)])
    losses = per_config_loss(together.model, together.guide, *data.tensors(), estimators=site_estimators(together))
    losses[0].backward()
    touched = 0
    for name, param in together.named_parameters():
        assert param.grad[1].abs().max() == 0, f"config 0's loss reached config 1's {name}"
        touched += int(param.grad[0].abs().max() > 0)
    assert touched > 0


def test_a_diverging_configuration_stops_and_the_others_go_on():
    data = synthetic_gaussian(200, 4, seed=0)
    # A decoder std of 1e-30 overflows the float32 log-density: configuration 1 diverges, alone.
    configs = [VAEConfig(4, 2), VAEConfig(4, 2, eta_dec=1e-30), VAEConfig(4, 2, beta=2.0)]
    result = fit([_seeded(c, k) for k, c in enumerate(configs)], data, seed=[0, 1, 2], steps=120, lr=1e-2,
                 progress=False, device="cpu", on_divergence="stop")
    assert 1 in result.diverged and 0 not in result.diverged and 2 not in result.diverged
    step = result.diverged[1]
    assert np.isnan(result.loss.values[1, step:]).all() and np.isfinite(result.loss.values[1, :step]).all()
    assert np.isfinite(result.loss.values[[0, 2]]).all()
    assert np.isnan(result.final_loss[1]) and np.isfinite(result.final_loss[[0, 2]]).all()
    # the survivors are exactly what they are when trained alone
    alone = fit(_seeded(configs[2], 2), data, seed=2, steps=120, lr=1e-2, progress=False, device="cpu")
    np.testing.assert_allclose(result.loss.values[2], alone.loss.values, rtol=1e-4, atol=1e-4)


def test_every_configuration_diverging_raises():
    data = synthetic_gaussian(100, 4, seed=0)
    configs = [VAEConfig(4, 2, eta_dec=1e-30), VAEConfig(4, 2, eta_dec=1e-30, beta=2.0)]
    with pytest.raises(TrainingDivergedError, match="configuration"):
        fit([_seeded(c, k) for k, c in enumerate(configs)], data, seed=[0, 1], steps=60, lr=1e-2,
            progress=False, device="cpu", on_divergence="stop")


@pytest.mark.parametrize("base, data, batch_size, steps", [
    (CVAEConfig(x_dim=4, y_dim=3, latent_dim=2, arch="mlp", hidden_dims=(8,)), synthetic_pairs(120, 4, y_dim=3, seed=1),
     32, 70),
    (CVAEConfig(16, 48, 3, arch="cnn", image_shape=(8, 8), split="quadrant", hidden_dims=(8,),
                latent_mapping="separate"), synthetic_pairs(80, 16, y_dim=48, seed=1), 16, 10),
], ids=["mlp", "cnn"])
def test_a_k_run_resumes_bit_for_bit(base, data, batch_size, steps, tmp_path):
    configs = [dataclasses.replace(base, beta=b) for b in (0.5, 2.0)]
    options = {"batch_size": batch_size, "lr": 1e-2, "progress": False, "device": "cpu", "seed": [5, 6]}
    straight = fit([_seeded(c, k) for k, c in enumerate(configs)], data, steps=steps, **options)
    fit([_seeded(c, k) for k, c in enumerate(configs)], data, steps=steps // 2, run_dir=tmp_path / "run", **options)
    resumed = fit([_seeded(c, 99) for c in configs], data, steps=steps, run_dir=tmp_path / "run", resume=True,
                  **options)
    np.testing.assert_array_equal(straight.loss.values, resumed.loss.values)
    for a, b in zip(straight.models, resumed.models):
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)


def test_per_config_clipping_matches_torch_clipping_of_each_slice():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4, 2)), torch.nn.Parameter(torch.randn(3, 1, 5))]
    for p in params:
        p.grad = torch.randn_like(p) * torch.tensor([0.01, 1.0, 10.0]).reshape(3, *[1] * (p.dim() - 1))
    expected = []
    for k in range(3):
        slices = [torch.nn.Parameter(p[k].detach().clone()) for p in params]
        for s, p in zip(slices, params):
            s.grad = p.grad[k].clone()
        torch.nn.utils.clip_grad_norm_(slices, 1.0)
        expected.append([s.grad for s in slices])
    norms = clip_per_config_(params, 1.0)
    assert norms.shape == (3,)
    for k in range(3):
        for p, e in zip(params, expected[k]):
            torch.testing.assert_close(p.grad[k], e)


def test_batched_config_shapes_and_fall_through():
    configs = [CVAEConfig(x_dim=3, y_dim=2, latent_dim=2, beta=b, eta_dec=e) for b, e in [(0.5, 1.0), (2.0, 0.25)]]
    batched = BatchedConfig(configs, device=torch.device("cpu"))
    assert batched.beta.shape == (2, 1)
    assert batched.eta_dec.shape == (2, 1, 1)
    assert batched.eta_dec[1].item() == 0.25
    assert batched.latent_dim == 2 and batched.arch == "linear"


def test_can_vectorise_names_what_differs():
    base = CVAEConfig(x_dim=3, y_dim=2, latent_dim=2)
    ok, reason = can_vectorise([base, CVAEConfig(x_dim=3, y_dim=2, latent_dim=2, beta=4.0)])
    assert ok and reason == ""
    ok, reason = can_vectorise([base, CVAEConfig(x_dim=3, y_dim=2, latent_dim=1)])
    assert not ok and "latent_dim" in reason
    cnn = CVAEConfig(x_dim=16, y_dim=48, latent_dim=2, arch="cnn", image_shape=(8, 8), split="quadrant")
    assert can_vectorise([cnn, dataclasses.replace(cnn, beta=2.0)]) == (True, "")  # batched conv blocks
    ok, reason = can_vectorise([cnn, dataclasses.replace(cnn, split="half", x_dim=32, y_dim=32)])
    assert not ok and "split" in reason


def test_models_of_different_architectures_are_refused_by_name():
    data = synthetic_pairs(20, 3, y_dim=2, seed=0)
    models = [build_model(CVAEConfig(x_dim=3, y_dim=2, latent_dim=2)),
              build_model(CVAEConfig(x_dim=3, y_dim=2, latent_dim=1))]
    with pytest.raises(ValueError, match="latent_dim"):
        fit(models, data, steps=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="one per configuration"):
        fit(models[:1] * 2, data, steps=1, seed=[1, 2, 3], progress=False, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_training_stays_on_the_gpu():
    data = synthetic_pairs(256, 5, seed=0).to("cuda")
    models = [_seeded(CVAEConfig(x_dim=5, y_dim=5, latent_dim=2, arch="mlp", beta=b), 0).cuda() for b in (0.5, 2)]
    result = fit(models, data, steps=20, batch_size=64, seed=[0, 1], device="cuda", progress=False)
    assert all(p.is_cuda for model in result.models for p in model.parameters())
    assert np.isfinite(result.loss.values).all() and result.loss.shape == (2, 20)
