"""``diagnose``: one trained Pyro model -> one :class:`arviz.InferenceData`.

Any Pyro model / guide pair can be diagnosed (``diagnose(model, guide, data)``),
and the suite's models too (``diagnose(vae, data)``): both go through one
:class:`~ppl_vae.diagnostics.target.PyroTarget`. Groups (see the module
docstrings for each; ``<obs>`` is the observed site, ``<s>`` a latent site):

============================  ==========================================================
``posterior``                 guide draws of every latent, (chain, draw, obs, <s>_dim)
``posterior_predictive``      ``<obs>``: likelihood DRAWS for each guide draw;
                              ``<obs>_mean``: the likelihood mean (reconstructions)
``prior``                     latents drawn from the model's prior (CVAE: p(z | x))
``prior_predictive``          ``<obs>`` draws and ``<obs>_mean`` for the prior latents
``observed_data``             the observed site's values (x, or y for a CVAE)
``constant_data``             the model's other data arguments (the CVAE condition x)
``log_likelihood``            ``<obs>``: importance-weighted log p(obs) of the same points
                              as ``observed_data``, (chain=1, draw=1, obs), in nats
``collapse``                  per-dimension KL, active units, epsilon-collapse curves,
                              collapsed and low-information dimensions
``theory``                    the closed-form / linear-model prediction (+ learned, errors)
``metrics``                   IW log-likelihood (mean, standard error), ELBO (beta = 1 and
                              trained), MSE, and the pointwise ELBO / squared error
============================  ==========================================================

Top-level ``attrs``: ``model_config`` and ``data_spec`` (JSON strings), ``family``
(``'pyro'`` for a plain model / guide pair), ``hyperparameters`` (JSON),
``seed``, ``ppl_vae_version``, ``latent_sites``, ``observed_site``,
``observed_variable`` (its variable name), ``kl_method`` (JSON, per site),
``metrics_data`` ('test' or 'train': which points ``metrics`` and
``log_likelihood`` were computed on), ``diagnosed_data`` (the same, for every
group but ``theory``: with ``test_data`` the draws, ``observed_data`` and the
collapse statistics are on the held-out points too), ``collapse_epsilon`` and
``low_information_share`` (the thresholds of the headline), and
``converged`` / ``convergence_reason`` when the caller passes the run's verdict.

One set of points (ArviZ's semantics): ``observed_data``, ``posterior``,
``posterior_predictive`` and ``log_likelihood`` hold the same ``n_obs``
points (``obs`` coordinate: their row numbers in the diagnosed data); the
pointwise values for every held-out point are ``metrics.iw_log_likelihood_pointwise``
(``eval_obs``), which :func:`~ppl_vae.diagnostics.compare.heldout_elpd` reads.

``diagnose`` leaves no trace on the caller's run
(:mod:`ppl_vae.diagnostics._isolation`): RNG states, modules' train / eval
flags and Pyro's parameter store are restored, and nothing moves device
unless ``device`` asks for it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from .. import __version__
from .._device import resolve_device
from .._validate import check_finite_values, check_int_range, check_positive
from ..data.bundle import DataBundle
from ._isolation import referenced_modules, untouched
from .collapse import COLLAPSE_EPSILON, LOW_INFORMATION_SHARE, check_share, collapse_dataset, latent_statistics
from .draws import draw_groups, select_observations
from .io import netcdf_safe_attrs, safe_dataset
from .likelihood import evaluation_metrics
from .plain import PlainDiagnostics
from .target import (
    ModelArgs,
    PyroTarget,
    as_model_args,
    as_target,
    is_suite_style,
    owner_modules,
    parameter_device,
    variable_name,
)

if TYPE_CHECKING:  # ArviZ is imported only where an InferenceData is built (ppl_vae.diagnostics.plain)
    import arviz as az
from .theory_link import check_theory_option, infer_linear_setting, inferred_theory_group, theory_group


#: The hyper-parameters read off a plain Pyro pair's traces that go to ``attrs['hyperparameters']`` (numbers).
INFERRED_HYPERPARAMETERS = ("beta", "beta1", "beta2", "eta_enc", "eta_dec", "latent_dim", "sigma1", "sigma2")


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _data_spec(args: ModelArgs, data_spec: dict | None) -> dict:
    if data_spec is not None:
        return data_spec
    if args.bundle is not None:
        return args.bundle.attrs.get("spec", {"name": args.bundle.name})
    return {"name": "in-memory", "shapes": {name: list(t.shape) for name, t in args.row_tensors().items()}}


def run_attributes(target: PyroTarget, args: ModelArgs, seed: int, data_spec: dict | None = None,
                   hyperparameters: dict | None = None) -> dict:
    """Provenance written on the InferenceData: model, data spec, seed, version, sites."""
    if target.is_suite_model:
        config = target.config
        model_config, family = config.to_dict(), config.family
        hyperparameters = config.hyperparameters()
    else:
        owner = getattr(target.model, "__self__", None)
        arch = type(owner).__name__ if owner is not None else getattr(target.model, "__name__", "model")
        model_config = {"family": "pyro", "arch": arch, "model": _qualname(target.model),
                        "guide": _qualname(target.guide)}
        family = "pyro"
    attrs = {
        "model_config": json.dumps(model_config, sort_keys=True),
        "data_spec": json.dumps(_data_spec(args, data_spec), sort_keys=True, default=str),
        "family": family,
        "hyperparameters": json.dumps(hyperparameters or {}, sort_keys=True),
        "seed": int(seed),
        "ppl_vae_version": __version__,
        "latent_sites": " ".join(target.latent_sites),
        "observed_site": target.observed_site,
        "observed_variable": variable_name(target.observed_site),
    }
    bundle = args.bundle
    if bundle is not None and bundle.image_shape is not None:
        attrs["image_shape"] = np.asarray(bundle.image_shape, dtype=np.int64)
    if bundle is not None and bundle.split is not None:
        attrs["split"] = bundle.split
    return attrs


def build_inference_data(groups: dict, attrs: dict) -> az.InferenceData:
    """``InferenceData`` with custom groups (collapse, theory, metrics) allowed (ArviZ imported here)."""
    import arviz as az

    with warnings.catch_warnings():
        # arviz warns that collapse / theory / metrics are not among its standard groups
        warnings.filterwarnings("ignore", message=".*not .*default.*group.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*group.*not.*", category=UserWarning)
        return az.InferenceData(attrs=attrs, **groups)


def place(model: Any, guide: Callable | None, device: str) -> torch.device:
    """Move the modules holding the parameters to ``device``; return the device the data must live on.

    ``device='auto'`` moves nothing: the data goes where the parameters
    already are. Plain functions whose parameters live only in Pyro's
    parameter store cannot be moved: the data then goes where those
    parameters are, and an explicit ``device`` elsewhere is refused.
    """
    if isinstance(model, PyroTarget):
        modules = model.modules
    else:
        modules = owner_modules(model) if guide is None else owner_modules(model, guide)
    if device == "auto":
        return parameter_device(modules)
    if modules:
        where = resolve_device(device)
        for module in modules:
            module.to(where)
        return where
    where = parameter_device(())
    if resolve_device(device).type != where.type:
        raise ValueError(f"device={device!r}: the parameters of these plain functions live on {where} in Pyro's "
                         "parameter store and cannot be moved here; move them, or bind model and guide to an "
                         "nn.Module")
    return where


def _as_bundle(args: ModelArgs) -> DataBundle:
    """The suite's data container for ``args`` (``(x,)`` or ``(x, y)``)."""
    if args.bundle is not None:
        return args.bundle
    tensors = list(args.row_tensors().values())
    return DataBundle("data", x=tensors[0], y=tensors[1] if len(tensors) > 1 else None)


