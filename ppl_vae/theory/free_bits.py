"""Linear VAE / CVAE optima under free bits (population version), mode by mode.

Objective.  Free bits with floor ``tau`` (nats, ``free_bits``) replace each
latent dimension's KL by ``max(tau, KL_j)``, where ``KL_j`` is dimension j's
KL averaged over the data distribution:

    L = E[-log p(x|z)] + beta * sum_j max(tau, KL_j).

Per-mode loss.  Align latent dimension i with data mode i, as in the SPEC 4
derivation (v_i = theta_i^2 for the VAE, whose theta is a std; v_i = theta_i
for the CVAE, whose theta is already a variance, and whose encoder then acts on
the residual y - Bx only).  With encoder gain lambda (singular value of
``W P diag(phi)^(1/2)``), encoder std sigma and decoder gain omega, mode i costs

    (v - 2 omega lambda sqrt(v) + omega^2 (lambda^2 + sigma^2)) / (2 eta_dec^2)
      + beta max(tau, KL),   KL = ((lambda^2 + sigma^2)/eta_enc^2 - log(sigma^2/eta_enc^2) - 1) / 2.

Derivation.  The best omega = sqrt(v) lambda / (lambda^2 + sigma^2) leaves the
squared error v r with r = sigma^2 / (lambda^2 + sigma^2) in (0, 1].  Writing
s = (lambda^2 + sigma^2) / eta_enc^2, KL = (s - log(r s) - 1) / 2 >= -log(r) / 2
with equality only at s = 1.  So with K = -log(r)/2 the per-mode problem is

    min_{K >= 0}  v e^{-2K} / (2 eta_dec^2) + beta max(tau, K),

convex in K.  Without the floor its minimiser is K* = log(v / b) / 2 if v >= b
(b = beta eta_dec^2), else 0 (collapse), giving SPEC 4.1 / 4.3.  With the floor
the objective strictly decreases on [0, tau] (the KL is free there, the error
is not), so K_i = max(tau, K*_i):

- K*_i >= tau: nothing changes; the SPEC 4 closed form holds (``at_floor`` False);
- K*_i < tau (``at_floor``): the mode sits exactly at the floor, KL_i = tau, with
  sigma_i = eta_enc e^{-tau}, lambda_i = eta_enc sqrt(1 - e^{-2 tau}),
  omega_i = sqrt(v_i) sqrt(1 - e^{-2 tau}) / eta_enc  (s = 1 is forced, so unique).
  A mode that the plain objective collapses is kept open at exactly tau nats;
  none collapses for tau > 0 (a zero-variance direction, v_i = 0, stays at the prior).

Global optimality (read before comparing with trained full-matrix models).
The per-mode problems decouple only inside the mode-aligned family.  Over full
matrices the loss depends on the encoder through the SNR matrix M = G^T G
(G's rows g_j = encoder rows / sigma_j, whitened) and per-dimension SNRs
n_j = |g_j|^2: error tr(V (I + M)^{-1}), KL_j >= log(1 + n_j) / 2.  Without the
floor Hadamard's inequality makes aligned (orthogonal) rows optimal.  With it:

- if no mode is at the floor, the mode-aligned point is the GLOBAL optimum:
  L_fb >= L_plain >= min L_plain, and the plain optimum has every KL_j >= tau
  (``attrs["certified_global"]``);
- if some are, a dimension at the floor can share its free SNR with another
  mode without changing any n_j (Schur-Horn: eigenvalues mu of M majorising n
  are reachable with n fixed), moving SNR from a mode with smaller mu to one with
  larger or equal mu.  That strictly lowers the loss when two floor modes have
  different v, or a floor mode j and an active mode i have b^2 / v_i > v_j e^{-4 tau}
  (marginal gains v / (1 + mu)^2).  Then the mode-aligned point is NOT the
  minimum (``attrs["mode_sharing_descends"]``) and the true optimum spreads floor
  dimensions over several modes (checked numerically in tests/theory).

Mode sharing (issue 22).  A direct minimisation over full encoders confirms
it: whenever ``mode_sharing_descends`` holds, the loss goes below the
mode-aligned one (by 8e-4 to 0.11 nats on the digits quadrants) and an active
mode can be pushed down to the floor, so "K*_i >= tau: nothing changes" holds
only inside the mode-aligned family, not globally.  The functions therefore
return the GLOBAL minimiser as well: :func:`global_free_bits_optimum`
minimises the full-matrix loss over the SNR factor G (latent_dim x modes) by
L-BFGS (the floor's max smoothed and sharpened in steps) from the closed form
and from seeded random starts near it (a local search: "global" means the
lowest point found, never above the closed form; the tests hold it to an
independent full-parameter SLSQP minimiser, ``ppl_vae.theory.numeric``), and the Dataset
gains ``global_kl`` (per latent dimension, nats) and the attrs
``global_loss``, ``global_n_at_floor`` and ``case``:

- ``"certified"``: no mode at the floor, the closed form is the global optimum
  (``certified_global``); ``global_n_at_floor == n_at_floor == 0``;
- ``"mode-aligned optimal"``: modes at the floor but no sharing descends; the
  closed form is kept (and the numerical search finds nothing lower);
- ``"mode sharing descends"``: the global optimum is the numerical one; its
  ``global_n_at_floor`` (latent dimensions whose KL is within
  :data:`FLOOR_ATOL` of tau) is the count a trained full-matrix model is
  held to, and the mode-aligned ``n_at_floor`` is only a lower reading.

So use ``at_floor`` / ``kl`` as the per-mode reading, ``global_n_at_floor``
as the number of dimensions free bits hold at tau, and the singular values as
a prediction only where ``certified_global`` holds.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ppl_vae.theory.closed_form import linear_cvae, linear_vae
from ppl_vae.theory.moments import as_data_matrix, as_paired_data, cvae_thetas, vae_thetas

_LOG_2PI = math.log(2.0 * math.pi)


def check_free_bits(free_bits: float) -> float:
    """Return ``free_bits`` as a float if finite and >= 0 (nats per latent dimension)."""
    try:
        value = float(free_bits)
    except (TypeError, ValueError):
        raise ValueError(f"free_bits must be a number >= 0 (nats per latent dimension), got {free_bits!r}") from None
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"free_bits must be finite and >= 0 (nats per latent dimension), got {free_bits!r}")
    return value


def unconstrained_kl(variance: np.ndarray, beta: float, eta_dec: float) -> np.ndarray:
    """Per-mode KL (nats) of the plain optimum: log(v / b) / 2 if v >= b = beta eta_dec^2, else 0."""
    b = beta * eta_dec**2
    ratio = np.divide(variance, b)
    return np.where(ratio > 1.0, 0.5 * np.log(np.maximum(ratio, 1.0)), 0.0)


def mode_sharing_descends(variance: np.ndarray, kl: np.ndarray, at_floor: np.ndarray) -> bool:
    """True if moving free SNR between modes strictly lowers the full-matrix loss (see module docstring).

    ``variance``, ``kl``, ``at_floor``: shape (latent_dim,), the mode-aligned optimum.
    Marginal gain of SNR on mode i: v_i e^{-4 K_i}.  SNR may move from a floor
    mode to any other floor mode, or to an active mode (whose SNR is larger).
    """
    if not np.any(at_floor):
        return False
    gain = variance * np.exp(-4.0 * kl)
    floor_gain = gain[at_floor]
    # Two floor modes of different variance: move SNR from the weaker to the stronger.
    if np.ptp(variance[at_floor]) > 1e-12 * np.max(variance[at_floor]):
        return True
    active = (~at_floor) & (kl > 0)
    return bool(np.any(active) and np.max(gain[active]) > np.min(floor_gain) * (1.0 + 1e-12))


#: A latent dimension of the numerical optimum sits at the floor when its KL is within this of tau (nats).
FLOOR_ATOL = 5e-3
#: Seeded random starts of the numerical search beside the closed form (which is a stationary point).
N_STARTS = 1
#: L-BFGS iterations per start.
MAX_ITER = 500


def _full_matrix_loss(flat: np.ndarray, variance: np.ndarray, latent_dim: int, beta: float, eta_dec: float,
                      free_bits: float, temperature: float = 0.0) -> tuple[float, np.ndarray]:
    """Free-bits loss (without constants) over the SNR factor G (latent_dim x modes) and its gradient.

    error = tr(V (I + G^T G)^{-1}) / (2 eta_dec^2), KL_j = log(1 + |g_j|^2) / 2 (the smallest KL a
    dimension with SNR |g_j|^2 can have), loss = error + beta sum_j max(tau, KL_j).  With
    ``temperature`` T > 0 the max is smoothed to tau + T softplus((KL_j - tau) / T) (for the search).
    """
    g = flat.reshape(latent_dim, variance.size)
    inverse = np.linalg.inv(np.eye(variance.size) + g.T @ g)
    error = float(np.sum(variance * np.diag(inverse))) / (2.0 * eta_dec**2)
    snr = np.sum(g * g, axis=1)
    kl = 0.5 * np.log1p(snr)
    if temperature > 0:
        z = (kl - free_bits) / temperature
        floor_term = free_bits + temperature * np.logaddexp(0.0, z)
        slope = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, overflow-free
    else:
        floor_term, slope = np.maximum(free_bits, kl), (kl > free_bits).astype(float)
    loss = error + beta * float(np.sum(floor_term))
    # d tr(V (I + M)^-1) / dG = -2 G (I + M)^-1 V (I + M)^-1
    grad = -2.0 * g @ (inverse * variance) @ inverse / (2.0 * eta_dec**2)
    grad += beta * (slope / (1.0 + snr))[:, None] * g
    return loss, grad.ravel()


#: Smoothing temperatures (nats) of the continuation: each search is warm-started from the previous one.
TEMPERATURES = (0.05, 0.01, 2e-3, 4e-4, 1e-4)


def global_free_bits_optimum(variance: np.ndarray, latent_dim: int, kl_start: np.ndarray, beta: float,
                             eta_dec: float, free_bits: float, *, seed: int = 0,
                             n_starts: int = N_STARTS) -> tuple[float, np.ndarray]:
    """The full-matrix free-bits optimum, numerically: its loss (no constants) and per-dimension KL.

    Parameters
    ----------
    variance : shape (modes,), every data mode's variance v_i (float64).
    latent_dim : int
    kl_start : shape (latent_dim,), the mode-aligned KL (the closed form, the first start).
    beta, eta_dec, free_bits : the objective's constants (free_bits in nats).
    seed, n_starts : seeded random starts beside the closed form.

    Returns
    -------
    (float, np.ndarray of shape (latent_dim,)): the lowest loss found (never above the closed form's,
    which is a start) and the KL of each latent dimension there, sorted descending (nats).
    """
    from scipy.optimize import minimize

    # SNR only ever goes to the strongest modes: keep the top 2 * latent_dim (the rest add a constant).
    variance = np.sort(np.asarray(variance, dtype=np.float64))[::-1]
    constant = float(np.sum(variance[2 * latent_dim:])) / (2.0 * eta_dec**2)
    variance = variance[: 2 * latent_dim]
    start = np.zeros((latent_dim, variance.size))
    snr = np.expm1(2.0 * np.asarray(kl_start, dtype=np.float64))
    start[np.arange(latent_dim), np.arange(latent_dim)] = np.sqrt(snr)
    rng = np.random.default_rng(seed)
    starts = [start] + [start + rng.normal(0.0, 0.3, start.shape) for _ in range(n_starts)]
    args = (variance, latent_dim, beta, eta_dec, free_bits)
    best_loss, best = _full_matrix_loss(start.ravel(), *args)[0], start
    for first in starts:
        point = first.ravel()
        for temperature in TEMPERATURES:  # smoothed max, sharpened step by step: L-BFGS needs a smooth loss
            point = minimize(_full_matrix_loss, point, args=(*args, temperature), jac=True, method="L-BFGS-B",
                             options={"maxiter": MAX_ITER, "gtol": 1e-9, "ftol": 1e-13}).x
        loss = _full_matrix_loss(point, *args)[0]
        if loss < best_loss - 1e-12:
            best_loss, best = loss, point.reshape(start.shape)
    kl = 0.5 * np.log1p(np.sum(best * best, axis=1))
    return best_loss + constant, np.sort(kl)[::-1]


def _global_variables(result: xr.Dataset, attrs: dict, all_variances: np.ndarray, beta: float, eta_dec: float,
                      free_bits: float) -> xr.Dataset:
    """Add the global optimum (``global_kl``, ``global_loss``, ``global_n_at_floor``, ``case``)."""
    kl = result["kl"].values
    latent_dim = kl.size
    variance = np.sort(np.asarray(all_variances, dtype=np.float64))[::-1]
    aligned_loss = _full_matrix_loss(_aligned_factor(kl, variance.size).ravel(), variance, latent_dim, beta,
                                     eta_dec, free_bits)[0]
    if attrs["certified_global"]:
        case, global_kl, global_loss = "certified", kl, aligned_loss
    elif not attrs["mode_sharing_descends"]:
        case, global_kl, global_loss = "mode-aligned optimal", kl, aligned_loss
    else:
        case = "mode sharing descends"
        global_loss, global_kl = global_free_bits_optimum(variance, latent_dim, kl, beta, eta_dec, free_bits)
    constant = attrs["loss"] - aligned_loss
    attrs.update(case=case, global_loss=float(global_loss + constant),
                 global_n_at_floor=int(np.sum(np.abs(global_kl - free_bits) <= FLOOR_ATOL)) if free_bits > 0 else 0)
    result["global_kl"] = ("latent", np.asarray(global_kl), {
        "description": "per-latent-dimension KL at the global (full-matrix) optimum, sorted descending",
        "units": "nats"})
    return result


def _aligned_factor(kl: np.ndarray, modes: int) -> np.ndarray:
    """The SNR factor G of the mode-aligned point: |g_i|^2 = e^{2 K_i} - 1 on mode i."""
    g = np.zeros((kl.size, modes))
    g[np.arange(kl.size), np.arange(kl.size)] = np.sqrt(np.expm1(2.0 * kl))
    return g


def _free_bits_variables(variance: np.ndarray, base: xr.Dataset, beta: float, eta_enc: float, eta_dec: float,
                         free_bits: float) -> tuple[xr.Dataset, dict]:
    """Override the plain optimum ``base`` at the modes where the floor binds; add ``kl`` and ``at_floor``."""
    plain_kl = unconstrained_kl(variance, beta, eta_dec)
    at_floor = (variance > 0) & (plain_kl < free_bits)
    # 1 - e^{-2 tau} via expm1: exact for small floors, where 1 - exp would cancel.
    open_fraction = -math.expm1(-2.0 * free_bits)
    floor_values = {
        "encoder_std": np.full_like(variance, eta_enc * math.exp(-free_bits)),
        "encoder_sv": np.full_like(variance, eta_enc * math.sqrt(open_fraction)),
        "decoder_sv": np.sqrt(variance * open_fraction) / eta_enc,
    }
    result = base.copy()
    for name, values in floor_values.items():
        result[name] = base[name].copy(data=np.where(at_floor, values, base[name].values))
    for flag in ("collapsed", "complete_collapse"):
        if flag in result:
            result[flag] = base[flag].copy(data=base[flag].values & ~at_floor)
    kl = np.where(at_floor, free_bits, plain_kl)
    result["kl"] = ("mode", kl, {"description": "per-dimension KL averaged over the data, without beta",
                                 "units": "nats"})
    result["at_floor"] = ("mode", at_floor, {"description": "the free-bits floor binds: KL sits exactly at it"})
    n_at_floor = int(at_floor.sum())
    attrs = {
        "free_bits": free_bits, "n_at_floor": n_at_floor, "certified_global": n_at_floor == 0,
        "mode_sharing_descends": mode_sharing_descends(variance, kl, at_floor),
        "optimum": "mode-aligned (per-mode) optimum of the free-bits loss; see the module docstring",
    }
    if "n_collapsed" in base.attrs:
        attrs["n_collapsed"] = int(result["collapsed"].sum())
    if "n_complete_collapse" in base.attrs:
        attrs["n_complete_collapse"] = int(result["complete_collapse"].sum())
    return result, attrs


def _mode_aligned_loss(all_variances: np.ndarray, kl: np.ndarray, output_dim: int, beta: float, eta_dec: float,
                       free_bits: float) -> float:
    """Expected free-bits loss per data point at the mode-aligned optimum (constants included).

    ``all_variances``: every mode's variance (length output_dim); ``kl`` covers the
    first latent_dim modes, the rest are not encoded (K = 0).
    """
    encoded = np.zeros_like(all_variances)
    encoded[: len(kl)] = kl
    squared_error = np.sum(all_variances * np.exp(-2.0 * encoded))
    return float(0.5 * output_dim * (_LOG_2PI + 2.0 * math.log(eta_dec)) + squared_error / (2.0 * eta_dec**2)
                 + beta * np.sum(np.maximum(free_bits, kl)))


def linear_vae_free_bits(x, latent_dim: int, beta: float = 1.0, eta_dec: float = 1.0, eta_enc: float = 1.0,
                         free_bits: float = 0.0) -> xr.Dataset:
    """Mode-aligned optimum of the linear VAE (learnable Sigma, SPEC 4.1) under free bits.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d)
    latent_dim : int, 1 <= latent_dim <= d
    beta, eta_dec, eta_enc : float > 0
    free_bits : float >= 0
        Floor tau in nats on each latent dimension's data-averaged KL; 0 gives
        :func:`ppl_vae.theory.linear_vae` exactly.

    Returns
    -------
    xr.Dataset over ``mode`` with :func:`~ppl_vae.theory.linear_vae`'s variables
    (``theta``, ``decoder_sv``, ``encoder_sv``, ``encoder_std``, ``collapsed``,
    ``complete_collapse``) plus ``kl`` (nats, without beta) and ``at_floor``.
    ``attrs`` add ``free_bits``, ``n_at_floor``, ``loss`` (expected free-bits loss
    per data point), ``certified_global`` and ``mode_sharing_descends``; the global
    optimum adds ``global_kl`` (over ``latent``), ``global_loss``, ``global_n_at_floor``
    and ``case`` (see the module docstring).
    """
    free_bits = check_free_bits(free_bits)
    base = linear_vae(x, latent_dim, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)
    variance = base["theta"].values ** 2
    result, attrs = _free_bits_variables(variance, base, beta, eta_enc, eta_dec, free_bits)
    data = as_data_matrix("x", x)
    attrs["loss"] = _mode_aligned_loss(vae_thetas(data) ** 2, result["kl"].values, data.shape[1], beta, eta_dec,
                                       free_bits)
    result = _global_variables(result, attrs, vae_thetas(data) ** 2, beta, eta_dec, free_bits)
    return result.assign_attrs(attrs)


def linear_cvae_free_bits(x, y, latent_dim: int, beta: float = 1.0, eta_dec: float = 1.0, eta_enc: float = 1.0,
                          free_bits: float = 0.0) -> xr.Dataset:
    """Mode-aligned optimum of the linear CVAE (SPEC 4.3) under free bits.

    The CVAE is a VAE on the residual y - Bx with mode variances theta_i (the
    eigenvalues of E), so the per-mode result of :func:`linear_vae_free_bits`
    applies with v_i = theta_i.

    Parameters
    ----------
    x : array_like, shape (n, d_x);  y : array_like, shape (n, d_y)
    latent_dim : int, 1 <= latent_dim <= d_y
    beta, eta_dec, eta_enc : float > 0
    free_bits : float >= 0, nats; 0 gives :func:`ppl_vae.theory.linear_cvae` exactly.

    Returns
    -------
    xr.Dataset over ``mode`` with :func:`~ppl_vae.theory.linear_cvae`'s variables
    plus ``kl`` and ``at_floor``; ``attrs`` as in :func:`linear_vae_free_bits`.
    """
    free_bits = check_free_bits(free_bits)
    base = linear_cvae(x, y, latent_dim, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)
    result, attrs = _free_bits_variables(base["theta"].values, base, beta, eta_enc, eta_dec, free_bits)
    x_data, y_data = as_paired_data(x, y)
    attrs["loss"] = _mode_aligned_loss(cvae_thetas(x_data, y_data), result["kl"].values, y_data.shape[1], beta,
                                       eta_dec, free_bits)
    result = _global_variables(result, attrs, cvae_thetas(x_data, y_data), beta, eta_dec, free_bits)
    return result.assign_attrs(attrs)


__all__ = ["check_free_bits", "global_free_bits_optimum", "linear_cvae_free_bits", "linear_vae_free_bits", "mode_sharing_descends",
           "unconstrained_kl"]
