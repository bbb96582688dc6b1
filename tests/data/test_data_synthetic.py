"""Synthetic Gaussian data and CVAE pairs (SPEC 3 and 6.4)."""

import numpy as np
import pytest
import torch

from ppl_vae.data import CORRELATION_LEVELS, synthetic_gaussian, synthetic_pairs


def second_moment(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Empirical uncentred ``E[a b^T]`` in float64."""
    a64, b64 = a.double().numpy(), b.double().numpy()
    return a64.T @ b64 / a64.shape[0]


# ------------------------------------------------------------------ single input


def test_gaussian_shape_dtype_and_attrs():
    bundle = synthetic_gaussian(50, 7, seed=3)
    assert bundle.x.shape == (50, 7)
    assert bundle.x.dtype == torch.float32
    assert bundle.y is None and bundle.labels is None
    assert bundle.attrs["seed"] == 3
    assert len(bundle.attrs["spectrum"]) == 7


def test_gaussian_same_seed_reproduces_and_other_seed_differs():
    first, again, other = (synthetic_gaussian(100, 5, seed=s) for s in (1, 1, 2))
    assert torch.equal(first.x, again.x)
    assert not torch.allclose(first.x, other.x)
    assert first.attrs["spectrum"] != other.attrs["spectrum"]


def test_gaussian_honours_requested_spectrum():
    spectrum = [0.25, 4.0, 1.0, 0.5, 2.0]
    bundle = synthetic_gaussian(60_000, 5, spectrum=spectrum, seed=0)
    assert bundle.attrs["spectrum"] == spectrum
    eigenvalues = np.linalg.eigvalsh(second_moment(bundle.x, bundle.x))
    # Sample eigenvalues of well-separated modes have relative error ~ sqrt(2 / n) = 0.006.
    np.testing.assert_allclose(np.sort(eigenvalues), np.sort(spectrum), rtol=0.03)


def test_gaussian_is_rotated_not_axis_aligned():
    bundle = synthetic_gaussian(20_000, 4, spectrum=[4.0, 2.0, 1.0, 0.5], seed=0)
    moment = second_moment(bundle.x, bundle.x)
    off_diagonal = moment - np.diag(np.diag(moment))
    assert np.abs(off_diagonal).max() > 0.1


def test_gaussian_default_spectrum_decays_within_range():
    spectrum = np.asarray(synthetic_gaussian(10, 32, seed=5).attrs["spectrum"])
    assert spectrum.shape == (32,)
    assert np.all(np.diff(spectrum) <= 0)
    assert spectrum.min() >= 0.05 and spectrum.max() <= 5.0
    assert spectrum[0] > 1.0 > spectrum[-1]  # straddles 1: some modes collapse at beta = eta = 1


def test_gaussian_one_dimension_works():
    bundle = synthetic_gaussian(1, 1, spectrum=[2.0])
    assert bundle.x.shape == (1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0, "dim": 3},
        {"n": 10, "dim": 0},
        {"n": 10.5, "dim": 3},
        {"n": 10, "dim": 3, "seed": -1},
        {"n": 10, "dim": 3, "spectrum": [1.0, 2.0]},
        {"n": 10, "dim": 3, "spectrum": [1.0, -2.0, 1.0]},
        {"n": 10, "dim": 3, "spectrum": [1.0, float("nan"), 1.0]},
    ],
)
def test_gaussian_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic_gaussian(**kwargs)


# ------------------------------------------------------------------------- pairs


def test_correlation_levels_match_spec():
    assert CORRELATION_LEVELS == {
        "identical": 1.0,
        "noise_1_2": 0.5,
        "noise_1_4": 0.25,
        "noise_1_8": 0.125,
        "independent": 0.0,
    }


def test_pairs_shapes_and_attrs():
    bundle = synthetic_pairs(40, 6, correlation="noise_1_4", seed=2)
    assert bundle.x.shape == (40, 6) and bundle.y.shape == (40, 6)
    assert bundle.x.dtype == bundle.y.dtype == torch.float32
    assert bundle.is_paired
    assert bundle.attrs["correlation"] == "noise_1_4"
    assert bundle.attrs["a"] == 0.25


def test_pairs_y_is_the_single_input_data_of_the_same_seed():
    pairs = synthetic_pairs(80, 5, seed=4)
    single = synthetic_gaussian(80, 5, seed=4)
    assert torch.equal(pairs.y, single.x)
    assert pairs.attrs["spectrum"] == single.attrs["spectrum"]


def test_pairs_same_seed_reproduces_and_other_seed_differs():
    first, again, other = (synthetic_pairs(60, 4, seed=s) for s in (0, 0, 1))
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not torch.allclose(first.x, other.x)
    assert not torch.allclose(first.y, other.y)


def test_identical_pairs_are_equal():
    bundle = synthetic_pairs(100, 8, correlation="identical")
    assert torch.equal(bundle.x, bundle.y)


@pytest.mark.parametrize("correlation", list(CORRELATION_LEVELS))
def test_cross_moment_follows_level(correlation):
    # x = a y + sqrt(1 - a^2) n with n independent of y  =>  E[x y^T] = a E[y y^T].
    a = CORRELATION_LEVELS[correlation]
    bundle = synthetic_pairs(20_000, 8, correlation=correlation, seed=1)
    cross = second_moment(bundle.x, bundle.y)
    own = second_moment(bundle.y, bundle.y)
    fitted_a = np.sum(cross * own) / np.sum(own * own)
    # Sampling error of fitted_a is ~ 1 / sqrt(n) = 0.007 at most.
    assert fitted_a == pytest.approx(a, abs=0.03)
    residual = cross - a * own
    assert np.linalg.norm(residual) < 0.05 * np.linalg.norm(own)


def test_noise_has_unit_variance_in_x():
    # With a unit spectrum the noise keeps every coordinate of x at unit variance.
    bundle = synthetic_pairs(40_000, 4, correlation="noise_1_2", spectrum=[1.0] * 4, seed=0)
    np.testing.assert_allclose(np.diag(second_moment(bundle.x, bundle.x)), 1.0, atol=0.04)


def test_correlation_strength_is_ordered():
    def mean_abs_correlation(correlation):
        bundle = synthetic_pairs(20_000, 8, correlation=correlation, seed=2)
        x, y = bundle.x.double().numpy(), bundle.y.double().numpy()
        return np.mean([abs(np.corrcoef(x[:, i], y[:, i])[0, 1]) for i in range(x.shape[1])])

    strengths = [mean_abs_correlation(level) for level in CORRELATION_LEVELS]
    assert strengths[0] == pytest.approx(1.0)
    assert all(stronger > weaker for stronger, weaker in zip(strengths, strengths[1:]))
    assert strengths[-1] < 0.03


def test_pairs_honour_spectrum_of_y():
    spectrum = [3.0, 1.0, 0.3]
    bundle = synthetic_pairs(60_000, 3, correlation="noise_1_2", spectrum=spectrum, seed=0)
    eigenvalues = np.linalg.eigvalsh(second_moment(bundle.y, bundle.y))
    np.testing.assert_allclose(np.sort(eigenvalues), np.sort(spectrum), rtol=0.03)


def test_pairs_with_other_output_dimension():
    bundle = synthetic_pairs(30_000, 3, correlation="noise_1_2", y_dim=5, seed=0)
    assert bundle.x.shape == (30_000, 3) and bundle.y.shape == (30_000, 5)
    # x = a W y + noise with orthonormal rows of W: x still carries a share a of y.
    cross = second_moment(bundle.x, bundle.y)
    assert np.linalg.norm(cross) > 0.2 * np.linalg.norm(second_moment(bundle.y, bundle.y))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"correlation": "noise_1_3"},
        {"correlation": "identical", "y_dim": 5},
        {"y_dim": 0},
        {"spectrum": [1.0, 1.0]},
        {"seed": -3},
    ],
)
def test_pairs_reject_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic_pairs(10, 4, **kwargs)


def test_correlation_error_lists_levels():
    with pytest.raises(ValueError, match="noise_1_8"):
        synthetic_pairs(10, 4, correlation="strong")

