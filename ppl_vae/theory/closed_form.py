"""Closed-form global optima of the linear VAE, CVAE and MHVAE losses (SPEC section 4).

Every function takes data, computes the relevant spectrum ``theta``
(:mod:`ppl_vae.theory.moments`) and returns an :class:`xarray.Dataset` over the
dimension ``mode`` (mode 0 = largest ``theta``) with the optimal singular
values, encoder standard deviations and boolean collapse flags.  The
hyper-parameters, the model name and the data dimensions are stored in
``attrs``, together with integer counts such as ``n_collapsed``.

Notation (SPEC): ``beta`` weights the KL term, ``eta_enc`` is the prior std,
``eta_dec`` the decoder noise std, ``c = eta_dec / eta_enc``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ppl_vae._validate import check_int_range, check_positive, check_positive_seq
from ppl_vae.theory.moments import as_data_matrix, as_paired_data, cvae_thetas, vae_thetas

_MODE_ATTRS = {"description": "latent mode, 0 = largest theta"}


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with 0 where the denominator is 0 (a zero-variance direction)."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _dataset(variables: dict[str, tuple[np.ndarray, dict]], attrs: dict) -> xr.Dataset:
    """Assemble a Dataset over ``mode`` from ``{name: (values, variable_attrs)}``."""
    n_modes = len(next(iter(variables.values()))[0])
    data_vars = {name: ("mode", values, var_attrs) for name, (values, var_attrs) in variables.items()}
    coords = {"mode": ("mode", np.arange(n_modes), _MODE_ATTRS)}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _theta_attrs(units: str) -> dict:
    return {"description": "data spectrum of the mode (see docs/science.md)", "units": units}


def linear_vae(x, latent_dim: int, beta: float = 1.0, eta_enc: float = 1.0, eta_dec: float = 1.0,
               encoder_std: float | Sequence[float] | None = None) -> xr.Dataset:
    """Global optimum of the linear VAE (SPEC 4.1 learnable Sigma, 4.2 fixed Sigma).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d)
    latent_dim : int, 1 <= latent_dim <= d
    beta, eta_enc, eta_dec : float > 0
        KL weight, prior std, decoder noise std.
    encoder_std : None, float or sequence of latent_dim floats > 0
        None: the encoder variance Sigma is learnable (SPEC 4.1).  Otherwise
        Sigma = diag(s^2) is fixed; the stds are sorted ascending and paired
        with theta descending (SPEC 4.2), and that order is what the
        ``encoder_std`` variable reports.

    Returns
    -------
    xr.Dataset over ``mode`` (latent_dim) with

    - ``theta``: sqrt of the i-th eigenvalue of E[x x^T] (data units).
    - ``decoder_sv``: singular values omega_i of the decoder U.
    - ``encoder_sv``: singular values lambda_i of W P diag(phi)^(1/2).
    - ``encoder_std``: optimal (learnable) or given (fixed) encoder std.
    - ``collapsed``: learnable Sigma: theta_i < sqrt(beta) eta_dec, and then
      q(z_i|x) equals the prior exactly.  Fixed Sigma: the encoder MEAN has
      collapsed (theta_i < sqrt(beta) c s_i, partial collapse).
    - ``complete_collapse``: q(z_i|x) equals the prior exactly.  Fixed Sigma:
      only when the mean collapsed and s_i == eta_enc.

    ``attrs`` carry ``n_collapsed`` and ``n_complete_collapse``.
    """
    x = as_data_matrix("x", x)
    latent_dim = check_int_range("latent_dim", latent_dim, 1, x.shape[1])
    beta = check_positive("beta", beta)
    eta_enc = check_positive("eta_enc", eta_enc)
    eta_dec = check_positive("eta_dec", eta_dec)
    theta = vae_thetas(x)[:latent_dim]

    if encoder_std is None:
        threshold = np.sqrt(beta) * eta_dec
        gap = np.maximum(0.0, theta**2 - beta * eta_dec**2)
        decoder_sv = np.sqrt(gap) / eta_enc
        encoder_sv = eta_enc * _safe_divide(np.sqrt(gap), theta)
        collapsed = theta < threshold
        std = np.where(collapsed, eta_enc, np.sqrt(beta) * eta_enc * eta_dec * _safe_divide(np.ones_like(theta), theta))
        complete = collapsed.copy()
        variance = "learnable"
    else:
        std = np.sort(check_positive_seq("encoder_std", encoder_std))
        if std.size == 1:
            std = np.full(latent_dim, std[0])
        elif std.size != latent_dim:
            raise ValueError(f"encoder_std must be a number or a sequence of latent_dim={latent_dim} numbers, "
                             f"got {std.size} values")
        scaled_c = np.sqrt(beta) * eta_dec / eta_enc  # sqrt(beta) c
        gap = theta - scaled_c * std
        decoder_sv = np.sqrt(np.maximum(0.0, scaled_c * gap / std))
        encoder_sv = np.sqrt(np.maximum(0.0, std * gap / scaled_c))
        collapsed = gap < 0
        complete = collapsed & np.isclose(std, eta_enc, rtol=1e-12, atol=0.0)
        variance = "fixed"

    attrs = {
        "model": "linear_vae", "encoder_variance": variance, "beta": beta, "eta_enc": eta_enc, "eta_dec": eta_dec,
        "latent_dim": latent_dim, "n_samples": x.shape[0], "data_dim": x.shape[1],
        "n_collapsed": int(collapsed.sum()), "n_complete_collapse": int(complete.sum()),
        "collapsed_meaning": ("q equals the prior" if variance == "learnable"
                              else "encoder mean is zero (partial collapse); see complete_collapse"),
    }
    return _dataset({
        "theta": (theta, _theta_attrs("std of x")),
        "decoder_sv": (decoder_sv, {"description": "singular values of the decoder U"}),
        "encoder_sv": (encoder_sv, {"description": "singular values of W P diag(phi)^(1/2)"}),
        "encoder_std": (std, {"description": f"encoder std ({variance})", "units": "latent units"}),
        "collapsed": (collapsed, {"description": "mode collapsed: " + attrs["collapsed_meaning"]}),
        "complete_collapse": (complete, {"description": "q(z_i|x) equals the prior exactly"}),
    }, attrs)


def linear_cvae(x, y, latent_dim: int, beta: float = 1.0, eta_enc: float = 1.0,
                eta_dec: float = 1.0) -> xr.Dataset:
    """Global optimum of the linear CVAE with learnable encoder variance (SPEC 4.3, Theorem 2).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d_x)   (condition)
    y : array_like or torch.Tensor, shape (n, d_y)   (output)
    latent_dim : int, 1 <= latent_dim <= d_y
    beta, eta_enc, eta_dec : float > 0

    Returns
    -------
    xr.Dataset over ``mode`` (latent_dim) with

    - ``theta``: i-th eigenvalue of E = E[yy^T] - E[yx^T] E[xx^T]^+ E[xy^T] (a variance).
    - ``decoder_sv``: singular values of U1, sqrt(max(0, theta_i - beta eta_dec^2)) / eta_enc.
    - ``encoder_sv``: singular values of W2 E^(1/2) (the encoder acts on the residual
      r = y - B x, so this is the linear VAE's encoder_sv on r).
    - ``encoder_std``: sqrt(beta) eta_enc eta_dec / sqrt(theta_i) if theta_i >= beta eta_dec^2,
      else eta_enc.  (The threshold is theta_i >= beta eta_dec^2, not the authors'
      sqrt(beta) eta_dec: theta is a variance.)
    - ``collapsed``: theta_i < beta eta_dec^2; q(z_i|x, y) then equals the prior.
    """
    x, y = as_paired_data(x, y)
    latent_dim = check_int_range("latent_dim", latent_dim, 1, y.shape[1])
    beta = check_positive("beta", beta)
    eta_enc = check_positive("eta_enc", eta_enc)
    eta_dec = check_positive("eta_dec", eta_dec)
    theta = cvae_thetas(x, y)[:latent_dim]

    gap = np.maximum(0.0, theta - beta * eta_dec**2)
    collapsed = theta < beta * eta_dec**2
    inverse_sqrt_theta = _safe_divide(np.ones_like(theta), np.sqrt(theta))
    std = np.where(collapsed, eta_enc, np.sqrt(beta) * eta_enc * eta_dec * inverse_sqrt_theta)
    attrs = {
        "model": "linear_cvae", "encoder_variance": "learnable", "beta": beta, "eta_enc": eta_enc,
        "eta_dec": eta_dec, "latent_dim": latent_dim, "n_samples": x.shape[0], "x_dim": x.shape[1],
        "y_dim": y.shape[1], "n_collapsed": int(collapsed.sum()),
    }
    return _dataset({
        "theta": (theta, _theta_attrs("variance of the residual y - Bx")),
        "decoder_sv": (np.sqrt(gap) / eta_enc, {"description": "singular values of the decoder's z-branch U1"}),
        "encoder_sv": (eta_enc * np.sqrt(gap) * inverse_sqrt_theta,
                       {"description": "singular values of W2 E^(1/2)"}),
        "encoder_std": (std, {"description": "learnable encoder std", "units": "latent units"}),
        "collapsed": (collapsed, {"description": "q(z_i|x,y) equals the prior"}),
    }, attrs)


def _mhvae_learnable_coupled(theta, beta1, beta2, eta_enc, eta_dec, sigma1):
    """Theorem 3 (SPEC 4.4) for modes whose z1 direction has a z2 partner: (lambda, omega)."""
    ratio = beta2 / beta1 * eta_dec**2
    lifted = sigma1**2 * theta**2 / (beta2 * eta_dec**2)
    encoder_sv = sigma1 / (np.sqrt(beta2) * eta_dec) * np.sqrt(np.maximum(0.0, theta**2 - beta2 * eta_dec**2))
    if sigma1**2 >= ratio:  # case A
        decoder_sv = np.sqrt(np.maximum(sigma1**2, lifted) - ratio) / eta_enc
        return encoder_sv, decoder_sv
    case_b = lifted < ratio
    encoder_sv = np.where(case_b, _mhvae_uncoupled_z1(theta, beta1, sigma1), encoder_sv)
    decoder_sv = np.where(case_b, 0.0, np.sqrt(np.maximum(0.0, lifted - ratio)) / eta_enc)
    return encoder_sv, decoder_sv


def _mhvae_fixed_coupled(theta, beta1, beta2, eta_enc, eta_dec, sigma1, sigma2):
    """Theorem 5 (SPEC 4.5) for modes whose z1 direction has a z2 partner: (lambda, omega)."""
    c = eta_dec / eta_enc
    k = np.sqrt(beta1 * beta2) * c * sigma1 * sigma2
    second_threshold = beta2 * c**2 * sigma2**2 / (np.sqrt(beta1) * sigma1)
    both_alive = (theta >= np.sqrt(k)) & (theta >= second_threshold)
    encoder_alive = (sigma1**2 / (np.sqrt(beta1 * beta2) * c * sigma2)) ** (1 / 3) * np.sqrt(
        np.maximum(0.0, theta ** (4 / 3) - k ** (2 / 3)))
    decoder_alive = (np.sqrt(beta2) * c * sigma1 / (beta1 * sigma2**2)) ** (1 / 3) * np.sqrt(
        np.maximum(0.0, theta ** (2 / 3) - (beta2**2 * c**4 * sigma2**4 / (beta1 * sigma1**2)) ** (1 / 3)))
    if np.sqrt(beta1) * sigma1 >= np.sqrt(beta2) * c * sigma2:
        # z1's mean collapses but z2 still models z1's fixed noise.
        encoder_other = np.zeros_like(theta)
        decoder_other = np.full_like(theta, np.sqrt(max(0.0, np.sqrt(beta2) * c * sigma1 / (np.sqrt(beta1) * sigma2)
                                                          - beta2 / beta1 * c**2)))
    else:
        encoder_other = _mhvae_uncoupled_z1(theta, beta1, sigma1)
        decoder_other = np.zeros_like(theta)
    return (np.where(both_alive, encoder_alive, encoder_other), np.where(both_alive, decoder_alive, decoder_other))


def _mhvae_uncoupled_z1(theta, beta1, sigma1):
    """z1 mode with no z2 partner (omega = 0): a fixed-variance VAE with prior N(0, eta_dec^2)."""
    return np.sqrt(np.maximum(0.0, sigma1 / np.sqrt(beta1) * (theta - np.sqrt(beta1) * sigma1)))


def linear_mhvae(x, latent_dims: tuple[int, int], beta1: float = 1.0, beta2: float = 1.0, eta_enc: float = 1.0,
                 eta_dec: float = 1.0, sigma1: float = 1.0, sigma2: float | None = None) -> xr.Dataset:
    """Global optimum of the linear two-level MHVAE (SPEC 4.4 Theorem 3, 4.5 Theorem 5).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d)
    latent_dims : (d1, d2), 1 <= d1 <= d, d2 >= 1
    beta1, beta2 : float > 0
        Weights of the z1 term and of the z2 KL.
    eta_enc, eta_dec : float > 0
        Std of p(z2); noise std of p(z1|z2) and p(x|z1).
    sigma1 : float > 0
        Fixed isotropic std of q(z1|x).
    sigma2 : None or float > 0
        None: Sigma2 learnable (Theorem 3).  A number: Sigma2 = sigma2^2 I fixed (Theorem 5).

    Returns
    -------
    xr.Dataset over ``mode`` of length max(d1, d2).

    Mode convention.  Mode i is the i-th data direction (``theta_i``
    descending; ``theta_i = 0`` beyond the data dimension d).  At the optimum
    W1 maps data direction i to z1 direction i, and U2 maps z2 direction i to
    z1 direction i, so the first min(d1, d2) modes are *coupled* (z1 and z2
    both present, given by the theorems).  If d1 > d2, modes i >= d2 are z1
    directions without a z2 partner: they behave like a fixed-variance VAE
    with prior N(0, eta_dec^2), lambda_i = sqrt(max(0, sigma1/sqrt(beta1) (theta_i -
    sqrt(beta1) sigma1))).  If d2 > d1, modes i >= d1 are z2 directions with
    nothing to model: omega_i = 0, collapsed (learnable: std eta_enc).  The
    boolean coordinates ``in_z1`` / ``in_z2`` say which modes exist in each
    latent; z1 variables are NaN (float) or False (bool) outside z1, and likewise
    for z2.  Coupling the largest-theta z1 modes to z2 was checked against a
    direct minimisation (tests/theory).

    Variables: ``theta``; ``z1_encoder_sv`` (singular values of W1 P diag(phi)^(1/2));
    ``z2_decoder_sv`` (singular values of U2, zero-padded to d2); ``z2_encoder_std``
    (learnable Sigma2 only, sqrt(beta2 eta_dec^2 / (beta1 omega_i^2 + beta2 c^2))); ``z1_collapsed``
    (z1's encoder mean is zero, lambda_i = 0: sigma1 is fixed so this is partial collapse);
    ``z2_collapsed`` (omega_i = 0; with learnable Sigma2 q(z2|z1) then equals p(z2)
    exactly, with fixed Sigma2 it is partial).  ``attrs`` hold ``n_z1_collapsed``,
    ``n_z2_collapsed`` and ``n_collapsed`` (their sum).
    """
    x = as_data_matrix("x", x)
    if isinstance(latent_dims, (str, bytes)) or not hasattr(latent_dims, "__len__") or len(latent_dims) != 2:
        raise ValueError(f"latent_dims must be a pair (d1, d2) of positive integers, got {latent_dims!r}")
    d1 = check_int_range("latent_dims[0]", latent_dims[0], 1, x.shape[1])
    d2 = check_int_range("latent_dims[1]", latent_dims[1], 1)
    beta1, beta2 = check_positive("beta1", beta1), check_positive("beta2", beta2)
    eta_enc, eta_dec = check_positive("eta_enc", eta_enc), check_positive("eta_dec", eta_dec)
    sigma1 = check_positive("sigma1", sigma1)
    learnable = sigma2 is None
    if not learnable:
        sigma2 = check_positive("sigma2", sigma2)

    n_modes = max(d1, d2)
    theta = np.zeros(n_modes)
    spectrum = vae_thetas(x)[:n_modes]
    theta[: len(spectrum)] = spectrum
    mode = np.arange(n_modes)
    in_z1, in_z2 = mode < d1, mode < d2
    coupled = in_z1 & in_z2

    if learnable:
        encoder_sv, decoder_sv = _mhvae_learnable_coupled(theta, beta1, beta2, eta_enc, eta_dec, sigma1)
    else:
        encoder_sv, decoder_sv = _mhvae_fixed_coupled(theta, beta1, beta2, eta_enc, eta_dec, sigma1, sigma2)
    encoder_sv = np.where(coupled, encoder_sv, np.where(in_z1, _mhvae_uncoupled_z1(theta, beta1, sigma1), np.nan))
    decoder_sv = np.where(coupled, decoder_sv, np.where(in_z2, 0.0, np.nan))
    z1_collapsed = in_z1 & (encoder_sv == 0)
    z2_collapsed = in_z2 & (decoder_sv == 0)

    variables = {
        "theta": (theta, _theta_attrs("std of x")),
        "z1_encoder_sv": (encoder_sv, {"description": "singular values of W1 P diag(phi)^(1/2) (NaN outside z1)"}),
        "z2_decoder_sv": (decoder_sv, {"description": "singular values of U2 (NaN outside z2)"}),
    }
    if learnable:
        c = eta_dec / eta_enc
        std = np.sqrt(beta2 * eta_dec**2 / (beta1 * decoder_sv**2 + beta2 * c**2))
        variables["z2_encoder_std"] = (std, {"description": "learnable std of q(z2|z1) (NaN outside z2)",
                                             "units": "z2 units"})
    variables["z1_collapsed"] = (z1_collapsed, {"description": "z1 encoder mean is zero (lambda_i = 0)"})
    variables["z2_collapsed"] = (z2_collapsed, {"description": "U2 ignores z2 mode (omega_i = 0)"
                                                + ("; q(z2|z1) equals p(z2)" if learnable else "; partial")})
    attrs = {
        "model": "linear_mhvae", "z2_variance": "learnable" if learnable else "fixed",
        "beta1": beta1, "beta2": beta2, "eta_enc": eta_enc, "eta_dec": eta_dec, "sigma1": sigma1,
        "sigma2": "learnable" if learnable else sigma2, "latent_dim_z1": d1, "latent_dim_z2": d2,
        "n_samples": x.shape[0], "data_dim": x.shape[1],
        "case": _theorem3_case(beta1, beta2, eta_dec, sigma1) if learnable else "theorem 5",
        "n_z1_collapsed": int(z1_collapsed.sum()), "n_z2_collapsed": int(z2_collapsed.sum()),
        "n_collapsed": int(z1_collapsed.sum() + z2_collapsed.sum()),
    }
    dataset = _dataset(variables, attrs)
    return dataset.assign_coords(
        in_z1=("mode", in_z1, {"description": "mode exists in z1"}),
        in_z2=("mode", in_z2, {"description": "mode exists in z2"}),
    )


def _theorem3_case(beta1: float, beta2: float, eta_dec: float, sigma1: float) -> str:
    """'A' if sigma1^2 >= (beta2/beta1) eta_dec^2 (all modes), else 'B/C' (decided per mode)."""
    return "A" if sigma1**2 >= beta2 / beta1 * eta_dec**2 else "B/C"
