"""The analytic linear-model prediction for a trained model, and how far it is.

For ``arch='linear'`` the closed forms of SPEC section 4 are the model's own
global optimum, and :meth:`linear_readout` gives the trained singular values
and stds under the same names, so ``learned - predicted`` is taken mode by mode.
For MLP / CNN models the prediction is that of the linear model with the same
data and hyper-parameters; ``attrs['prediction']`` says so.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..data.bundle import DataBundle

CLOSED_FORM = "closed form for this (linear) model"
LINEAR_PREDICTION = "linear-model prediction (same data and hyper-parameters; the trained model is non-linear)"


def predict(config, data: DataBundle) -> xr.Dataset:
    """Closed-form optimum of the linear model with ``config``'s hyper-parameters on ``data``.

    Returns the Dataset of :mod:`ppl_vae.theory` (dim ``mode``, float64).
    """
    from .. import theory  # imported here: the theory layer is optional for the rest of diagnostics

    x = data.x.detach().double().cpu().numpy()
    if config.family == "vae":
        return theory.linear_vae(
            x, config.latent_dim, config.beta, config.eta_enc, config.eta_dec, encoder_std=config.encoder_std
        )
    if config.family == "cvae":
        y = data.y.detach().double().cpu().numpy()
        return theory.linear_cvae(x, y, config.latent_dim, config.beta, config.eta_enc, config.eta_dec)
    if config.family == "mhvae":
        if getattr(config, "z2_input", "z1") != "z1":
            raise ValueError(f"Theorems 3 and 5 cover q(z2|z1) only, not the skip path z2_input={config.z2_input!r}")
        return theory.linear_mhvae(
            x, config.latent_dims, config.beta1, config.beta2, config.eta_enc, config.eta_dec,
            config.sigma1, config.sigma2,
        )
    raise ValueError(f"config.family must be one of 'vae', 'cvae', 'mhvae', got {config.family!r}")


def compare(predicted: xr.Dataset, learned: xr.Dataset) -> xr.Dataset:
    """Add ``learned_<v>`` and ``<v>_error = learned - predicted`` for each shared variable.

    Boolean variables (``collapsed``) are copied as ``learned_<v>`` without an error term.
    """
    out = predicted.copy()
    for name, values in learned.data_vars.items():
        if name not in predicted.data_vars or name == "theta":
            continue
        out[f"learned_{name}"] = values
        if values.dtype != bool and np.issubdtype(values.dtype, np.number):
            out[f"{name}_error"] = (values - predicted[name]).assign_attrs(
                long_name=f"learned minus predicted {name}"
            )
    return out


def theory_group(model, data: DataBundle) -> xr.Dataset:
    """The ``theory`` group: prediction, and for linear models learned values and errors.

    A linear model outside the theorems' assumptions (a CVAE with a learned
    prior) gets the prediction alone, labelled as the linear-model
    prediction, with ``attrs['readout_unavailable']`` saying why.

    Raises
    ------
    ValueError
        No closed form covers the configuration (e.g. an MHVAE with a
        learnable q(z1 | x) variance); :func:`diagnose` then leaves the group out.
    """
    config = model.config
    predicted = predict(config, data)
    if config.arch != "linear" or not hasattr(model, "linear_readout"):
        return predicted.assign_attrs(prediction=LINEAR_PREDICTION)
    try:
        learned = model.linear_readout(data)
    except ValueError as err:  # the readout refuses configurations the theory does not model
        return predicted.assign_attrs(prediction=LINEAR_PREDICTION, readout_unavailable=str(err))
    return compare(predicted, learned).assign_attrs(prediction=CLOSED_FORM)


def predicted_collapsed(theory: xr.Dataset, site: str) -> int | None:
    """Number of modes the theory predicts collapsed for latent ``site`` (None if it does not say)."""
    for name in (f"{site}_collapsed", "collapsed"):
        if name in theory.data_vars:
            return int(np.asarray(theory[name]).astype(bool).sum())
    return None
