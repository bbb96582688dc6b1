"""Batched layers against K ordinary layers."""

import pytest
import torch
from torch import nn

from ppl_vae.models.networks import DiagonalGaussian, feature_body, mlp
from ppl_vae.inference.layers import BatchedLinear, UnsupportedLayerError, is_stackable, stack_modules, unstack_into


def _linears(k, d_in, d_out, bias):
    torch.manual_seed(0)
    return [nn.Linear(d_in, d_out, bias=bias) for _ in range(k)]


@pytest.mark.parametrize("bias", [True, False])
def test_batched_linear_matches_each_linear_on_shared_and_per_config_inputs(bias):
    linears = _linears(3, 5, 4, bias)
    batched = BatchedLinear.from_linears(linears)
    shared = torch.randn(7, 5)
    per_config = torch.randn(3, 7, 5)
    out_shared, out_per_config = batched(shared), batched(per_config)
    assert out_shared.shape == out_per_config.shape == (3, 7, 4)
    for k, linear in enumerate(linears):
        torch.testing.assert_close(out_shared[k], linear(shared))
        torch.testing.assert_close(out_per_config[k], linear(per_config[k]))


def test_batched_linear_gradients_stay_in_their_configuration():
    batched = BatchedLinear(3, 4, 2)
    out = batched(torch.randn(6, 4))
    out[1].sum().backward()
    grad_norms = batched.weight.grad.flatten(1).norm(dim=1)
    assert grad_norms[1] > 0
    assert grad_norms[0] == 0 and grad_norms[2] == 0


def test_copy_slice_round_trip():
    linears = _linears(2, 3, 3, True)
    batched = BatchedLinear.from_linears(linears)
    with torch.no_grad():
        batched.weight.mul_(2.0)
    target = nn.Linear(3, 3)
    batched.copy_slice_to(1, target)
    torch.testing.assert_close(target.weight, 2.0 * linears[1].weight)
    torch.testing.assert_close(target.bias, linears[1].bias)


def test_seeds_make_initialisation_reproducible_per_configuration():
    a = BatchedLinear(3, 4, 2, seeds=[5, 6, 5])
    b = BatchedLinear(1, 4, 2, seeds=[6])
    torch.testing.assert_close(a.weight[0], a.weight[2])
    torch.testing.assert_close(a.weight[1], b.weight[0])
    assert not torch.equal(a.weight[0], a.weight[1])
    bound = 1 / 4**0.5
    assert a.weight.abs().max() <= bound


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="n_configs"):
        BatchedLinear(0, 3, 3)
    with pytest.raises(ValueError, match="seeds"):
        BatchedLinear(2, 3, 3, seeds=[1])
    with pytest.raises(ValueError, match="inputs must have shape"):
        BatchedLinear(2, 3, 3)(torch.randn(4, 2, 3))
    with pytest.raises(ValueError, match="same in_features"):
        BatchedLinear.from_linears([nn.Linear(3, 2), nn.Linear(4, 2)])


@pytest.mark.parametrize("learnable_std", [True, False])
def test_stacked_gaussian_heads_match_each_network(learnable_std):
    torch.manual_seed(1)
    std = None if learnable_std else [0.5, 0.7]
    heads = []
    for _ in range(3):
        body, width = feature_body("mlp", 6, (8, 5))
        heads.append(DiagonalGaussian(body, width, 2, std=std))
    batched = stack_modules(heads)
    x = torch.randn(9, 6)
    loc, scale = batched(x)
    assert loc.shape == scale.shape == (3, 9, 2)
    for k, head in enumerate(heads):
        expected_loc, expected_scale = head(x)
        torch.testing.assert_close(loc[k], expected_loc)
        torch.testing.assert_close(scale[k], expected_scale)


def test_unstack_writes_trained_slices_back():
    torch.manual_seed(2)
    nets = [mlp(4, (6,), 3) for _ in range(2)]
    batched = stack_modules(nets)
    with torch.no_grad():
        for p in batched.parameters():
            p.add_(1.0)
    fresh = [mlp(4, (6,), 3) for _ in range(2)]
    unstack_into(batched, fresh)
    x = torch.randn(5, 4)
    out = batched(x)
    for k, net in enumerate(fresh):
        torch.testing.assert_close(net(x), out[k])


def test_bare_convolutions_are_not_stackable():
    """Only the suite's ConvEncoder / ConvDecoder have batched counterparts (tests/inference/test_inference_batched_conv.py)."""
    conv_net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    assert not is_stackable(conv_net)
    assert is_stackable(mlp(3, (4,), 2))
    with pytest.raises(UnsupportedLayerError):
        stack_modules([conv_net, conv_net])
