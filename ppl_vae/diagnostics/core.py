"""``diagnose``: one trained model -> one :class:`arviz.InferenceData`.

Groups (see the module docstrings for each):

============================  ==========================================================
``posterior``                 guide draws of every latent, (chain, draw, obs, <site>_dim)
``posterior_predictive``      decoder mean for each guide draw (reconstructions)
``prior_predictive``          prior draws and their decoder mean (CVAE: completions)
``observed_data``             what is reconstructed (x, or y for a CVAE)
``constant_data``             the CVAE condition x
``collapse``                  per-dimension KL, active units, epsilon-collapse curves
``theory``                    the closed-form / linear-model prediction (+ learned, errors)
``metrics``                   IW log-likelihood, ELBO (beta = 1 and trained), MSE
============================  ==========================================================

Top-level ``attrs``: ``model_config`` and ``data_spec`` (JSON strings), ``family``,
``hyperparameters`` (JSON), ``seed``, ``ppl_vae_version``, ``metrics_data``
('test' or 'train': which points the metrics group was computed on).
"""

from __future__ import annotations

import json
import warnings

import arviz as az
import numpy as np

from .. import __version__
from .._device import resolve_device
from .._validate import check_int_range
from ..data.bundle import DataBundle
from .collapse import collapse_dataset, latent_statistics
from .draws import draw_groups, select_observations
from .io import netcdf_safe_attrs, safe_dataset
from .likelihood import evaluation_metrics
from .theory_link import theory_group


def run_attributes(model, data: DataBundle, seed: int, data_spec: dict | None = None) -> dict:
    """Provenance written on the InferenceData: config, data spec, seed, version."""
    config = model.config
    spec = data_spec if data_spec is not None else data.attrs.get("spec", {"name": data.name})
    attrs = {
        "model_config": json.dumps(config.to_dict(), sort_keys=True),
        "data_spec": json.dumps(spec, sort_keys=True, default=str),
        "family": config.family,
        "hyperparameters": json.dumps(config.hyperparameters(), sort_keys=True),
        "seed": int(seed),
        "ppl_vae_version": __version__,
        "latent_sites": " ".join(model.latent_sites),
        "observed_site": model.observed_site,
    }
    if data.image_shape is not None:
        attrs["image_shape"] = np.asarray(data.image_shape, dtype=np.int64)
    if data.split is not None:
        attrs["split"] = data.split
    return attrs


def build_inference_data(groups: dict, attrs: dict) -> az.InferenceData:
    """``InferenceData`` with custom groups (collapse, theory, metrics) allowed."""
    with warnings.catch_warnings():
        # arviz warns that collapse / theory / metrics are not among its standard groups
        warnings.filterwarnings("ignore", message=".*not .*default.*group.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*group.*not.*", category=UserWarning)
        return az.InferenceData(attrs=attrs, **groups)


def diagnose(
    model,
    data: DataBundle,
    *,
    n_obs: int = 16,
    n_draws: int = 100,
    iw_samples: int = 1000,
    kl_samples: int = 16,
    seed: int = 0,
    theory: bool = True,
    test_data: DataBundle | None = None,
    data_spec: dict | None = None,
    device: str = "auto",
    progress: bool = True,
) -> az.InferenceData:
    """Collapse diagnostics of a trained model as an :class:`arviz.InferenceData`.

    Parameters
    ----------
    model
        A trained model following the model contract (``ppl_vae.models``). It is
        moved to ``device`` (in place, as ``nn.Module.to`` does).
    data
        The training data: collapse statistics and the theory use all of it.
    n_obs
        Points (chosen with ``seed``) whose posterior / predictive draws are kept.
    n_draws
        Draws per kept point.
    iw_samples
        K for the importance-weighted log-likelihood (paper: 1000).
    kl_samples
        Parent draws over which the per-dimension KL of a conditional latent
        (MHVAE z1 under p(z1 | z2), z2 under q(z2 | z1)) is averaged.
    seed
        Seeds every random draw; the same seed gives the same InferenceData.
    theory
        Add the ``theory`` group (left out, with ``attrs['theory_unavailable']``
        saying why, when no closed form covers the configuration).
    test_data
        Held-out points for the ``metrics`` group; without it the metrics are
        computed on ``data`` (``attrs['metrics_data']`` says which).
    data_spec
        How to rebuild ``data`` (default ``data.attrs['spec']``).
    device
        ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    progress
        Progress bars for the long steps.
    """
    check_int_range("n_obs", n_obs, 1)
    check_int_range("n_draws", n_draws, 1)
    check_int_range("iw_samples", iw_samples, 1)
    check_int_range("kl_samples", kl_samples, 1)
    torch_device = resolve_device(device)
    if hasattr(model, "check_data"):  # the suite's models; hand-written Pyro pairs may lack it
        for bundle in (data, test_data):
            if bundle is not None:
                model.check_data(bundle)
    if hasattr(model, "to"):
        model.to(torch_device)
    sites = tuple(model.latent_sites)
    obs_index = select_observations(data.n, n_obs, seed)
    groups = draw_groups(model, data, obs_index, n_draws=n_draws, seed=seed)

    statistics = latent_statistics(model, data, num_samples=kl_samples, seed=seed + 1, progress=progress)
    collapse = collapse_dataset(statistics, sites).assign_attrs(kl_samples=kl_samples)
    if data.labels is not None:
        collapse = collapse.assign_coords(label=("obs", data.labels.cpu().numpy()))
    groups["collapse"] = collapse

    theory_note = None
    if theory:
        try:
            groups["theory"] = theory_group(model, data)
        except ValueError as err:  # no closed form for this configuration: report it, keep the rest
            theory_note = f"no closed-form prediction: {err}"

    eval_data = test_data if test_data is not None else data
    metrics = evaluation_metrics(model, eval_data, iw_samples=iw_samples, seed=seed + 2, progress=progress)
    groups["metrics"] = metrics

    attrs = run_attributes(model, data, seed, data_spec)
    attrs.update(
        metrics_data="test" if test_data is not None else "train",
        iw_samples=int(iw_samples),
        device=str(torch_device),
    )
    if theory_note:
        attrs["theory_unavailable"] = theory_note
    groups = {name: safe_dataset(ds) for name, ds in groups.items()}
    return build_inference_data(groups, netcdf_safe_attrs(attrs))
