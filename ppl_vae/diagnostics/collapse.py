"""Collapse statistics (SPEC section 5) as labelled xarray objects.

:func:`latent_statistics` is the only function here that runs the model: it
returns, per latent site, the per-dimension KL between guide and prior
(analytic for Normal pairs, Monte Carlo otherwise) and the guide mean for
every data point. The rest are pure functions of those
arrays: mean KL, active units, the epsilon-collapse curve, the dimensions
that carry almost no information, and :func:`collapse_dataset`, which
assembles them into the ``collapse`` group.

Entries a program masks (``poutine.mask``) are NaN in the per-point arrays and
stay out of every statistic here (means over points skip them).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .._validate import check_int_range, check_positive
from ._traces import ANALYTIC, seeded, trace_batch
from .target import ModelArgs, PyroTarget, bind

#: Burda et al.'s active-unit threshold, also the paper's epsilon for "collapsed".
AU_THRESHOLD = 0.01
COLLAPSE_EPSILON = 0.01
#: Default share of a site's total KL below which a dimension that is not collapsed still
#: "carries almost no information" (``{s}_low_information``).
LOW_INFORMATION_SHARE = 0.01


def epsilon_grid(num: int = 41, low: float = 1e-4, high: float = 1.0) -> xr.DataArray:
    """Log-spaced KL thresholds (nats) for the epsilon-collapse curve, dim ``epsilon``."""
    values = np.logspace(np.log10(low), np.log10(high), num)
    return xr.DataArray(values, dims="epsilon", coords={"epsilon": values}, attrs={"units": "nats"})


def latent_statistics(
    model,
    data,
    *,
    num_samples: int = 16,
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> xr.Dataset:
    """Per-point, per-dimension KL and guide mean for every latent site.

    The KL is KL(q(z_i | .) || p(z_i | .)) WITHOUT the beta factor: analytic
    when both are Normal per coordinate, else a Monte Carlo estimate over
    ``num_samples`` guide draws (``attrs['kl_method']`` of each ``{site}_kl``
    says which; see :mod:`ppl_vae.diagnostics._traces`). When a site's guide or
    prior depends on a sampled parent (MHVAE: q(z2 | z1), p(z1 | z2)) both the
    KL and the guide mean are averaged over ``num_samples`` draws of the
    parents; for a single Normal latent every draw gives the same value.

    Parameters
    ----------
    model
        A suite model, or a :class:`~ppl_vae.diagnostics.target.PyroTarget`
        (``as_target(model, guide, data)``) for any Pyro model / guide pair.
    data
        What the model takes (tensor, tuple of arguments or ``DataBundle``), ``n`` points.
    num_samples
        Draws per point (parents, or the Monte Carlo KL).
    batch_size
        Points per forward pass.
    seed
        Seeds the draws.

    Returns
    -------
    xr.Dataset
        ``{site}_kl`` and ``{site}_mean``, each ``(obs, {site}_dim)``; KL in nats.
    """
    target, args = bind(model, data)
    kl, mean, methods = statistic_tensors(target, args, num_samples=num_samples, batch_size=batch_size, seed=seed,
                                          progress=progress)
    return statistics_dataset({name: value.numpy() for name, value in kl.items()},
                              {name: value.numpy() for name, value in mean.items()}, methods, num_samples)


def _draws_matter(target, traced) -> bool:
    """False when every draw gives the same KL and guide mean: one latent site with an analytic KL.

    With a single latent site neither q nor p has a sampled parent, so their
    parameters, hence the analytic KL and E_q, are the same for every draw.
    """
    return len(target.all_latent_sites) > 1 or any(site.kl_method != ANALYTIC for site in traced.latents.values())


def statistic_tensors(
    target: PyroTarget,
    args: ModelArgs,
    *,
    num_samples: int = 16,
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    """Per-point, per-dimension KL and guide mean of every latent site, as float64 CPU tensors.

    Returns
    -------
    (dict, dict, dict)
        Site -> KL ``(n, d)``, site -> guide mean ``(n, d)`` (``(K, n, d)`` each for
        a target batched over K configurations), site -> how the KL was computed.
    """
    check_int_range("num_samples", num_samples, 1)
    check_int_range("batch_size", batch_size, 1)
    kl = {name: [] for name in target.latent_sites}
    mean = {name: [] for name in target.latent_sites}
    methods: dict[str, str] = {}
    batches = list(args.batches(batch_size))
    draws = num_samples
    with torch.no_grad(), seeded(seed, target.device()):
        for index, batch in enumerate(tqdm(batches, desc="KL per dimension", disable=not progress, leave=False)):
            if index == 0 and draws > 1:
                # Probe with one draw: where draws cannot matter the other num_samples - 1 are wasted work.
                traced = trace_batch(target, batch, 1)
                if _draws_matter(target, traced):
                    traced = trace_batch(target, batch, draws)
                else:
                    draws = 1
            else:
                traced = trace_batch(target, batch, draws)
            for name, site in traced.latents.items():
                kl[name].append(site.kl.mean(0).double().cpu())
                mean[name].append(site.q_mean.mean(0).double().cpu())
                methods[name] = site.kl_method
    cat = functools.partial(torch.cat, dim=-2)  # along the data points
    return ({name: cat(parts) for name, parts in kl.items()}, {name: cat(parts) for name, parts in mean.items()},
            methods)


def statistics_dataset(kl: dict[str, np.ndarray], mean: dict[str, np.ndarray], methods: dict[str, str],
                       num_samples: int) -> xr.Dataset:
    """:func:`latent_statistics` of one model from its :func:`statistic_tensors` (each ``(n, d)``)."""
    variables = {}
    for name in kl:
        dim = f"{name}_dim"
        method = methods[name] if methods[name] == ANALYTIC else f"{methods[name]} ({num_samples} draws per point)"
        variables[f"{name}_kl"] = xr.DataArray(
            kl[name], dims=("obs", dim),
            attrs={"units": "nats", "long_name": f"KL(q || p) of {name}", "kl_method": method},
        )
        variables[f"{name}_mean"] = xr.DataArray(mean[name], dims=("obs", dim), attrs={"long_name": f"E_q[{name}]"})
    n = next(iter(kl.values())).shape[0]
    ds = xr.Dataset(variables, coords={"obs": np.arange(n)})
    return ds.assign_coords({f"{name}_dim": np.arange(ds.sizes[f"{name}_dim"]) for name in kl})


def kl_per_dimension(model, data, **options) -> xr.Dataset:
    """Per-point per-dimension KL(q || p) of every latent site (without beta).

    A Dataset with one ``(obs, <site>_dim)`` variable per site, in nats; see
    :func:`latent_statistics` for ``options``.
    """
    stats = latent_statistics(model, data, **options)
    return stats[[name for name in stats.data_vars if name.endswith("_kl")]].rename(
        {name: name[: -len("_kl")] for name in stats.data_vars if name.endswith("_kl")}
    )


def active_unit_statistic(guide_mean: xr.DataArray, obs_dim: str = "obs") -> xr.DataArray:
    """Cov_x(E_q[z_i]) per dimension: the variance over data points of the guide mean."""
    return guide_mean.var(obs_dim, ddof=1).rename("active_unit_statistic")


def active_units(guide_mean: xr.DataArray, threshold: float = AU_THRESHOLD, obs_dim: str = "obs") -> xr.DataArray:
    """Number of active units, #{i : Cov_x(E_q[z_i]) > threshold} (Burda et al.)."""
    check_positive("threshold", threshold)
    return (active_unit_statistic(guide_mean, obs_dim) > threshold).sum().rename("active_units")


