"""Hyper-parameters of a Pyro model / guide pair read off its traces, for the linear-model theory.

:func:`infer_linear_setting` reads which linear model (VAE, CVAE or two-level
MHVAE) a pair corresponds to and its hyper-parameters (see
:mod:`ppl_vae.diagnostics.theory_link`); :func:`model_mismatch` says where the
traced model differs from the model of a theory built from values the caller gave.
"""

from __future__ import annotations

import numpy as np
import torch

from ._traces import elementwise
from .target import ModelArgs, PyroTarget, observed_argument, trace_pair


def _constant(values: torch.Tensor | float) -> float | None:
    """The common value of all entries, or None when they differ.

    A float32 value is given to float32's precision (7 significant digits:
    ``0.2``, not ``0.20000000298...``).
    """
    single = isinstance(values, torch.Tensor) and values.dtype != torch.float64
    tensor = torch.as_tensor(values.detach() if isinstance(values, torch.Tensor) else values, dtype=torch.float64)
    first = tensor.reshape(-1)[0]
    if not torch.allclose(tensor, first, rtol=1e-6, atol=0.0):
        return None
    return float(f"{float(first):.7g}") if single else float(first)


def _normal_std(fn, *, zero_mean: bool) -> float | None:
    """The fixed std of a per-coordinate Normal (with zero mean if asked), else None."""
    normal = elementwise(fn)
    if not isinstance(normal, torch.distributions.Normal):
        return None
    if zero_mean and not bool(torch.all(normal.loc == 0)):
        return None
    return _constant(normal.scale)


def _scale_ratio(site: dict, obs_site: dict) -> float | None:
    """A latent site's ``poutine.scale`` over the observed site's (its KL weight beta), or None if it varies."""
    ratio = torch.as_tensor(site["scale"], dtype=torch.float64) / torch.as_tensor(obs_site["scale"],
                                                                                 dtype=torch.float64)
    return _constant(ratio)


def _dim(site: dict, n: int) -> int:
    return int(site["value"].reshape(n, -1).shape[1])



def _record(found: dict, missing: dict[str, str], name: str, value, why: str) -> None:
    """``found[name] = value``, or ``missing[name] = why`` when the traces gave no value."""
    if value is None:
        missing[name] = why
    else:
        found[name] = value

def _read_vae(site: str, q_site: dict, p_site: dict, obs_site: dict, n: int, found: dict,
              missing: dict[str, str]) -> None:
    """latent_dim, beta and eta_enc of a one-latent model."""
    found["latent_dim"] = _dim(q_site, n)
    beta = _scale_ratio(q_site, obs_site)
    _record(found, missing, "beta", beta,
            f"the poutine.scale of guide site {site!r} over that of the observed site differs between points")
    eta_enc = _normal_std(p_site["fn"], zero_mean=True)
    _record(found, missing, "eta_enc", eta_enc,
            f"the prior of {site!r} is not N(0, eta_enc^2 I) (a learned or conditional prior, or not Normal)")


def _read_mhvae(guide_trace, model_trace, sites: tuple[str, ...], obs_site: dict, n: int, found: dict,
                missing: dict[str, str]) -> None:
    """latent_dims, beta1 / beta2, eta_enc, sigma1 / sigma2 of a two-level model (z2 -> z1 -> x)."""
    top, bottom = [name for name in model_trace.nodes if name in sites]
    guide_first = next(name for name in guide_trace.nodes if name in sites)
    if guide_first != bottom:
        missing["family"] = (f"the guide samples {top!r} before {bottom!r}: the MHVAE theory's encoder is "
                             "bottom-up, q(z1 | x) q(z2 | z1)")
    z1_q, z2_q = guide_trace.nodes[bottom], guide_trace.nodes[top]
    found["latent_sites"] = (bottom, top)
    found["latent_dims"] = (_dim(z1_q, n), _dim(z2_q, n))
    for name, site in (("beta1", z1_q), ("beta2", z2_q)):
        beta = _scale_ratio(site, obs_site)
        _record(found, missing, name, beta, f"the poutine.scale of guide site {site['name']!r} differs between points")
    eta_enc = _normal_std(model_trace.nodes[top]["fn"], zero_mean=True)
    _record(found, missing, "eta_enc", eta_enc, f"the prior of {top!r} is not N(0, eta_enc^2 I)")
    found["z1_prior_std"] = _normal_std(model_trace.nodes[bottom]["fn"], zero_mean=False)
    sigma1 = _normal_std(z1_q["fn"], zero_mean=False)
    _record(found, missing, "sigma1", sigma1,
            f"q({bottom} | x) has a learned or varying std; the closed form needs a fixed isotropic sigma1")
    sigma2 = _normal_std(z2_q["fn"], zero_mean=False)
    if sigma2 is not None:
        found["sigma2"] = sigma2