def _theory(target: PyroTarget, args: ModelArgs, theory: bool | dict, inferred) -> xr.Dataset:
    """The theory group (raises ``ValueError`` saying why there is none)."""
    if target.is_suite_model:
        if isinstance(theory, dict):
            raise ValueError("theory= hyper-parameters are for plain Pyro models; a suite model's come from its "
                             "config (pass theory=True or False)")
        return theory_group(target.source, _as_bundle(args))
    return inferred_theory_group(target, args, theory if isinstance(theory, dict) else None, inferred=inferred)


def log_likelihood_group(metrics: xr.Dataset, name: str, metrics_data: str, obs_index: np.ndarray) -> xr.Dataset:
    """ArviZ's ``log_likelihood`` group from :func:`evaluation_metrics`: ``name`` over (chain, draw, obs).

    The points ``obs_index`` (those of ``observed_data``), so that every ArviZ
    group describes the same points. One chain and one draw: each value is the
    importance-weighted estimate of log p(obs_i) of one (held-out) point, not a
    log-likelihood per posterior draw (see :func:`~ppl_vae.diagnostics.compare.loo`).
    """
    obs_index = np.asarray(obs_index)
    source = metrics["iw_log_likelihood_pointwise"]
    if source.dims != ("eval_obs",):
        raise ValueError(f"metrics.iw_log_likelihood_pointwise must be over eval_obs alone, got {source.dims}")
    # Built from the values at once: a sweep builds this group for every configuration, and
    # selecting, renaming and expanding the DataArray cost several times the data.
    attrs = {**source.attrs,
             "units": "nats per data point",
             "long_name": f"importance-weighted log p({name}) per point, K = {metrics.attrs['iw_samples']} "
                          "guide draws",
             "evaluated_on": metrics_data}
    values = source.values[obs_index][None, None]  # (chain=1, draw=1, obs)
    return xr.Dataset({name: (("chain", "draw", "obs"), values, attrs)},
                      coords={"chain": [0], "draw": [0], "obs": obs_index},
                      attrs={"eval_data_sha256": metrics.attrs["eval_data_sha256"],
                             "iw_samples": metrics.attrs["iw_samples"]})