def principal_active_units(guide_mean: xr.DataArray, threshold: float = AU_THRESHOLD,
                           obs_dim: str = "obs") -> xr.DataArray:
    """Number of eigenvalues of Cov_x(E_q[z]) above ``threshold``: active units in the principal basis.

    :func:`active_units` counts along the latent axes, which is right when the
    loss singles the axes out (a learned diagonal variance aligns the collapsed
    modes with them). With a fixed isotropic encoder variance the loss is
    rotation invariant in latent space, the active modes spread over every
    axis and the axis count reads every dimension as active; this count does
    not depend on the basis.

    Parameters
    ----------
    guide_mean
        ``(obs, dim)`` guide means E_q[z | x].
    """
    check_positive("threshold", threshold)
    values = np.asarray(guide_mean.transpose(obs_dim, ...).values, dtype=np.float64)
    values = values[~np.isnan(values).any(axis=1)]  # masked points
    values = values - values.mean(axis=0) if len(values) else values
    covariance = values.T @ values / max(values.shape[0] - 1, 1)
    return xr.DataArray(int((np.linalg.eigvalsh(covariance) > threshold).sum()), name="principal_active_units")


def epsilon_collapse_curve(kl: xr.DataArray, epsilons: xr.DataArray | None = None) -> xr.DataArray:
    """Fraction of (data point, dimension) pairs whose KL is below each epsilon.

    Parameters
    ----------
    kl
        Per-point per-dimension KL, any dims (every entry is one pair).
    epsilons
        Thresholds (dim ``epsilon``); default :func:`epsilon_grid`.

    Returns
    -------
    xr.DataArray
        ``(epsilon,)``, values in [0, 1], non-decreasing in epsilon.
    """
    epsilons = epsilon_grid() if epsilons is None else epsilons
    flat = np.asarray(kl, dtype=np.float64).ravel()
    flat = np.sort(flat[~np.isnan(flat)])  # masked pairs are NaN
    below = np.searchsorted(flat, np.asarray(epsilons), side="left") / max(flat.size, 1)
    return xr.DataArray(below, dims="epsilon", coords={"epsilon": np.asarray(epsilons)}, name="collapse_fraction")


def collapsed_dimensions(kl: xr.DataArray, epsilon: float = COLLAPSE_EPSILON, obs_dim: str = "obs") -> xr.DataArray:
    """True for each dimension whose data-mean KL is below ``epsilon`` (epsilon-collapsed)."""
    check_positive("epsilon", epsilon)
    return (kl.mean(obs_dim) < epsilon).rename("collapsed")


