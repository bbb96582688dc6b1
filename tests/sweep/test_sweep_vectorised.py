"""One batched SVI run against ordinary training."""

import dataclasses

import numpy as np
import pytest
import torch

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference import fit
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model
from ppl_vae.sweep.vectorised import BatchedConfig, BatchedModel, can_vectorise, clip_per_config_, train_batched


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
def test_one_configuration_trains_exactly_like_fit(config, data):
    options = {"steps": 60, "batch_size": 64, "lr": 1e-2, "lr_decay": 0.99, "clip_norm": 5.0}
    batched = BatchedModel([_seeded(config, 3)])
    ours = train_batched(batched, data.tensors(), seed=3, **options)
    ordinary = fit(_seeded(config, 3), data, seed=3, device="cpu", progress=False, **options)
    np.testing.assert_allclose(ours.loss_history[0], ordinary.loss.values, rtol=1e-4, atol=1e-4)


def test_configurations_train_independently_of_each_other():
    data = synthetic_pairs(200, 4, seed=0)
    config = CVAEConfig(x_dim=4, y_dim=4, latent_dim=2, arch="mlp", hidden_dims=(8,))
    together = BatchedModel([_seeded(config, 0), _seeded(dataclasses.replace(config, beta=3.0), 1)])
    losses = together.loss(*data.tensors())
    losses[0].backward()
    touched = 0
    for name, param in together.named_parameters():
        assert param.grad[1].abs().max() == 0, f"config 0's loss reached config 1's {name}"
        touched += int(param.grad[0].abs().max() > 0)
    assert touched > 0


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
    assert not can_vectorise([cnn, cnn])[0]


def test_train_batched_rejects_bad_options():
    batched = BatchedModel([build_model(CVAEConfig(x_dim=3, y_dim=2, latent_dim=2))])
    data = synthetic_pairs(20, 3, y_dim=2, seed=0).tensors()
    with pytest.raises(ValueError, match="exactly one of steps"):
        train_batched(batched, data)
    with pytest.raises(ValueError, match="optimizer"):
        train_batched(batched, data, steps=1, optimizer="sgd")
    with pytest.raises(ValueError, match="lr_decay"):
        train_batched(batched, data, steps=1, lr_decay=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_training_stays_on_the_gpu():
    data = synthetic_pairs(256, 5, seed=0).to("cuda")
    models = [_seeded(CVAEConfig(x_dim=5, y_dim=5, latent_dim=2, arch="mlp", beta=b), 0).cuda() for b in (0.5, 2)]
    batched = BatchedModel(models)
    assert all(p.is_cuda for p in batched.parameters())
    result = train_batched(batched, data.tensors(), steps=20, batch_size=64, seed=0)
    assert np.isfinite(result.loss_history).all() and result.loss_history.shape == (2, 20)
