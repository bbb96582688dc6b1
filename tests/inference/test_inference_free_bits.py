import pytest
import torch

from ppl_vae.inference.free_bits import free_bits_kl


def kl_table(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2.0


def test_zero_floor_is_the_plain_batch_sum():
    kl = kl_table(5, 16, 4)
    torch.testing.assert_close(free_bits_kl(kl, 0.0), kl.sum(dim=(-2, -1)))


def test_floor_replaces_dimensions_whose_batch_mean_is_below_it():
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]], dtype=torch.float64)  # dim means 0.2 and 3.0
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(2 * (0.5 + 3.0))
    assert free_bits_kl(kl, 5.0).item() == pytest.approx(2 * (5.0 + 5.0))
    # A floor below every mean changes nothing.
    assert free_bits_kl(kl, 0.1).item() == pytest.approx(kl.sum().item())


def test_gradient_is_zero_below_the_floor_and_one_above():
    kl = torch.tensor([[0.1, 2.0, 0.2], [0.3, 4.0, 0.1]], dtype=torch.float64, requires_grad=True)
    free_bits_kl(kl, 0.5).backward()
    expected = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(kl.grad, expected)


def test_per_configuration_floor_broadcasts_over_leading_dims():
    kl = kl_table(3, 8, 5, seed=1)
    floors = torch.tensor([0.0, 0.9, 3.0], dtype=torch.float64).reshape(3, 1, 1)
    out = free_bits_kl(kl, floors)
    assert out.shape == (3,)
    for k in range(3):
        torch.testing.assert_close(out[k], free_bits_kl(kl[k], float(floors[k])))
    assert out[2].item() == pytest.approx(8 * 5 * 3.0)  # every dimension's mean (< 2) sits under 3 nats


def test_result_is_never_below_the_plain_sum_and_grows_with_the_floor():
    kl = kl_table(4, 10, 6, seed=2)
    values = [free_bits_kl(kl, floor) for floor in (0.0, 0.5, 1.0, 1.5)]
    for lower, higher in zip(values, values[1:]):
        assert torch.all(higher >= lower)
    assert torch.any(values[-1] > values[0])


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_floor_is_refused(bad):
    with pytest.raises(ValueError, match="free_bits must be finite and >= 0"):
        free_bits_kl(kl_table(4, 3), bad)


def test_bad_kl_shape_is_refused():
    with pytest.raises(ValueError, match=r"kl_per_dim must be a tensor of shape \(\.\.\., B, d\)"):
        free_bits_kl(torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="B >= 1"):
        free_bits_kl(torch.ones(0, 3), 0.1)
