"""Posterior, prior and predictive draws for a subset of data points, as ArviZ groups.

The groups follow ArviZ's semantics (``S = n_draws``, one chain; ``<obs>`` is
the observed site's variable, ``<s>`` each latent site's):

- ``posterior``: each latent drawn from the guide, ``(chain, draw, obs, <s>_dim)``;
- ``posterior_predictive``: ``<obs>``, DRAWS from the likelihood p(obs | z) for
  each of those latents, and ``<obs>_mean``, the likelihood's mean (the
  decoder mean: a reconstruction), both ``(chain, draw, obs, <obs>_dim)``;
- ``prior``: each latent drawn from the model's prior (for a conditional
  model, the prior given the condition);
- ``prior_predictive``: ``<obs>`` and ``<obs>_mean`` for those prior latents
  (for a CVAE: conditional completions);
- ``observed_data``: ``<obs>``, the observed values, ``(obs, <obs>_dim)``;
- ``constant_data``: the model's other data arguments (the CVAE condition x),
  absent when there are none.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .._validate import check_int_range
from ._traces import sample_prior, seeded, trace_batch
from .target import bind, observed_argument, variable_name


def select_observations(n: int, n_obs: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n_obs, n)`` distinct points chosen with ``seed``."""
    check_int_range("n_obs", n_obs, 1)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n_obs, n), replace=False))


def _draws(values: torch.Tensor, dim: str, obs: np.ndarray) -> xr.DataArray:
    """(S, n, d) tensor -> (chain, draw, obs, dim) DataArray."""
    array = values.detach().float().cpu().numpy()[None]
    return xr.DataArray(
        array,
        dims=("chain", "draw", "obs", dim),
        coords={"chain": [0], "draw": np.arange(array.shape[1]), "obs": obs, dim: np.arange(array.shape[-1])},
    )


def _points(values: torch.Tensor, dim: str, obs: np.ndarray) -> xr.DataArray:
    array = values.detach().float().cpu().reshape(values.shape[0], -1).numpy()
    return xr.DataArray(array, dims=("obs", dim), coords={"obs": obs, dim: np.arange(array.shape[-1])})


def _predictive(name: str, draws: torch.Tensor, mean: torch.Tensor | None, obs: np.ndarray) -> xr.Dataset:
    """``name`` (draws) and, when the likelihood has one, ``name_mean``."""
    dim = f"{name}_dim"
    variables = {name: _draws(draws, dim, obs).assign_attrs(long_name=f"draws of {name} from the likelihood")}
    if mean is not None:
        variables[f"{name}_mean"] = _draws(mean, dim, obs).assign_attrs(long_name=f"likelihood mean of {name}")
    return xr.Dataset(variables)


def draw_groups(model, data, obs_index: np.ndarray, *, n_draws: int = 100, seed: int = 0) -> dict[str, xr.Dataset]:
    """The posterior / prior / predictive / data groups for the points ``obs_index``.

    Parameters
    ----------
    model
        A suite model or a :class:`~ppl_vae.diagnostics.target.PyroTarget`.
    data
        What the model takes; ``obs_index`` indexes its rows.
    obs_index
        ``(n_obs,)`` row indices, kept as the ``obs`` coordinate.
    n_draws
        Draws per point from the guide and from the prior.
    seed
        Seeds every draw.

    Returns
    -------
    dict
        Group name -> Dataset, ready for :class:`arviz.InferenceData` (module docstring).
    """
    check_int_range("n_draws", n_draws, 1)
    target, args = bind(model, data)
    subset = args.subset(torch.as_tensor(obs_index, dtype=torch.long, device=target.device()))
    with torch.no_grad(), seeded(seed, target.device()):
        traced = trace_batch(target, subset, n_draws, predictive=True)
        prior = sample_prior(target, subset, n_draws)
    obs_name = variable_name(target.observed_site)
    latent = {variable_name(s): s for s in target.latent_sites}
    groups = {
        "posterior": xr.Dataset({v: _draws(traced.latents[s].value, f"{s}_dim", obs_index) for v, s in latent.items()}),
        "posterior_predictive": _predictive(obs_name, traced.predictive, traced.decoder_mean, obs_index),
        "prior": xr.Dataset({v: _draws(prior.latents[s], f"{s}_dim", obs_index) for v, s in latent.items()}),
        "prior_predictive": _predictive(obs_name, prior.predictive, prior.mean, obs_index),
        "observed_data": xr.Dataset({obs_name: _points(traced.observed, f"{obs_name}_dim", obs_index)}),
    }
    observed_arg = observed_argument(subset, traced.observed)
    constants = {variable_name(name): _points(tensor, f"{name}_dim", obs_index)
                 for name, tensor in subset.row_tensors().items() if name != observed_arg}
    if constants:
        groups["constant_data"] = xr.Dataset(constants)
    if subset.labels is not None:
        labels = subset.labels.cpu().numpy()
        groups = {name: ds.assign_coords(label=("obs", labels)) for name, ds in groups.items()}
    return groups
