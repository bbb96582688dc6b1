"""Per-configuration noise: slice k of a K-configuration draw is generator k's own draw."""

import pytest
import torch

from ppl_vae.inference.randomness import NOISE_STREAM, ConfigNoise, make_generators

CPU = torch.device("cpu")


@pytest.mark.parametrize("shape", [(3, 1800, 4), (4, 5, 3), (2, 7, 16), (3, 17), (2, 1, 1), (5, 2, 3, 4)])
def test_each_configurations_noise_is_its_own_generators_draw(shape):
    # Sizes below 16, not a multiple of 16 and a multiple of 16 take different paths in torch's
    # normal sampler; each must give slice k exactly what a separate draw from generator k gives.
    seeds = [11 * k + 3 for k in range(shape[0])]
    noise = ConfigNoise(make_generators(seeds, NOISE_STREAM, CPU))
    separate = make_generators(seeds, NOISE_STREAM, CPU)
    like = torch.zeros(())
    for _ in range(3):  # successive steps continue each stream
        drawn = noise.draw(torch.Size(shape), "z", like)
        assert drawn.shape == shape and drawn.dtype == like.dtype and drawn.is_contiguous()
        for k, generator in enumerate(separate):
            assert torch.equal(drawn[k], torch.randn(shape[1:], generator=generator)), k
    for ours, theirs in zip(noise.generators, separate):
        assert torch.equal(ours.get_state(), theirs.get_state())


def test_a_configurations_noise_does_not_depend_on_the_others():
    # Configuration 1 of a K-run with seeds (5, 9, 2) draws what configuration 0 of a run with seed 9 draws.
    shape = torch.Size((3, 40, 2))
    batched = ConfigNoise(make_generators([5, 9, 2], NOISE_STREAM, CPU)).draw(shape, "z", torch.zeros(()))
    alone = ConfigNoise(make_generators([9], NOISE_STREAM, CPU)).draw(shape[1:], "z", torch.zeros(()))
    assert torch.equal(batched[1], alone)
    assert not torch.equal(batched[0], batched[1])


def test_a_site_with_the_wrong_number_of_configurations_is_refused():
    noise = ConfigNoise(make_generators([0, 1], NOISE_STREAM, CPU))
    with pytest.raises(ValueError, match="3 configurations, expected 2"):
        noise.draw(torch.Size((3, 4, 2)), "z", torch.zeros(()))
