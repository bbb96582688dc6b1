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
from ._traces import PriorDraws, TracedBatch, sample_prior, seeded, trace_batch
from .target import ModelArgs, PyroTarget, bind, observed_argument, variable_name


def select_observations(n: int, n_obs: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n_obs, n)`` distinct points chosen with ``seed``."""
    check_int_range("n_obs", n_obs, 1)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n_obs, n), replace=False))


Variable = tuple[tuple[str, ...], np.ndarray, dict]


def _draws(values: torch.Tensor, dim: str, **attrs) -> Variable:
    """(S, n, d) tensor -> a (chain, draw, obs, dim) variable."""
    return ("chain", "draw", "obs", dim), values.detach().float().cpu().numpy()[None], attrs


def _points(values: torch.Tensor, dim: str) -> Variable:
    """(n, ...) tensor -> an (obs, dim) variable."""
    return ("obs", dim), values.detach().float().cpu().reshape(values.shape[0], -1).numpy(), {}


def _dataset(variables: dict[str, Variable], obs: np.ndarray, labels: np.ndarray | None) -> xr.Dataset:
    """One group: an integer index on every dimension (``obs`` from ``obs``, the others 0, 1, ...).

    ``labels`` (the points' class labels, or None) become a ``label`` coordinate along ``obs``.

    Built in one go: DataArrays with coordinates of their own would each be
    aligned against the others, which costs more than the data here.
    """
    coords = {"obs": obs} if labels is None else {"obs": obs, "label": ("obs", labels)}
    for dims, array, _ in variables.values():
        for dim, size in zip(dims, array.shape):
            coords.setdefault(dim, np.arange(size))
    return xr.Dataset(variables, coords=coords)


def _predictive(name: str, draws: torch.Tensor, mean: torch.Tensor | None) -> dict[str, Variable]:
    """``name`` (draws) and, when the likelihood has one, ``name_mean``."""
    dim = f"{name}_dim"
    variables = {name: _draws(draws, dim, long_name=f"draws of {name} from the likelihood")}
    if mean is not None:
        variables[f"{name}_mean"] = _draws(mean, dim, long_name=f"likelihood mean of {name}")
    return variables


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
    target, args = bind(model, data)
    subset = subset_rows(target, args, obs_index)
    traced, prior = draw_tensors(target, subset, n_draws=n_draws, seed=seed)
    return draw_datasets(target, subset, traced, prior, obs_index)


def subset_rows(target: PyroTarget, args: ModelArgs, obs_index: np.ndarray) -> ModelArgs:
    """The rows ``obs_index`` of ``args``, on the target's device."""
    return args.subset(torch.as_tensor(obs_index, dtype=torch.long, device=target.device()))


def draw_tensors(target: PyroTarget, subset: ModelArgs, *, n_draws: int = 100,
                 seed: int = 0) -> tuple[TracedBatch, PriorDraws]:
    """Guide draws (with predictive draws) and prior draws for the points ``subset``, seeded by ``seed``."""
    check_int_range("n_draws", n_draws, 1)
    with torch.no_grad(), seeded(seed, target.device()):
        traced = trace_batch(target, subset, n_draws, predictive=True)
        prior = sample_prior(target, subset, n_draws)
    return traced, prior


def draw_datasets(target: PyroTarget, subset: ModelArgs, traced: TracedBatch, prior: PriorDraws,
                  obs_index: np.ndarray, like: dict[str, xr.Dataset] | None = None) -> dict[str, xr.Dataset]:
    """The groups of :func:`draw_groups` from one model's draws (every tensor ``(S, n, d)``).

    ``like``: the groups of another configuration of the same group, drawn for the same
    points (``obs_index``, ``subset``): a group whose variables have the same names,
    dimensions, shapes and dtypes is that group with these values (a copy, ~7x cheaper
    than building a Dataset); any other group is built.
    """
    obs_name = variable_name(target.observed_site)
    latent = {variable_name(s): s for s in target.latent_sites}
    groups = {
        "posterior": {v: _draws(traced.latents[s].value, f"{s}_dim") for v, s in latent.items()},
        "posterior_predictive": _predictive(obs_name, traced.predictive, traced.decoder_mean),
        "prior": {v: _draws(prior.latents[s], f"{s}_dim") for v, s in latent.items()},
        "prior_predictive": _predictive(obs_name, prior.predictive, prior.mean),
        "observed_data": {obs_name: _points(traced.observed, f"{obs_name}_dim")},
    }
    observed_arg = observed_argument(subset, traced.observed)
    constants = {variable_name(name): _points(tensor, f"{name}_dim")
                 for name, tensor in subset.row_tensors().items() if name != observed_arg}
    if constants:
        groups["constant_data"] = constants
    labels = None if subset.labels is None else subset.labels.cpu().numpy()
    return {name: _like(like.get(name), variables) if like is not None and _fits(like.get(name), variables)
            else _dataset(variables, obs_index, labels) for name, variables in groups.items()}


def _fits(template: xr.Dataset | None, variables: dict[str, Variable]) -> bool:
    """Whether ``variables`` have ``template``'s names, dimensions, shapes, dtypes and attributes."""
    if template is None or list(template.data_vars) != list(variables):
        return False
    return all(template[name].dims == dims and template[name].shape == array.shape
               and template[name].dtype == array.dtype and template[name].attrs == attrs
               for name, (dims, array, attrs) in variables.items())


def _like(template: xr.Dataset, variables: dict[str, Variable]) -> xr.Dataset:
    """``template`` (coordinates, attributes) holding the values of ``variables``."""
    return template.copy(data={name: array for name, (_, array, _) in variables.items()})
