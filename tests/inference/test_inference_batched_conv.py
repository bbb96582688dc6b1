"""Batched conv blocks against K ordinary ConvEncoders / ConvDecoders, and the CNN through the batched engine."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from ppl_vae.data import synthetic_pairs
from ppl_vae.inference import fit
from ppl_vae.inference.batched import BatchedModel, can_vectorise
from ppl_vae.inference import batched_conv
from ppl_vae.inference.batched_conv import BatchedConvDecoder, BatchedConvEncoder, tap_matrix
from ppl_vae.inference.layers import UnsupportedLayerError, is_stackable, stack_modules, unstack_into
from ppl_vae.models import CVAEConfig, build_model
from ppl_vae.models.networks import ConvDecoder, ConvEncoder

#: float32; the grouped convolutions sum in another order than K separate ones.
TOL = {"rtol": 1e-5, "atol": 1e-5}
K = 3


def _encoders(image_shape=(8, 8), out_dim=5):
    torch.manual_seed(0)
    return [ConvEncoder(image_shape, out_dim, channels=(3, 4)) for _ in range(K)]


def _decoders(in_dim=4, image_shape=(7, 9)):
    torch.manual_seed(1)  # 7 x 9: odd and even sides, so both output paddings are exercised
    return [ConvDecoder(in_dim, image_shape, channels=(4, 3)) for _ in range(K)]


def _inputs(width):
    torch.manual_seed(2)
    return {"shared": torch.randn(6, width), "per_config": torch.randn(K, 6, width),
            "draws": torch.randn(2, K, 6, width)}  # the diagnostics' (S, K, n, d)


def _slice(inputs, k):
    return inputs if inputs.dim() == 2 else inputs.select(-3, k)


@pytest.fixture(params=["dense", "grouped", "mixed"])
def layer_paths(request, monkeypatch):
    """Which layers of a batched block run as dense products: all of the test blocks' (their images are small),
    none (grouped convolutions, as on MNIST's 28 x 28), or some (16 positions: the encoder's 8 x 8 input layer
    grouped and its 4 x 4 one dense; the decoder's 2 x 3 grid dense and its 4 x 5 one grouped)."""
    monkeypatch.setattr(batched_conv, "DENSE_MAX_POSITIONS", {"dense": 64, "grouped": 0, "mixed": 16}[request.param])
    return request.param


@pytest.mark.parametrize("kind", ["shared", "per_config", "draws"])
@pytest.mark.parametrize("block", ["encoder", "decoder"])
def test_slice_k_equals_network_k(block, kind, layer_paths):
    nets, width = (_encoders(), 64) if block == "encoder" else (_decoders(), 4)
    batched = stack_modules(nets)
    assert isinstance(batched, BatchedConvEncoder if block == "encoder" else BatchedConvDecoder)
    inputs = _inputs(width)[kind]
    out = batched(inputs)
    lead = inputs.shape[:-3] if inputs.dim() > 2 else ()
    assert out.shape == (*lead, K, 6, nets[0](inputs[..., :1, :]).shape[-1])
    for k, net in enumerate(nets):
        torch.testing.assert_close(out.select(-3, k), net(_slice(inputs, k)), **TOL)


@pytest.mark.parametrize("block", ["encoder", "decoder"])
def test_gradients_equal_each_networks_and_stay_in_their_configuration(block, layer_paths):
    nets, width = (_encoders(), 64) if block == "encoder" else (_decoders(), 4)
    batched = stack_modules(nets)
    inputs = _inputs(width)["per_config"]
    weights = torch.randn(K, 6, 1)  # a different loss per configuration
    (batched(inputs) * weights).pow(2).sum().backward()
    for k, net in enumerate(nets):
        (net(inputs[k]) * weights[k]).pow(2).sum().backward()
    # the K networks' gradients, laid out as the batched parameters are: stack copies holding them as weights
    grads = [copy.deepcopy(net) for net in nets]
    for held, net in zip(grads, nets):
        for p, q in zip(held.parameters(), net.parameters()):
            p.data = q.grad.clone()
    expected = dict(stack_modules(grads).named_parameters())
    for name, p in batched.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], **TOL, msg=name)
    # configuration 0's loss alone reaches no other slice
    batched.zero_grad()
    batched(inputs)[0].sum().backward()
    for name, p in batched.named_parameters():
        assert p.grad[1:].abs().max() == 0, name


def test_the_layer_paths_are_the_ones_named(layer_paths):
    dense = {"dense": [True, True, True, True], "grouped": [False] * 4, "mixed": [False, True, True, False]}
    encoder, decoder = stack_modules(_encoders()), stack_modules(_decoders())
    paths = [getattr(block, f"taps_{i}") is not None for block in (encoder, decoder) for i in range(2)]
    assert paths == dense[layer_paths]
    assert not any(name.startswith("taps") for name in {**encoder.state_dict(), **decoder.state_dict()})


@pytest.mark.parametrize("layer", [nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Conv2d(2, 3, 3, stride=1, padding=0),
                                   nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=(0, 1))])
