"""Hyper-parameter thresholds at which linear-model modes collapse (learnable encoder variance).

Mode i of the linear VAE is active iff theta_i >= sqrt(beta) eta_dec (docs/science.md);
of the CVAE iff theta_i >= beta eta_dec^2.  Since theta is sorted
descending, "at least k modes active" is the condition on theta_(k-1) alone,
which inverts to a largest beta (at fixed eta_dec) and a largest eta_dec (at
fixed beta).  Neither threshold depends on eta_enc for learnable variance.
The MHVAE's counterparts are in :mod:`ppl_vae.theory.mhvae_thresholds`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ppl_vae._validate import check_choice, check_int_range, check_positive
from ppl_vae.theory.moments import as_data_matrix, as_paired_data, cvae_thetas, vae_thetas


def collapse_thresholds(x, y=None, *, model: str = "cvae", latent_dim: int, beta: float = 1.0,
                        eta_dec: float = 1.0, eta_enc: float = 1.0) -> xr.Dataset:
    """Largest beta and largest eta_dec that keep at least ``n_active`` modes active.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d)   (VAE data, or the CVAE condition)
    y : array_like or torch.Tensor, shape (n, d_y), required for ``model="cvae"``
    model : "vae" or "cvae" (learnable encoder variance)
    latent_dim : int, 1 <= latent_dim <= d (vae) or d_y (cvae)
    beta, eta_dec : float > 0
        The value held fixed while the other is maximised.
    eta_enc : float > 0
        Recorded only: the thresholds do not depend on it.

    Returns
    -------
    xr.Dataset over ``n_active`` = 0..latent_dim with

    - ``beta_max``: largest beta (at the given eta_dec) with >= n_active active
      modes; vae theta_(k-1)^2 / eta_dec^2, cvae theta_(k-1) / eta_dec^2; inf for
      n_active = 0 and 0 when theta_(k-1) = 0 (no beta > 0 keeps that mode).
    - ``eta_dec_max``: largest eta_dec (at the given beta), likewise.
    - ``theta``: theta_(k-1), the spectrum value that sets the threshold (NaN for 0).

    At exactly the threshold the mode counts as active (collapse is the strict
    inequality); any larger value collapses it.
    """
    model = check_choice("model", model, ("vae", "cvae"))
    beta = check_positive("beta", beta)
    eta_dec = check_positive("eta_dec", eta_dec)
    eta_enc = check_positive("eta_enc", eta_enc)
    if model == "vae":
        if y is not None:
            raise ValueError("y must be None for model='vae'")
        x = as_data_matrix("x", x)
        latent_dim = check_int_range("latent_dim", latent_dim, 1, x.shape[1])
        theta = vae_thetas(x)[:latent_dim]
    else:
        if y is None:
            raise ValueError("y is required for model='cvae'")
        x, y = as_paired_data(x, y)
        latent_dim = check_int_range("latent_dim", latent_dim, 1, y.shape[1])
        theta = cvae_thetas(x, y)[:latent_dim]
    table = thresholds_from_spectrum(theta, model=model, beta=beta, eta_dec=eta_dec)
    table.attrs.update(eta_enc=eta_enc, n_samples=x.shape[0])
    return table


def thresholds_from_spectrum(theta, *, model: str, beta: float = 1.0, eta_dec: float = 1.0) -> xr.Dataset:
    """:func:`collapse_thresholds` from the spectrum ``theta`` alone (e.g. a diagnosed run's ``theory.theta``).

    Parameters
    ----------
    theta : array_like, shape (latent_dim,), descending, >= 0
        std units for ``model="vae"``, variance units for ``model="cvae"``.
    model, beta, eta_dec
        As :func:`collapse_thresholds`.
    """
    model = check_choice("model", model, ("vae", "cvae"))
    beta = check_positive("beta", beta)
    eta_dec = check_positive("eta_dec", eta_dec)
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 1 or theta.size < 1 or not np.all(np.isfinite(theta)) or np.any(theta < 0):
        raise ValueError("theta must be a non-empty finite non-negative vector")
    latent_dim = theta.size
    if model == "vae":
        beta_max, eta_dec_max = theta**2 / eta_dec**2, theta / np.sqrt(beta)
        theta_units = "std of x"
    else:
        beta_max, eta_dec_max = theta / eta_dec**2, np.sqrt(theta / beta)
        theta_units = "variance of the residual y - Bx"

    def with_zero_row(values: np.ndarray, first: float) -> np.ndarray:
        return np.concatenate([[first], values])

    return xr.Dataset(
        {
            "beta_max": ("n_active", with_zero_row(beta_max, np.inf),
                         {"description": f"largest beta keeping >= n_active modes active at eta_dec={eta_dec}"}),
            "eta_dec_max": ("n_active", with_zero_row(eta_dec_max, np.inf),
                            {"description": f"largest eta_dec keeping >= n_active modes active at beta={beta}"}),
            "theta": ("n_active", with_zero_row(theta, np.nan),
                      {"description": "theta of the n_active-th mode", "units": theta_units}),
        },
        coords={"n_active": ("n_active", np.arange(latent_dim + 1), {"description": "number of active modes"})},
        attrs={"model": f"linear_{model}", "encoder_variance": "learnable", "beta": beta, "eta_dec": eta_dec,
               "latent_dim": latent_dim},
    )


def data_scale_eta_dec(spectrum, latent_dim: int, *, model: str) -> float:
    """A decoder noise std that fits the data's scale: probabilistic PCA's noise estimate.

    With ``latent_dim`` latent dimensions, the maximum-likelihood noise variance of
    probabilistic PCA (Tipping and Bishop, 1999) is the mean variance along the
    directions the latents leave out.  Here the spectrum is uncentred, as in the
    theory, so this is the noise level at which the modes that stand out above the
    discarded ones stay active (at beta = 1), a sensible first answer where eta_dec = 1
    on pixels in [0, 1] collapses everything.

    Parameters
    ----------
    spectrum : array_like, shape (d,), descending, >= 0
        The whole spectrum: ``vae_thetas(x)`` (std units) for ``model`` "vae" / "mhvae",
        ``cvae_thetas(x, y)`` (variance units) for "cvae".
    latent_dim : int, 1 <= latent_dim
    model : "vae", "cvae" or "mhvae"

    Returns
    -------
    float > 0.  When the latents leave no direction out (or only blank ones), a tenth
    of the root-mean-square spectrum, so that the value is still on the data's scale.
    """
    model = check_choice("model", model, ("vae", "cvae", "mhvae"))
    latent_dim = check_int_range("latent_dim", latent_dim, 1)
    spectrum = np.asarray(spectrum, dtype=np.float64)
    variances = spectrum if model == "cvae" else spectrum**2
    if variances.size == 0 or not np.all(np.isfinite(variances)) or not np.any(variances > 0):
        raise ValueError("spectrum must be finite with at least one positive value (the data are all zero)")
    left_out = variances[latent_dim:]
    if left_out.size and float(left_out.mean()) > 0:
        return float(np.sqrt(left_out.mean()))
    return float(0.1 * np.sqrt(variances.mean()))
