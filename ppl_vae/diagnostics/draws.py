"""Posterior and predictive draws for a subset of data points, as ArviZ groups.

Group layout (``S = n_draws``, one chain):

- ``posterior``: each latent ``s`` drawn from the guide, ``(chain, draw, obs, s_dim)``;
- ``posterior_predictive``: the decoder mean for each of those draws (a
  reconstruction; for a CVAE, a reconstruction of y from q(z | x, y));
- ``prior_predictive``: latents drawn from the model's prior and the decoder
  mean they give (for a CVAE the prior is p(z | x): conditional completions);
- ``observed_data``: what the predictive draws reconstruct;
- ``constant_data``: the CVAE condition x (absent for a VAE / MHVAE).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .._validate import check_int_range
from ..data.bundle import DataBundle
from ._traces import model_device, sample_prior_predictive, seeded, trace_batch


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
    array = values.detach().float().cpu().numpy()
    return xr.DataArray(array, dims=("obs", dim), coords={"obs": obs, dim: np.arange(array.shape[-1])})


def draw_groups(model, data: DataBundle, obs_index: np.ndarray, *, n_draws: int = 100, seed: int = 0) -> dict[str, xr.Dataset]:
    """The posterior / predictive / data groups for the points ``obs_index``.

    Parameters
    ----------
    model
        Follows the model contract.
    data
        The data set; ``obs_index`` indexes its rows.
    obs_index
        ``(n_obs,)`` row indices, kept as the ``obs`` coordinate.
    n_draws
        Draws per point from the guide and from the prior.
    seed
        Seeds both sets of draws.

    Returns
    -------
    dict
        Group name -> Dataset, ready for :class:`arviz.InferenceData`.
    """
    check_int_range("n_draws", n_draws, 1)
    device = model_device(model)
    subset = data.subset(torch.as_tensor(obs_index, dtype=torch.long))
    batch = tuple(t.to(device) for t in subset.tensors())
    with torch.no_grad(), seeded(seed, device):
        traced = trace_batch(model, batch, n_draws)
        prior = sample_prior_predictive(model, batch, n_draws)
    obs_name = model.observed_site
    obs_dim = f"{obs_name}_dim"
    groups = {
        "posterior": xr.Dataset({s: _draws(site.value, f"{s}_dim", obs_index) for s, site in traced.latents.items()}),
        "posterior_predictive": xr.Dataset({obs_name: _draws(traced.decoder_mean, obs_dim, obs_index)}),
        "prior_predictive": xr.Dataset(
            {name: _draws(values, f"{name}_dim", obs_index) for name, values in prior.items()}
        ),
        "observed_data": xr.Dataset({obs_name: _points(traced.observed, obs_dim, obs_index)}),
    }
    if data.is_paired:
        groups["constant_data"] = xr.Dataset({"x": _points(batch[0], "x_dim", obs_index)})
    if data.labels is not None:
        labels = subset.labels.cpu().numpy()
        groups = {name: ds.assign_coords(label=("obs", labels)) for name, ds in groups.items()}
    return groups
