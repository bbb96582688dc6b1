"""Synthetic Gaussian data with a known second-moment spectrum.

The theory (SPEC section 3) is written in terms of the eigen-decomposition of
the uncentred second moment ``E[x x^T] = P diag(phi) P^T``. These generators
draw zero-mean Gaussian data whose population second moment is exactly that,
with ``phi`` chosen by the caller (or drawn from a seeded decaying spectrum)
and ``P`` a seeded random rotation, so a trained model can be checked against
the closed-form optima mode by mode.

Random streams
--------------
One ``numpy.random.SeedSequence(seed)`` is split into independent children
(spectrum, rotation, samples, noise, embedding). Hence, for equal ``n``,
``dim``, ``spectrum`` and ``seed``, ``synthetic_pairs(...).y`` equals
``synthetic_gaussian(...).x``: the pairs are the single-input data plus a
noisy copy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ppl_vae._validate import check_choice, check_finite_matrix, check_int_range, check_positive_seq
from ppl_vae.data.bundle import DataBundle

#: Coefficient ``a`` in ``x = a y + sqrt(1 - a^2) n`` for each input-output
#: correlation level of SPEC 6.4 (1: x is y; 0: x is independent noise).
CORRELATION_LEVELS: dict[str, float] = {
    "identical": 1.0,
    "noise_1_2": 1.0 / 2.0,
    "noise_1_4": 1.0 / 4.0,
    "noise_1_8": 1.0 / 8.0,
    "independent": 0.0,
}

# Range of the default spectrum (variances). It straddles 1 so that, at
# beta = eta_dec = 1, some modes collapse (phi < beta eta_dec^2) and some do not.
_DEFAULT_SPECTRUM_RANGE = (0.05, 5.0)

_STREAMS = ("spectrum", "rotation", "samples", "noise", "embedding")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent named generators derived from one integer seed."""
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def default_spectrum(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A random decaying variance spectrum.

    Parameters
    ----------
    dim
        Number of principal directions.
    rng
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        ``(dim,)`` float64 variances, log-uniform on ``[0.05, 5]``, sorted
        descending.
    """
    low, high = np.log(_DEFAULT_SPECTRUM_RANGE)
    return np.sort(np.exp(rng.uniform(low, high, size=dim)))[::-1].copy()


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed random orthogonal matrix.

    Parameters
    ----------
    dim
        Matrix size.
    rng
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        ``(dim, dim)`` float64 orthogonal matrix.
    """
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    # QR leaves a sign per column undetermined; fixing it by diag(r) makes the
    # distribution uniform over the orthogonal group rather than biased.
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def _check_seed(seed: int) -> int:
    return check_int_range("seed", seed, low=0)


def _resolve_spectrum(spectrum, dim: int, rng: np.random.Generator) -> np.ndarray:
    if spectrum is None:
        return default_spectrum(dim, rng)
    values = check_positive_seq("spectrum", spectrum)
    if values.shape != (dim,):
        raise ValueError(f"spectrum must have length dim = {dim}, got length {values.size}")
    return values


def _gaussian_with_spectrum(n: int, dim: int, spectrum, streams: dict) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``(n, dim)`` with second moment ``P diag(phi) P^T``, and ``phi``."""
    phi = _resolve_spectrum(spectrum, dim, streams["spectrum"])
    rotation = random_rotation(dim, streams["rotation"])
    whitened = streams["samples"].standard_normal((n, dim))
    samples = (whitened * np.sqrt(phi)) @ rotation.T
    return samples, phi


def _as_float32(name: str, array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(check_finite_matrix(name, array), dtype=np.float32))


def synthetic_gaussian(n: int, dim: int, *, spectrum=None, seed: int = 0) -> DataBundle:
    """Zero-mean Gaussian data with second moment ``P diag(spectrum) P^T``.

    Parameters
    ----------
    n
        Number of samples (>= 1).
    dim
        Data dimension (>= 1).
    spectrum
        ``(dim,)`` positive variances of the principal directions (any order;
        the i-th entry belongs to the i-th column of ``P``). ``None``: a seeded
        random decaying spectrum, log-uniform on ``[0.05, 5]``.
    seed
        Seed (>= 0) for spectrum, rotation ``P`` and samples.

    Returns
    -------
    DataBundle
        ``x`` of shape ``(n, dim)``, float32. ``attrs`` holds ``seed``,
        ``spectrum`` (the variances used, list) and ``spec`` (arguments of
        :func:`ppl_vae.data.load` that rebuild the bundle).
    """
    n = check_int_range("n", n, low=1)
    dim = check_int_range("dim", dim, low=1)
    seed = _check_seed(seed)
    samples, phi = _gaussian_with_spectrum(n, dim, spectrum, _streams(seed))
    spec = {
        "name": "synthetic",
        "paired": False,
        "n": n,
        "dim": dim,
        "spectrum": None if spectrum is None else phi.tolist(),
        "seed": seed,
    }
    attrs = {"seed": seed, "spectrum": phi.tolist(), "spec": spec}
    return DataBundle("synthetic", _as_float32("x", samples), attrs=attrs)


def _embedding(dim: int, y_dim: int, rng: np.random.Generator) -> np.ndarray:
    """``(dim, y_dim)`` map from y-space to x-space with orthonormal rows or columns."""
    if dim == y_dim:
        return np.eye(dim)
    return random_rotation(max(dim, y_dim), rng)[:dim, :y_dim]


def synthetic_pairs(
    n: int,
    dim: int,
    *,
    correlation: str = "noise_1_2",
    y_dim: int | None = None,
    seed: int = 0,
    spectrum=None,
) -> DataBundle:
    """CVAE pairs ``(x, y)`` with a chosen input-output correlation (SPEC 6.4).

    ``y`` is zero-mean Gaussian with second moment ``P diag(spectrum) P^T``
    (exactly the data of :func:`synthetic_gaussian` with the same arguments),
    and the condition is a noisy copy of it,

    ``x = a W y + sqrt(1 - a^2) n``,  ``n ~ N(0, I_dim)`` independent of ``y``,

    with ``a = CORRELATION_LEVELS[correlation]``. ``W`` is the identity when
    ``y_dim == dim`` (the SPEC setting) and otherwise a seeded random
    ``(dim, y_dim)`` matrix with orthonormal rows or columns. For a standard
    spectrum the noise keeps ``x`` at unit variance per direction; in general
    ``E[x x^T] = a^2 W S W^T + (1 - a^2) I``.

    Parameters
    ----------
    n
        Number of pairs (>= 1).
    dim
        Dimension of the condition ``x`` (>= 1).
    correlation
        One of ``CORRELATION_LEVELS``: ``'identical'`` (``x = y``),
        ``'noise_1_2'``, ``'noise_1_4'``, ``'noise_1_8'``, ``'independent'``.
    y_dim
        Dimension of ``y``; ``None`` means ``dim``. Must equal ``dim`` for
        ``'identical'``.
    seed
        Seed (>= 0).
    spectrum
        ``(y_dim,)`` positive variances of ``y``'s principal directions;
        ``None``: seeded random decaying spectrum.

    Returns
    -------
    DataBundle
        ``x`` ``(n, dim)`` and ``y`` ``(n, y_dim)``, float32. ``attrs`` holds
        ``seed``, ``spectrum`` (of ``y``), ``correlation``, ``a`` and ``spec``.
    """
    n = check_int_range("n", n, low=1)
    dim = check_int_range("dim", dim, low=1)
    y_dim = dim if y_dim is None else check_int_range("y_dim", y_dim, low=1)
    correlation = check_choice("correlation", correlation, CORRELATION_LEVELS)
    seed = _check_seed(seed)
    if correlation == "identical" and y_dim != dim:
        raise ValueError(f"y_dim must equal dim = {dim} when correlation is 'identical', got y_dim = {y_dim}")

    streams = _streams(seed)
    y, phi = _gaussian_with_spectrum(n, y_dim, spectrum, streams)
    a = CORRELATION_LEVELS[correlation]
    noise = streams["noise"].standard_normal((n, dim))
    x = a * (y @ _embedding(dim, y_dim, streams["embedding"]).T) + math.sqrt(1.0 - a * a) * noise

    spec = {
        "name": "synthetic",
        "paired": True,
        "n": n,
        "dim": dim,
        "correlation": correlation,
        "y_dim": y_dim,
        "seed": seed,
        "spectrum": None if spectrum is None else phi.tolist(),
    }
    attrs = {"seed": seed, "spectrum": phi.tolist(), "correlation": correlation, "a": a, "spec": spec}
    return DataBundle("synthetic", _as_float32("x", x), _as_float32("y", y), attrs=attrs)
