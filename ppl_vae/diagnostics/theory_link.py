"""The analytic linear-model prediction for a trained model, and how far it is.

For the suite's ``arch='linear'`` models the closed forms of SPEC section 4
are the model's own global optimum, and :meth:`linear_readout` gives the
trained singular values and stds under the same names, so ``learned -
predicted`` is taken mode by mode. For MLP / CNN models the prediction is that
of the linear model with the same data and hyper-parameters;
``attrs['prediction']`` says so.

Any other Pyro model / guide pair gets the linear-model prediction when its
traces say which linear model it corresponds to (:func:`infer_linear_setting`):
one latent site, the observed values one of the model's arguments (VAE) or
one of two (CVAE, the other the condition); or two latent sites z2 -> z1 -> x
with a bottom-up guide q(z1 | x) q(z2 | z1) (MHVAE). Each beta is the
latent site's ``poutine.scale`` over the observed site's (a scale applied to
every site, such as the minibatch factor N / B, cancels); eta_enc from a
N(0, eta_enc^2 I) prior of the top latent; eta_dec from a Normal likelihood
with a fixed std; the latent sizes from the sites; sigma1 (and sigma2, else
learned) from a fixed std of q(z1 | x) (q(z2 | z1)).

Hyper-parameters the traces cannot give (a Bernoulli likelihood, a learned
prior) may be given by the caller. A prediction built from given values says
so (``attrs['prediction_basis']``, ``attrs['hyperparameter_source']``), and
when the traces show that the model is not the theory's model (a learned
prior, a different likelihood, a value the traces read otherwise) a
:class:`TheoryMismatchWarning` is issued and ``attrs['model_mismatch']``
records why.
"""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import torch
import xarray as xr
from threadpoolctl import ThreadpoolController

from ..data.bundle import DataBundle
from .hyperparameters import infer_linear_setting, model_mismatch
from .target import ModelArgs, PyroTarget

CLOSED_FORM = "closed form for this (linear) model"
LINEAR_PREDICTION = "linear-model prediction (same data and hyper-parameters; the trained model is non-linear)"
PYRO_PREDICTION = ("linear-model prediction (the linear model with the same data and hyper-parameters as this "
                   "Pyro model, which may itself be non-linear)")


def predict(config, data: DataBundle) -> xr.Dataset:
    """Closed-form optimum of the linear model with ``config``'s hyper-parameters on ``data``.

    Returns the Dataset of :mod:`ppl_vae.theory` (dim ``mode``, float64).
    """
    # The matrices are (d, d) moments: a multi-threaded BLAS only adds synchronisation,
    # which costs 10-100x on a busy machine (0.1 s a call measured), so run single-threaded.
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _closed_form(config, data)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """One controller for the process: making one scans the loaded libraries (~3 ms)."""
    return ThreadpoolController()


def _closed_form(config, data: DataBundle) -> xr.Dataset:
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


#: The config fields a prediction of each family reads (``theory=`` may give them, and ``family``).
THEORY_FIELDS = {"vae": ("latent_dim", "beta", "eta_enc", "eta_dec", "encoder_std"),
                 "cvae": ("latent_dim", "beta", "eta_enc", "eta_dec"),
                 "mhvae": ("latent_dims", "beta1", "beta2", "eta_enc", "eta_dec", "sigma1", "sigma2")}
#: The fields without a default: the traces or the caller must give them.
REQUIRED = {"vae": ("latent_dim", "beta", "eta_enc", "eta_dec"), "cvae": ("latent_dim", "beta", "eta_enc", "eta_dec"),
            "mhvae": ("latent_dims", "beta1", "beta2", "eta_enc", "eta_dec", "sigma1")}
THEORY_OPTIONS = frozenset({"family"}.union(*THEORY_FIELDS.values()))


class TheoryMismatchWarning(UserWarning):
    """The traced model differs from the model of the prediction built from the caller's values."""