def test_a_tap_matrix_product_is_the_layers_own_operation(layer):
    """Per kernel tap, which input position reaches which output position: the product with the kernel is the
    convolution itself (float64: exact up to the order of a 2 x 9-term sum)."""
    layer = layer.double()
    shape = (5, 6)
    images = torch.randn(4, 2, *shape, dtype=torch.float64)
    taps = tap_matrix(shape, layer).double()
    weight = layer.weight.unsqueeze(0)
    if isinstance(layer, nn.ConvTranspose2d):
        matrix = batched_conv._deconv_matrix(weight, taps)
    else:
        matrix = batched_conv._conv_matrix(weight, taps)
    dense = batched_conv._dense_layer(images.reshape(1, 4, -1), matrix, layer.bias.unsqueeze(0), taps.shape[2])
    torch.testing.assert_close(dense[0], layer(images).flatten(1), rtol=1e-12, atol=1e-12)


def test_unstack_round_trip_through_a_whole_network():
    torch.manual_seed(3)
    nets = [nn.Sequential(ConvEncoder((8, 8), 4), nn.ReLU(), ConvDecoder(4, (8, 8))) for _ in range(K)]
    batched = stack_modules(nets)
    with torch.no_grad():
        for p in batched.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fresh = [nn.Sequential(ConvEncoder((8, 8), 4), nn.ReLU(), ConvDecoder(4, (8, 8))) for _ in range(K)]
    unstack_into(batched, fresh)
    x = torch.randn(5, 64)
    out = batched(x)
    for k, net in enumerate(fresh):
        torch.testing.assert_close(net(x), out[k], **TOL)
    # and stacking the written-back networks gives the batched parameters exactly
    for ours, again in zip(batched.parameters(), stack_modules(fresh).parameters()):
        assert torch.equal(ours, again)


def test_bad_inputs_and_unbatchable_layers_are_refused():
    batched = stack_modules(_encoders())
    with pytest.raises(ValueError, match="ConvEncoder inputs must have shape"):
        batched(torch.randn(2, 6, 64))  # 2 slices for 3 configurations
    with pytest.raises(ValueError, match="ConvDecoder inputs must have shape"):
        stack_modules(_decoders())(torch.randn(4))
    assert is_stackable(nn.Sequential(ConvEncoder((4, 4), 2), nn.ReLU(), ConvDecoder(2, (4, 4))))
    for layer in (nn.Conv2d(1, 2, 3), nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.BatchNorm1d(3)):
        assert not is_stackable(layer)
        with pytest.raises(UnsupportedLayerError):
            stack_modules([layer, layer])

    class Strided(ConvEncoder):  # a subclass may change forward: not batched as a ConvEncoder
        pass

    assert not is_stackable(Strided((4, 4), 2))


def _cnn_cvae(**changes):
    base = CVAEConfig(16, 48, 3, arch="cnn", image_shape=(8, 8), split="quadrant", hidden_dims=(8,),
                      latent_mapping="separate")
    return dataclasses.replace(base, **changes)


def _seeded(config, seed):
    torch.manual_seed(seed)
    return build_model(config)


def test_cnn_configurations_can_be_vectorised_unless_a_network_is_not_batchable():
    configs = [_cnn_cvae(), _cnn_cvae(beta=2.0)]
    assert can_vectorise(configs) == (True, "")
    models = [build_model(c) for c in configs]
    assert can_vectorise(configs, models) == (True, "")
    models[1].decoder_x = nn.Sequential(nn.Conv2d(1, 1, 3))
    ok, reason = can_vectorise(configs, models)
    assert not ok and "cannot be batched" in reason


@pytest.mark.parametrize("changes", [{}, {"latent_mapping": "joint", "prior": "learned"}])
def test_three_cnn_cvaes_trained_as_one_equal_their_separate_runs(changes):
    """Distinct seeds and minibatches, clipping and a learning-rate schedule: batching the CNN changes nothing."""
    data = synthetic_pairs(120, 16, y_dim=48, seed=0)
    # lr 1e-3: Adam divides by |g| + 1e-8, so a gradient entry near 1e-10 (a near-dead unit) turns the
    # round-off of a differently ordered sum into a visible step; at 1e-2 one weight of 4,608 moved 1e-4 apart
    # after 12 steps while every loss stayed equal.
    options = {"steps": 12, "batch_size": 32, "lr": 1e-3, "lr_decay": 0.99, "clip_norm": 5.0, "device": "cpu",
               "progress": False}
    seeds = [3, 11, 12]
    configs = [_cnn_cvae(beta=0.5 + 0.5 * k, **changes) for k in range(K)]
    together = fit([_seeded(c, s) for c, s in zip(configs, seeds)], data, seed=seeds, **options)
    assert together.provenance["engine"] == "configs plate"
    for k in range(K):
        alone = fit(_seeded(configs[k], seeds[k]), data, seed=seeds[k], **options)
        np.testing.assert_allclose(together.loss.values[k], alone.loss.values, rtol=1e-5, atol=1e-5)
        for (name, mine), theirs in zip(together.models[k].state_dict().items(), alone.model.state_dict().values()):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=name)


def test_batched_cnn_model_parameters_lead_with_the_configuration():
    """Per-configuration clipping, freezing and the checkpoint check slice every parameter along dim 0."""
    batched = BatchedModel([_seeded(_cnn_cvae(), k) for k in range(K)])
    assert all(p.shape[0] == K for p in batched.parameters())
