"""Trained linear models in the coordinates of :mod:`ppl_vae.theory`.

Each ``*_readout`` returns an ``xr.Dataset`` over ``mode`` with the variable
names of the matching ``ppl_vae.theory.linear_*`` function, so the two line up
mode by mode. Matching learned latent dimensions to theory modes:

- singular values are rotation invariant and are simply sorted descending,
  which is the theory's mode order (every closed form is monotone in theta);
- a per-dimension quantity (an encoder std) is attached to the mode of its
  latent dimension, ranked by the norm of that dimension's decoder column.
  With a diagonal encoder variance the optimal decoder has orthogonal columns,
  so column norms equal the decoder singular values and the ranking is exact
  at the optimum (collapsed dimensions have zero columns and rank last).

``collapsed`` is measured as "decoder singular value below ``tol``" (for the
MHVAE: z1 encoder singular value, z2 decoder singular value). Boolean variables
do not subtract; use :func:`compare_with_theory` to line a readout up with a
prediction.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from ppl_vae.theory import cvae_thetas, residual_moment, second_moment
from ppl_vae.theory.moments import clamped_eigh, psd_sqrt

#: Default absolute threshold under which a singular value counts as collapsed.
COLLAPSE_TOL = 0.05


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def _svdvals(matrix: np.ndarray, n_modes: int) -> np.ndarray:
    """Singular values, descending, zero-padded (or cut) to ``n_modes``."""
    values = np.linalg.svd(matrix, compute_uv=False)
    out = np.zeros(n_modes)
    out[: min(n_modes, values.size)] = values[:n_modes]
    return out


def _by_column_norm(decoder: np.ndarray, per_dim: np.ndarray) -> np.ndarray:
    """``per_dim`` (one value per latent dim) reordered by decoder column norm, descending."""
    order = np.argsort(-np.linalg.norm(decoder, axis=0), kind="stable")
    return per_dim[order]


def _whitening_frame(x: torch.Tensor) -> np.ndarray:
    """``P diag(phi)^(1/2)`` for ``A = E[x x^T] = P diag(phi) P^T`` (phi descending), shape (d, d)."""
    phi, basis = clamped_eigh(second_moment(_numpy(x)))
    return basis * np.sqrt(phi)


def _dataset(variables: dict[str, np.ndarray], attrs: dict) -> xr.Dataset:
    n_modes = len(next(iter(variables.values())))
    return xr.Dataset({name: ("mode", values) for name, values in variables.items()},
                      coords={"mode": np.arange(n_modes)}, attrs=attrs)


def vae_readout(x: torch.Tensor, encoder_weight: torch.Tensor, decoder_weight: torch.Tensor,
                encoder_std: torch.Tensor, tol: float = COLLAPSE_TOL) -> xr.Dataset:
    """Linear VAE readout (theory: :func:`ppl_vae.theory.linear_vae`).

    Parameters
    ----------
    x
        ``(n, d)`` training data (its second moment fixes the theory's frame).
    encoder_weight, decoder_weight
        W ``(k, d)`` and U ``(d, k)``.
    encoder_std
        ``(k,)`` encoder std per latent dimension.
    """
    W, U, std = _numpy(encoder_weight), _numpy(decoder_weight), _numpy(encoder_std)
    k = W.shape[0]
    frame = _whitening_frame(x)
    theta = np.sqrt(np.maximum(0.0, np.linalg.eigvalsh(second_moment(_numpy(x)))[::-1]))[:k]
    decoder_sv = _svdvals(U, k)
    return _dataset({
        "theta": theta,
        "decoder_sv": decoder_sv,
        "encoder_sv": _svdvals(W @ frame, k),
        "encoder_std": _by_column_norm(U, std),
        "collapsed": decoder_sv < tol,
    }, {"model": "linear_vae", "source": "trained", "collapse_tol": tol})


def cvae_readout(x: torch.Tensor, y: torch.Tensor, encoder_y_weight: torch.Tensor, decoder_z_weight: torch.Tensor,
                 encoder_std: torch.Tensor, tol: float = COLLAPSE_TOL) -> xr.Dataset:
    """Linear CVAE readout (theory: :func:`ppl_vae.theory.linear_cvae`).

    ``encoder_sv`` are the singular values of ``W2 E^(1/2)``, E the residual second
    moment of y given x; ``decoder_sv`` those of the z-branch U1 ``(d_y, k)``.
    """
    W2, U1, std = _numpy(encoder_y_weight), _numpy(decoder_z_weight), _numpy(encoder_std)
    k = W2.shape[0]
    x_np, y_np = _numpy(x), _numpy(y)
    decoder_sv = _svdvals(U1, k)
    return _dataset({
        "theta": cvae_thetas(x_np, y_np)[:k],
        "decoder_sv": decoder_sv,
        "encoder_sv": _svdvals(W2 @ psd_sqrt(residual_moment(x_np, y_np)), k),
        "encoder_std": _by_column_norm(U1, std),
        "collapsed": decoder_sv < tol,
    }, {"model": "linear_cvae", "source": "trained", "collapse_tol": tol})


def mhvae_readout(x: torch.Tensor, z1_encoder_weight: torch.Tensor, z2_decoder_weight: torch.Tensor,
                  z2_encoder_std: torch.Tensor | None, tol: float = COLLAPSE_TOL) -> xr.Dataset:
    """Linear MHVAE readout (theory: :func:`ppl_vae.theory.linear_mhvae`).

    Modes run over ``max(d1, d2)`` like the theory; z1 quantities are NaN beyond
    d1 and z2 quantities beyond d2 (``in_z1`` / ``in_z2`` coordinates).
    ``z2_encoder_std`` is reported only for a learnable Sigma2 (pass None otherwise).
    """
    W1, U2 = _numpy(z1_encoder_weight), _numpy(z2_decoder_weight)
    d1, d2 = W1.shape[0], U2.shape[1]
    n_modes = max(d1, d2)
    mode = np.arange(n_modes)
    in_z1, in_z2 = mode < d1, mode < d2
    theta = np.zeros(n_modes)
    spectrum = np.sqrt(np.maximum(0.0, np.linalg.eigvalsh(second_moment(_numpy(x)))[::-1]))[:n_modes]
    theta[: spectrum.size] = spectrum
    encoder_sv = np.where(in_z1, _svdvals(W1 @ _whitening_frame(x), n_modes), np.nan)
    decoder_sv = np.where(in_z2, _svdvals(U2, n_modes), np.nan)
    variables = {"theta": theta, "z1_encoder_sv": encoder_sv, "z2_decoder_sv": decoder_sv}
    if z2_encoder_std is not None:
        std = np.full(n_modes, np.nan)
        std[:d2] = _by_column_norm(U2, _numpy(z2_encoder_std))
        variables["z2_encoder_std"] = std
    variables["z1_collapsed"] = in_z1 & (np.nan_to_num(encoder_sv) < tol)
    variables["z2_collapsed"] = in_z2 & (np.nan_to_num(decoder_sv) < tol)
    dataset = _dataset(variables, {"model": "linear_mhvae", "source": "trained", "collapse_tol": tol})
    return dataset.assign_coords(in_z1=("mode", in_z1), in_z2=("mode", in_z2))


#: Per family: the linear decoder weight whose singular values are the readout's ``decoder_sv``
#: (``z2_decoder_sv`` for the MHVAE).
DECODER_WEIGHT = {"vae": "decoder.weight", "cvae": "decoder_z.weight", "mhvae": "decoder2.weight"}


def decoder_singular_values(model) -> np.ndarray:
    """A linear model's decoder singular values, descending: the readout's, without touching the data.

    Cheap (one small SVD), for watching them settle during training; NaN for a
    decoder with non-finite weights (a diverged configuration).
    """
    weight = model.get_parameter(DECODER_WEIGHT[model.config.family]).detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(weight).all()):
        return np.full(min(weight.shape), np.nan)
    return torch.linalg.svdvals(weight).numpy()


#: The singular values that decide each collapse flag of a readout.
_COLLAPSE_EVIDENCE = {"collapsed": "decoder_sv", "z1_collapsed": "z1_encoder_sv", "z2_collapsed": "z2_decoder_sv"}


def count_collapsed(readout: xr.Dataset, tol: float | None = None) -> dict[str, int]:
    """Number of collapsed modes per collapse flag, e.g. ``{'collapsed': 3}``.

    ``tol`` None counts the readout's own flags; a number recounts them as
    "singular value below ``tol``" (NaN modes, absent from a latent, never count).
    """
    counts = {}
    for name, evidence in _COLLAPSE_EVIDENCE.items():
        if name not in readout.data_vars:
            continue
        if tol is None:
            counts[name] = int(readout[name].sum())
        else:
            counts[name] = int((readout[evidence] < tol).sum())  # NaN < tol is False
    return counts


def compare_with_theory(readout: xr.Dataset, theory: xr.Dataset) -> xr.Dataset:
    """Line a trained readout up with the closed-form optimum, mode by mode.

    Returns
    -------
    xr.Dataset over ``mode`` with, for every float variable the two share,
    ``{name}_error`` (readout - theory) and ``{name}_rel_error`` (relative to the
    theory value, NaN where it is 0); for every shared boolean variable
    ``{name}_match``. ``attrs`` hold measured and predicted counts per boolean
    variable (``n_{name}_measured`` / ``n_{name}_predicted``).
    """
    out = xr.Dataset(coords={"mode": readout["mode"]})
    attrs: dict[str, int] = {}
    for name in readout.data_vars:
        if name not in theory.data_vars:
            continue
        measured, predicted = readout[name], theory[name]
        if measured.dtype == bool:
            out[f"{name}_match"] = measured == predicted
            attrs[f"n_{name}_measured"] = int(measured.sum())
            attrs[f"n_{name}_predicted"] = int(predicted.sum())
        else:
            error = measured - predicted
            out[f"{name}_error"] = error
            out[f"{name}_rel_error"] = error / predicted.where(predicted != 0)
    out.attrs.update(attrs)
    return out


def theory_for(config, bundle) -> xr.Dataset | None:
    """The closed-form optimum matching a linear model's config on ``bundle``'s data, or None.

    None when no theorem covers the model: a non-linear architecture, the CVAE's
    learned prior, or an MHVAE with a learnable Sigma1 or a skip path x -> z2.
    """
    from ppl_vae.theory import linear_cvae, linear_mhvae, linear_vae

    if config.arch != "linear":
        return None
    if config.family == "vae":
        return linear_vae(bundle.x, config.latent_dim, beta=config.beta, eta_enc=config.eta_enc,
                          eta_dec=config.eta_dec, encoder_std=config.encoder_std)
    if config.family == "cvae":
        if config.prior != "standard":
            return None
        return linear_cvae(bundle.x, bundle.y, config.latent_dim, beta=config.beta, eta_enc=config.eta_enc,
                           eta_dec=config.eta_dec)
    if config.sigma1 is None or config.z2_input != "z1":
        return None
    return linear_mhvae(bundle.x, config.latent_dims, beta1=config.beta1, beta2=config.beta2,
                        eta_enc=config.eta_enc, eta_dec=config.eta_dec, sigma1=config.sigma1, sigma2=config.sigma2)


#: Per family: (boolean collapse variables, the decoder singular values judged for "active" modes).
_SUMMARY_VARIABLES = {
    "linear_vae": (("collapsed",), "decoder_sv"),
    "linear_cvae": (("collapsed",), "decoder_sv"),
    "linear_mhvae": (("z1_collapsed", "z2_collapsed"), "z2_decoder_sv"),
}


def readout_summary(readout: xr.Dataset, theory: xr.Dataset) -> dict[str, float | int]:
    """Headline figures of a readout against the theory (JSON-safe).

    ``n_collapsed_measured`` / ``n_collapsed_predicted`` sum every ``*collapsed``
    variable (z1 and z2 for the MHVAE); ``max_rel_error_active_decoder_sv`` is the
    largest relative error of the decoder singular values over modes the theory
    calls active; ``max_collapsed_decoder_sv`` the largest trained decoder singular
    value over modes it calls collapsed (0 if none).
    """
    flags, decoder = _SUMMARY_VARIABLES[theory.attrs.get("model", readout.attrs["model"])]
    predicted_collapsed = theory[flags[-1]] if decoder.startswith("z2") else theory[flags[0]]
    measured_sv, predicted_sv = readout[decoder], theory[decoder]
    valid = predicted_sv.notnull()
    active = valid & ~predicted_collapsed
    dead = valid & predicted_collapsed
    rel_error = abs(measured_sv - predicted_sv) / predicted_sv.where(active)
    return {
        "n_collapsed_measured": int(sum(int(readout[name].sum()) for name in flags)),
        "n_collapsed_predicted": int(sum(int(theory[name].sum()) for name in flags)),
        "max_rel_error_active_decoder_sv": float(rel_error.max()) if bool(active.any()) else 0.0,
        "max_collapsed_decoder_sv": float(measured_sv.where(dead).max()) if bool(dead.any()) else 0.0,
    }