def diagnose(
    model,
    guide: Callable | Any = None,
    data: Any = None,
    *,
    latent_sites: tuple[str, ...] | None = None,
    observed_site: str | None = None,
    vectorize: str = "auto",
    n_obs: int = 16,
    n_draws: int = 100,
    iw_samples: int = 1000,
    kl_samples: int = 16,
    seed: int = 0,
    theory: bool | dict = True,
    test_data: Any = None,
    data_spec: dict | None = None,
    device: str = "auto",
    progress: bool = True,
    collapse_epsilon: float = COLLAPSE_EPSILON,
    low_information_share: float = LOW_INFORMATION_SHARE,
    converged: bool | dict | None = None,
) -> az.InferenceData:
    """Collapse diagnostics of a trained Pyro model as an :class:`arviz.InferenceData`.

    ``diagnose(model, guide, data)`` for any Pyro model / guide callables;
    ``diagnose(suite_model, data)`` for the suite's models (which carry their guide).

    Parameters
    ----------
    model
        A Pyro model callable, or a suite model (``ppl_vae.models``). The
        ``nn.Module`` objects the callables belong to are moved to an explicit
        ``device`` (in place, as ``nn.Module.to`` does); ``'auto'`` moves nothing.
    guide
        The guide callable (same arguments as the model); for a suite model
        leave it out and pass ``data`` second.
    data
        What the model takes, the training data: a tensor ``(n, ...)``, a tuple
        of the model's positional arguments (tensors with ``n`` rows), or a
        ``DataBundle``. The theory uses all of it; without ``test_data`` every
        other group is on it too.
    latent_sites, observed_site
        Name the sites to diagnose; default: every latent site and the one
        observed site found in the traces. The importance weights always cover
        every latent site.
    vectorize
        How draws are batched: ``'auto'``, ``'repeat'`` (rows repeated; any
        model) or ``'plate'`` (an outer ``pyro.plate`` at dim -2; the suite's
        models). See :mod:`ppl_vae.diagnostics.target`.
    n_obs
        Points (chosen with ``seed``) whose posterior / predictive draws are kept.
    n_draws
        Draws per kept point.
    iw_samples
        K for the importance-weighted log-likelihood (paper: 1000).
    kl_samples
        Draws per point over which the KL of a conditional latent (MHVAE z1
        under p(z1 | z2), z2 under q(z2 | z1)) or a Monte Carlo KL is averaged.
    seed
        Seeds every random draw; the same seed gives the same InferenceData.
    theory
        Add the ``theory`` group (left out, with ``attrs['theory_unavailable']``
        saying why, when no prediction applies). For a plain Pyro pair the
        linear model is read off the traces; a dict gives hyper-parameters the
        traces cannot (``eta_dec`` for a Bernoulli likelihood, ``eta_enc`` for
        a learned prior, ...; see :func:`~ppl_vae.diagnostics.theory_link.inferred_theory_group`).
    test_data
        Held-out points (same form as ``data``): ``metrics``,
        ``log_likelihood``, the draw groups and the collapse statistics are
        computed on them; without it, on ``data`` (``attrs['metrics_data']``
        and ``attrs['diagnosed_data']`` say which).
    data_spec
        How to rebuild ``data`` (default ``data.attrs['spec']`` of a bundle).
    device
        ``'auto'`` (where the parameters already are: nothing moves), ``'cpu'``,
        ``'cuda'`` or ``'cuda:N'`` (the modules are moved there, and stay).
    progress
        Progress bars for the long steps.
    collapse_epsilon
        Nats: a dimension whose mean KL is below it is collapsed
        (``collapse.<s>_collapsed``; ``attrs['collapse_epsilon']``).
    low_information_share
        In (0, 1): a dimension that is not collapsed but carries less than this
        share of its site's total KL is flagged ``collapse.<s>_low_information``
        (``attrs['low_information_share']``).
    converged
        The run's convergence verdict when known: True / False, or the dict
        ``fit`` writes to ``metrics.json`` (``{'converged': ..., 'reason': ...}``);
        stored as ``attrs['converged']`` (1 / 0) and ``attrs['convergence_reason']``.
    """
    if data is None and guide is not None and not callable(guide):
        data, guide = guide, None  # diagnose(suite_model, data)
    if data is None:
        raise ValueError("data is required: diagnose(model, guide, data) or diagnose(suite_model, data)")
    if guide is None and not is_suite_style(model):
        raise ValueError("diagnose(model, guide, data) needs the guide for a plain Pyro model")
    check_sizes(n_obs, n_draws, iw_samples, kl_samples, theory, collapse_epsilon, low_information_share)
    verdict = convergence_attrs(converged)
    if guide is None and hasattr(model, "check_data"):  # the suite's models check their data
        for bundle in (data, test_data):
            if isinstance(bundle, DataBundle):
                model.check_data(bundle)
    torch_device = place(model, guide, device)
    modules = referenced_modules(model) if guide is None else referenced_modules(model, guide)
    with untouched(modules):
        names_from = model.model if guide is None else model
        args = as_model_args(data, names_from, name="data").to(torch_device)
        eval_args = args if test_data is None else as_model_args(test_data, names_from,
                                                                 name="test_data").to(torch_device)
        for label, given in (("data", args), ("test_data", eval_args)):  # NaN rows would be skipped by means
            for arg_name, value in given.row_tensors().items():
                check_finite_values(f"{label} {arg_name!r}", value)
        target = as_target(model, guide, args, latent_sites=latent_sites, observed_site=observed_site,
                           vectorize=vectorize)
        obs_index = select_observations(eval_args.n, n_obs, seed)
        groups = draw_groups(target, eval_args, obs_index, n_draws=n_draws, seed=seed)
        statistics = latent_statistics(target, eval_args, num_samples=kl_samples, seed=seed + 1, progress=progress)
        metrics = evaluation_metrics(target, eval_args, iw_samples=iw_samples, seed=seed + 2, progress=progress)
        idata = assemble(target, args, groups, statistics, metrics, theory=theory, seed=seed, kl_samples=kl_samples,
                         metrics_data="test" if test_data is not None else "train", data_spec=data_spec,
                         device=torch_device, collapse_epsilon=collapse_epsilon,
                         low_information_share=low_information_share, eval_args=eval_args)
    idata.attrs.update(verdict)
    return idata