def check_share(name: str, share: float) -> float:
    """``share`` if it is a number in (0, 1), else ``ValueError`` naming ``name``."""
    if isinstance(share, bool) or not isinstance(share, (int, float, np.floating)) or not 0 < float(share) < 1:
        raise ValueError(f"{name} must be a number in (0, 1) (a share of the total KL), got {share!r}")
    return float(share)


def kl_share(kl_mean: xr.DataArray) -> xr.DataArray:
    """Each dimension's share of the site's total mean KL, ``(dim,)``, in [0, 1] (0 when the total is 0)."""
    total = float(kl_mean.sum())
    return (kl_mean / total if total > 0 else xr.zeros_like(kl_mean)).rename("kl_share")


def low_information_dimensions(kl_mean: xr.DataArray, collapsed: xr.DataArray,
                               share: float = LOW_INFORMATION_SHARE) -> xr.DataArray:
    """True for each dimension that is not collapsed yet carries less than ``share`` of the site's total KL.

    Parameters
    ----------
    kl_mean
        ``(dim,)`` mean KL per dimension, nats.
    collapsed
        ``(dim,)`` bool, the epsilon-collapsed dimensions (:func:`collapsed_dimensions`).
    share
        In (0, 1): a fraction of ``kl_mean.sum()``.
    """
    share = check_share("low_information_share", share)
    return ((kl_share(kl_mean) < share) & ~collapsed).rename("low_information")


def collapse_dataset(
    statistics: xr.Dataset,
    sites: tuple[str, ...],
    *,
    epsilons: xr.DataArray | None = None,
    au_threshold: float = AU_THRESHOLD,
    collapse_epsilon: float = COLLAPSE_EPSILON,
    low_information_share: float = LOW_INFORMATION_SHARE,
) -> xr.Dataset:
    """Assemble the ``collapse`` group from :func:`latent_statistics`.

    For each site ``s``: ``s_kl`` (obs, s_dim), ``s_kl_mean`` (s_dim),
    ``s_au_stat`` (s_dim), ``s_active_units`` (), ``s_principal_active_units`` (),
    ``s_collapsed`` (s_dim, bool: mean KL below ``collapse_epsilon`` nats),
    ``s_n_collapsed`` (), ``s_kl_share`` (s_dim: share of the site's total KL),
    ``s_low_information`` (s_dim, bool: not collapsed but below
    ``low_information_share`` of the total), ``s_n_low_information`` (),
    ``s_collapse_fraction`` (epsilon). Attributes ``collapse_epsilon`` and
    ``low_information_share`` record the two thresholds.
    """
    check_positive("collapse_epsilon", collapse_epsilon)
    check_share("low_information_share", low_information_share)
    epsilons = epsilon_grid() if epsilons is None else epsilons
    out = {}
    for s in sites:
        kl, mean = statistics[f"{s}_kl"], statistics[f"{s}_mean"]
        collapsed = collapsed_dimensions(kl, collapse_epsilon)
        out[f"{s}_kl"] = kl
        out[f"{s}_kl_mean"] = kl.mean("obs").assign_attrs(units="nats", long_name=f"mean KL of {s} per dimension")
        out[f"{s}_au_stat"] = active_unit_statistic(mean).assign_attrs(long_name="Cov_x(E_q[z_i])")
        out[f"{s}_active_units"] = active_units(mean, au_threshold)
        out[f"{s}_principal_active_units"] = principal_active_units(mean, au_threshold).assign_attrs(
            long_name="eigenvalues of Cov_x(E_q[z]) above the AU threshold (basis-free active units)")
        out[f"{s}_collapsed"] = collapsed
        out[f"{s}_n_collapsed"] = collapsed.sum().rename(None)
        kl_mean = out[f"{s}_kl_mean"]
        out[f"{s}_kl_share"] = kl_share(kl_mean).assign_attrs(long_name=f"share of the total KL of {s}")
        low = low_information_dimensions(kl_mean, collapsed, low_information_share)
        out[f"{s}_low_information"] = low.assign_attrs(
            long_name=f"not collapsed, but less than {low_information_share:g} of the total KL of {s}")
        out[f"{s}_n_low_information"] = low.sum().rename(None)
        out[f"{s}_collapse_fraction"] = epsilon_collapse_curve(kl, epsilons).assign_attrs(
            long_name=f"fraction of (point, dimension) pairs of {s} with KL < epsilon"
        )
    ds = xr.Dataset(out)
    ds["epsilon"].attrs["units"] = "nats"
    methods = {s: str(statistics[f"{s}_kl"].attrs.get("kl_method", ANALYTIC)) for s in sites}
    return ds.assign_attrs(
        au_threshold=au_threshold,
        collapse_epsilon=float(collapse_epsilon),
        low_information_share=float(low_information_share),
        latent_sites=" ".join(sites),
        kl_method=json.dumps(methods, sort_keys=True),
        kl_note="KL(q || p) per dimension, without the beta factor; kl_method says, per site, whether it is "
                "analytic (Normal q and p) or a Monte Carlo estimate",
    )