def infer_linear_setting(target: PyroTarget, args: ModelArgs) -> tuple[dict, dict[str, str]]:
    """What the traces say about the matching linear model.

    Returns
    -------
    found
        ``family``, ``latent_dim`` (``latent_dims``), ``beta`` (``beta1``,
        ``beta2``), ``eta_enc``, ``eta_dec`` (``sigma1``, ``sigma2``) and the
        data arrays' names ``x_arg`` (and ``y_arg`` for a CVAE), as far as the
        traces give them.
    missing
        Field -> why the traces do not give it (``family``: why the model is not
        one the theory covers).
    """
    example = args.subset(slice(0, 8))
    with torch.no_grad():
        guide_trace, model_trace = trace_pair(target.model, target.guide, example.args)
    found: dict = {}
    missing: dict[str, str] = {}
    obs_site = model_trace.nodes[target.observed_site]
    observed = obs_site["value"].reshape(example.n, -1)
    obs_arg = observed_argument(example, observed)
    others = [name for name in example.row_tensors() if name != obs_arg]
    sites = target.all_latent_sites
    if obs_arg is None:
        missing["family"] = ("the observed values are not one of the model's arguments (the model transforms "
                             "them), so the data statistics of the theory cannot be formed")
    elif len(sites) == 2 and not others:
        found.update(family="mhvae", x_arg=obs_arg)
    elif len(sites) != 1:
        missing["family"] = (f"the model has {len(sites)} latent sites (and {len(others) + 1} data arguments); "
                             "the linear theory covers one (VAE / CVAE) or two on x alone (MHVAE)")
    elif len(others) > 1:
        missing["family"] = f"the model takes {len(others) + 1} data arguments; the theory knows x (VAE) or x, y (CVAE)"
    else:
        found["family"] = "cvae" if others else "vae"
        found.update({"x_arg": others[0], "y_arg": obs_arg} if others else {"x_arg": obs_arg})
    if len(sites) == 1:
        _read_vae(sites[0], guide_trace.nodes[sites[0]], model_trace.nodes[sites[0]], obs_site, example.n, found,
                  missing)
    elif len(sites) == 2:
        _read_mhvae(guide_trace, model_trace, sites, obs_site, example.n, found, missing)
    eta_dec = _normal_std(obs_site["fn"], zero_mean=False)
    if eta_dec is None:
        missing["eta_dec"] = (f"the likelihood of {target.observed_site!r} is "
                              f"{type(elementwise(obs_site['fn']) or obs_site['fn']).__name__}, not a Normal with "
                              "a fixed std")
    else:
        found["eta_dec"] = eta_dec
    z1_std = found.pop("z1_prior_std", "absent")
    if z1_std != "absent" and (z1_std is None or eta_dec is None or not np.isclose(z1_std, eta_dec, rtol=1e-5)):
        missing.setdefault("family", f"p({found['latent_sites'][0]} | {found['latent_sites'][1]}) has std "
                                     f"{z1_std}, not the likelihood's eta_dec = {eta_dec}: the MHVAE theory "
                                     "uses eta_dec for both")
    if "family" in missing:
        found.pop("family", None)
    return found, missing


def _same(read, given) -> bool:
    """Whether a value read off the traces equals the one the caller gave."""
    if isinstance(read, (tuple, list)) or isinstance(given, (tuple, list)):
        return tuple(np.atleast_1d(read).tolist()) == tuple(np.atleast_1d(given).tolist())
    try:
        return bool(np.isclose(float(read), float(given), rtol=1e-5))
    except (TypeError, ValueError):
        return read == given


def model_mismatch(given: dict, found: dict, missing: dict[str, str]) -> dict[str, str]:
    """Given hyper-parameter -> how the traced model differs from the theory's model on it (empty: it does not).

    A given value the traces could not read because the model is of another
    form (a learned prior for ``eta_enc``, a Bernoulli likelihood for
    ``eta_dec``, ...) or that the traces read as something else.
    """
    mismatch = {name: missing[name] for name in given if name in missing}
    for name, value in given.items():
        if name in found and not _same(found[name], value):
            mismatch[name] = f"the traces read {name} = {found[name]!r}, the theory was given {value!r}"
    return mismatch