def linear_config(values: dict, bundle: DataBundle):
    """The suite's config of the linear model with ``values`` (family and hyper-parameters) on ``bundle``.

    The config validates the values (positive stds and weights, dimensions).
    """
    from ..models import CONFIG_CLASSES  # the models are needed only here

    family = values["family"]
    fields = {name: values[name] for name in THEORY_FIELDS[family] if name in values}
    if family == "cvae":
        dims = {"x_dim": int(bundle.x.shape[1]), "y_dim": int(bundle.y.shape[1])}
    else:
        dims = {"input_dim": int(bundle.x.shape[1])}
    if "latent_dims" in fields:
        fields["latent_dims"] = tuple(int(d) for d in fields["latent_dims"])
    return CONFIG_CLASSES[family](arch="linear", **dims, **fields)


def check_theory_option(theory: bool | dict) -> bool | dict:
    """``theory`` if it is True / False or a dict of :data:`THEORY_OPTIONS`, else ``ValueError``."""
    if isinstance(theory, bool):
        return theory
    if not isinstance(theory, dict):
        raise ValueError(f"theory must be True, False or a dict of hyper-parameters, got {theory!r}")
    unknown = sorted(set(theory) - THEORY_OPTIONS)
    if unknown:
        raise ValueError(f"theory: unknown hyper-parameter(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(sorted(THEORY_OPTIONS))}")
    return dict(theory)


def _array(args: ModelArgs, name: str) -> np.ndarray:
    tensor = args.row_tensors()[name]
    return tensor.detach().double().cpu().reshape(tensor.shape[0], -1).numpy()


def inferred_theory_group(target: PyroTarget, args: ModelArgs, given: dict | None = None, *,
                          inferred: tuple[dict, dict[str, str]] | None = None) -> xr.Dataset:
    """The linear-model prediction for a Pyro model / guide pair (module docstring).

    Parameters
    ----------
    target, args
        The pair and the data it was trained on.
    given
        Hyper-parameters that override or complete what the traces give:
        ``family``, ``beta``, ``eta_enc``, ``eta_dec``, ``encoder_std``, and for
        ``'mhvae'``: ``latent_dims``, ``beta1``, ``beta2``, ``sigma1``, ``sigma2``.
    inferred
        :func:`infer_linear_setting` output, when already computed.

    Raises
    ------
    ValueError
        Saying which hyper-parameter neither the traces nor ``given`` provide, and why.
    """
    given = check_theory_option(given or {})
    found, missing = inferred if inferred is not None else infer_linear_setting(target, args)
    mismatch = model_mismatch(given, found, missing)
    values = {**{k: v for k, v in found.items() if k in THEORY_OPTIONS}, **given}
    family = values.get("family")
    if family not in REQUIRED:
        raise ValueError(missing.get("family", f"theory family must be 'vae', 'cvae' or 'mhvae', got {family!r}"))
    absent = [name for name in REQUIRED[family] if name not in values]
    if absent:
        reasons = "; ".join(missing.get(name, f"{name} is not known") for name in absent)
        raise ValueError(f"no linear-model prediction without {', '.join(absent)}: {reasons} "
                         f"(give theory={{{', '.join(repr(a) + ': ...' for a in absent)}}})")
    x_name = found.get("x_arg") or next(iter(args.row_tensors()))
    y = _array(args, found["y_arg"]) if family == "cvae" and "y_arg" in found else None
    if family == "cvae" and y is None:
        raise ValueError("a CVAE prediction needs the model's condition x and output y among its arguments")
    bundle = DataBundle("theory", x=torch.as_tensor(_array(args, x_name)),
                        y=None if y is None else torch.as_tensor(y))
    used = {name: values[name] for name in THEORY_FIELDS[family] if name in values}
    source = {name: ("given" if name in given else "inferred from the traces") for name in ("family", *used)}
    predicted = predict(linear_config(values, bundle), bundle)
    if mismatch:
        warnings.warn(f"theory: the traced model differs from the linear {family} of the prediction built from the "
                      f"given values ({'; '.join(f'{k}: {v}' for k, v in sorted(mismatch.items()))}); the theory "
                      "group is that model's prediction, not this model's", TheoryMismatchWarning, stacklevel=4)
    kinds = set(source.values())
    basis = "given" if kinds == {"given"} else "traces" if "given" not in kinds else "given and traces"
    return predicted.assign_attrs(
        prediction=PYRO_PREDICTION,
        prediction_basis=basis,
        hyperparameters=json.dumps(used, sort_keys=True),
        hyperparameter_source=json.dumps(source, sort_keys=True),
        model_mismatch=json.dumps(mismatch, sort_keys=True),
    )