def convergence_attrs(converged: bool | dict | None) -> dict:
    """``attrs`` entries for the run's convergence verdict (none when it is not known)."""
    reason = None
    if isinstance(converged, dict):
        converged, reason = converged.get("converged"), converged.get("reason")
    if converged is None:
        return {}
    if not isinstance(converged, (bool, np.bool_)):
        raise ValueError(f"converged must be True, False, None or fit's verdict dict, got {converged!r}")
    attrs = {"converged": int(bool(converged))}
    if reason:
        attrs["convergence_reason"] = str(reason)
    return attrs


def check_sizes(n_obs: int, n_draws: int, iw_samples: int, kl_samples: int, theory: bool | dict,
                collapse_epsilon: float = COLLAPSE_EPSILON,
                low_information_share: float = LOW_INFORMATION_SHARE) -> None:
    """``ValueError`` unless the sizes are positive integers and ``theory`` and the thresholds are valid."""
    check_int_range("n_obs", n_obs, 1)
    check_int_range("n_draws", n_draws, 1)
    check_int_range("iw_samples", iw_samples, 1)
    check_int_range("kl_samples", kl_samples, 1)
    check_theory_option(theory)
    check_positive("collapse_epsilon", collapse_epsilon)
    check_share("low_information_share", low_information_share)


