"""Hyper-parameter thresholds at which the linear MHVAE's modes collapse (Theorem 3: Sigma2 learnable).

Derived from the closed form of :func:`ppl_vae.theory.linear_mhvae` (SPEC 4.4).
Write ``m = sqrt(beta1) sigma1`` and ``e = sqrt(beta2) eta_dec``. For a mode i
whose z1 direction has a z2 partner (i < min(d1, d2)), Theorem 3's three cases
reduce to two conditions:

- z1 mode i is active (lambda_i > 0) iff ``theta_i > min(m, e)``.  In case A
  (m >= e) the bound is e, so z1 is set by beta2 and eta_dec, not beta1; in
  cases B/C (m < e) it is m, and beta2, eta_dec no longer matter for z1.
- z2 mode i is active (omega_i > 0) iff ``theta_i m > e^2`` or ``m > e``: a
  fixed sigma1 larger than sqrt(beta2 / beta1) eta_dec keeps every coupled z2
  mode alive (z2 then models z1's fixed noise), whatever theta.

A z1 direction without a z2 partner (d2 <= i < d1) is a fixed-variance VAE with
prior N(0, eta_dec^2): active iff ``theta_i > m``.  A z2 direction without a z1
partner (d1 <= i < d2) is always collapsed.  theta is sorted descending and the
bounds never decrease with i, so the active modes of each level are a prefix and
"at least k active" is the condition on mode k - 1 alone.  Solving it for one
hyper-parameter at a time, the others held at the given values, gives:

- z1: ``beta2_max = theta^2 / eta_dec^2`` and ``eta_dec_max = theta / sqrt(beta2)``
  (both inf when theta > m: then no beta2 or eta_dec collapses it), and
  ``beta1_max = theta^2 / sigma1^2`` (inf when theta > e).
- z2: ``beta2_max = m max(theta, m) / eta_dec^2``, ``eta_dec_max =
  sqrt(m max(theta, m) / beta2)``, and a *smallest* beta1, ``beta1_min =
  (e^2 / max(theta, e))^2 / sigma1^2``: beta1 protects z2 and endangers z1.

Each value is the critical point: on the safe side of it (below a ``_max``,
above a ``_min``) the mode is active, on the other side it is collapsed.  The
tests check both sides against the closed form and against a direct numerical
minimisation of the expected loss (:func:`ppl_vae.theory.numeric_linear_mhvae`).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ppl_vae._validate import check_int_range, check_positive
from ppl_vae.theory.moments import as_data_matrix, vae_thetas

_DESCRIPTIONS = {
    "z1_beta2_max": "largest beta2 keeping >= n_active z1 modes active (other hyper-parameters as given)",
    "z1_eta_dec_max": "largest eta_dec keeping >= n_active z1 modes active",
    "z1_beta1_max": "largest beta1 keeping >= n_active z1 modes active",
    "z2_beta2_max": "largest beta2 keeping >= n_active z2 modes active",
    "z2_eta_dec_max": "largest eta_dec keeping >= n_active z2 modes active",
    "z2_beta1_min": "smallest beta1 keeping >= n_active z2 modes active",
}


def _z1_limits(theta: np.ndarray, coupled: np.ndarray, *, beta1, beta2, eta_dec, sigma1):
    """(beta2_max, eta_dec_max, beta1_max) per z1 mode, shape (d1,) each."""
    m, e = np.sqrt(beta1) * sigma1, np.sqrt(beta2) * eta_dec
    free_of_beta2 = theta > m  # theta above m: active whatever beta2 and eta_dec
    beta2_max = np.where(free_of_beta2, np.inf, np.where(coupled, theta**2 / eta_dec**2, 0.0))
    eta_dec_max = np.where(free_of_beta2, np.inf, np.where(coupled, theta / np.sqrt(beta2), 0.0))
    beta1_max = np.where(coupled & (theta > e), np.inf, theta**2 / sigma1**2)
    return beta2_max, eta_dec_max, beta1_max


def _z2_limits(theta: np.ndarray, coupled: np.ndarray, *, beta1, beta2, eta_dec, sigma1):
    """(beta2_max, eta_dec_max, beta1_min) per z2 mode, shape (d2,) each."""
    m, e = np.sqrt(beta1) * sigma1, np.sqrt(beta2) * eta_dec
    reach = m * np.maximum(theta, m)  # beta2 eta_dec^2 must stay below this
    beta1_min = (e**2 / np.maximum(theta, e)) ** 2 / sigma1**2
    return (np.where(coupled, reach / eta_dec**2, 0.0), np.where(coupled, np.sqrt(reach / beta2), 0.0),
            np.where(coupled, beta1_min, np.inf))


def mhvae_thresholds_from_spectrum(theta, latent_dims: tuple[int, int], *, beta1: float = 1.0, beta2: float = 1.0,
                                   eta_dec: float = 1.0, sigma1: float = 1.0) -> xr.Dataset:
    """Thresholds of :func:`mhvae_collapse_thresholds` from the spectrum alone.

    Parameters
    ----------
    theta : array_like, shape (>= max(d1, d2),)
        The data spectrum, descending (std units; zero beyond the data dimension),
        e.g. the ``theta`` variable of :func:`ppl_vae.theory.linear_mhvae`.
    latent_dims : (d1, d2)
    beta1, beta2, eta_dec, sigma1 : float > 0
        The values held fixed while one of them is varied.

    Returns
    -------
    xr.Dataset over ``n_active`` = 0..max(d1, d2); see the module docstring.  A
    level's variables are NaN for counts above its dimension; ``n_active = 0``
    needs nothing (inf for ``_max``, 0 for ``_min``).
    """
    d1 = check_int_range("latent_dims[0]", latent_dims[0], 1)
    d2 = check_int_range("latent_dims[1]", latent_dims[1], 1)
    beta1, beta2 = check_positive("beta1", beta1), check_positive("beta2", beta2)
    eta_dec, sigma1 = check_positive("eta_dec", eta_dec), check_positive("sigma1", sigma1)
    n_modes = max(d1, d2)
    spectrum = np.asarray(theta, dtype=np.float64)
    if spectrum.ndim != 1 or spectrum.size < n_modes or not np.all(np.isfinite(spectrum)) or np.any(spectrum < 0):
        raise ValueError(f"theta must be a finite non-negative vector of at least max(d1, d2) = {n_modes} values")
    spectrum = spectrum[:n_modes]
    hyper = dict(beta1=beta1, beta2=beta2, eta_dec=eta_dec, sigma1=sigma1)
    mode = np.arange(n_modes)
    z1 = _z1_limits(spectrum[:d1], mode[:d1] < d2, **hyper)
    z2 = _z2_limits(spectrum[:d2], mode[:d2] < d1, **hyper)

    def by_count(values: np.ndarray, none_needed: float) -> np.ndarray:
        column = np.full(n_modes + 1, np.nan)
        column[0] = none_needed
        column[1: values.size + 1] = values
        return column

    names = ("z1_beta2_max", "z1_eta_dec_max", "z1_beta1_max", "z2_beta2_max", "z2_eta_dec_max", "z2_beta1_min")
    columns = [by_count(v, np.inf) for v in z1] + [by_count(v, np.inf) for v in z2[:2]] + [by_count(z2[2], 0.0)]
    return xr.Dataset(
        {name: ("n_active", column, {"description": _DESCRIPTIONS[name]}) for name, column in zip(names, columns)}
        | {"theta": ("n_active", np.concatenate([[np.nan], spectrum]),
                     {"description": "theta of the n_active-th mode", "units": "std of x"})},
        coords={"n_active": ("n_active", np.arange(n_modes + 1), {"description": "number of active modes"})},
        attrs={"model": "linear_mhvae", "z2_variance": "learnable", **hyper, "latent_dim_z1": d1,
               "latent_dim_z2": d2},
    )


def mhvae_collapse_thresholds(x, latent_dims: tuple[int, int], *, beta1: float = 1.0, beta2: float = 1.0,
                              eta_dec: float = 1.0, sigma1: float = 1.0) -> xr.Dataset:
    """Critical beta2, eta_dec and beta1 for keeping k modes of z1 and of z2 active (Theorem 3).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d)
    latent_dims : (d1, d2), 1 <= d1 <= d, d2 >= 1
    beta1, beta2, eta_dec, sigma1 : float > 0
        Sigma1 = sigma1^2 I fixed, Sigma2 learnable.  The thresholds do not depend on eta_enc.

    Returns
    -------
    xr.Dataset over ``n_active`` (see :func:`mhvae_thresholds_from_spectrum`).
    """
    x = as_data_matrix("x", x)
    if isinstance(latent_dims, (str, bytes)) or not hasattr(latent_dims, "__len__") or len(latent_dims) != 2:
        raise ValueError(f"latent_dims must be a pair (d1, d2) of positive integers, got {latent_dims!r}")
    d1 = check_int_range("latent_dims[0]", latent_dims[0], 1, x.shape[1])
    d2 = check_int_range("latent_dims[1]", latent_dims[1], 1)
    theta = np.zeros(max(d1, d2))
    spectrum = vae_thetas(x)[: theta.size]
    theta[: spectrum.size] = spectrum
    table = mhvae_thresholds_from_spectrum(theta, (d1, d2), beta1=beta1, beta2=beta2, eta_dec=eta_dec, sigma1=sigma1)
    table.attrs["n_samples"] = x.shape[0]
    return table