def assemble(target: PyroTarget, args: ModelArgs, groups: dict[str, xr.Dataset], statistics: xr.Dataset,
             metrics: xr.Dataset, *, theory: bool | dict, seed: int, kl_samples: int, metrics_data: str,
             data_spec: dict | None, device: torch.device, collapse_epsilon: float = COLLAPSE_EPSILON,
             low_information_share: float = LOW_INFORMATION_SHARE,
             eval_args: ModelArgs | None = None,
             as_inference_data: bool = True) -> az.InferenceData | PlainDiagnostics:
    """One model's ``InferenceData`` from its draw groups, latent statistics and metrics.

    Adds the collapse, theory, log-likelihood and metrics groups and the
    top-level attributes (module docstring); ``groups`` is not modified.
    ``args`` are the training data (theory, provenance); ``eval_args`` the
    points of every other group (default ``args``). ``as_inference_data=False``
    returns the same groups and attributes as a :class:`PlainDiagnostics` (no ArviZ).
    """
    eval_args = args if eval_args is None else eval_args
    groups = dict(groups)
    collapse = collapse_dataset(statistics, target.latent_sites, collapse_epsilon=collapse_epsilon,
                                low_information_share=low_information_share).assign_attrs(
        kl_samples=kl_samples, evaluated_on=metrics_data)
    if eval_args.labels is not None:
        collapse = collapse.assign_coords(label=("obs", eval_args.labels.cpu().numpy()))
    groups["collapse"] = collapse

    inferred = None if target.is_suite_model else infer_linear_setting(target, args)
    theory_note = None
    if theory is not False:
        try:
            groups["theory"] = _theory(target, args, theory, inferred)
        except ValueError as err:  # no prediction for this model: report it, keep the rest
            theory_note = f"no theory prediction: {err}"

    groups["log_likelihood"] = log_likelihood_group(metrics, variable_name(target.observed_site), metrics_data,
                                                    groups["observed_data"]["obs"].values)
    groups["metrics"] = metrics

    hyperparameters = None if inferred is None else {
        k: v for k, v in inferred[0].items() if k in INFERRED_HYPERPARAMETERS}
    attrs = run_attributes(target, args, seed, data_spec, hyperparameters)
    attrs.update(
        metrics_data=metrics_data,
        iw_samples=int(metrics.attrs["iw_samples"]),
        diagnosed_data=metrics_data,
        device=str(device),
        kl_method=collapse.attrs["kl_method"],
        collapse_epsilon=float(collapse_epsilon),
        low_information_share=float(low_information_share),
    )
    if theory_note:
        attrs["theory_unavailable"] = theory_note
    groups = {name: safe_dataset(ds) for name, ds in groups.items()}
    plain = PlainDiagnostics(groups, netcdf_safe_attrs(attrs))
    return plain.to_inference_data() if as_inference_data else plain
