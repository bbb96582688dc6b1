"""Diagnostics of K configurations of one architecture, computed in batched passes.

A sweep trains K configurations of one architecture (different
hyper-parameters and seeds) as one run over a ``configs`` plate
(:class:`~ppl_vae.inference.batched.BatchedModel`). :func:`diagnose_group`
diagnoses them the same way: the K trained models are stacked again into a
``BatchedModel`` whose sites are ``(S, K, n)`` (draws at dim -3, configurations
at dim -2, data points at dim -1). The posterior / prior draws and the latent
statistics run once for all K; the importance-weighted likelihood, which is
memory-bound on a CPU, runs in slices of configurations sized by
:data:`MAX_ELEMENTS` (one at a time for the digits MLP). The results are then
cut into one :class:`arviz.InferenceData` (or
:class:`~ppl_vae.diagnostics.plain.PlainDiagnostics`) per configuration, assembled by the
same code as ``diagnose``.

Random numbers: ``diagnose`` draws from torch's generator seeded with ``seed``;
here every site's standard-normal noise is drawn for ONE configuration, with
the shape and in the order ``diagnose`` draws it, and shared by all K
(:class:`~ppl_vae.diagnostics._traces.SharedNoise`). Configuration k's
diagnostics therefore equal those of its model diagnosed alone with the same
``seed`` (to float round-off: the stacked networks sum in another order), and
do not depend on which other configurations share its group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..data.bundle import DataBundle
from ._isolation import rng_preserved
from ._traces import select_config
from .collapse import COLLAPSE_EPSILON, LOW_INFORMATION_SHARE, statistic_tensors, statistics_dataset
from .core import assemble, check_sizes, place
from .draws import draw_datasets, draw_tensors, select_observations, subset_rows
from .likelihood import BATCH_SIZE, SAMPLE_CHUNK, metrics_dataset, pointwise_metrics
from .plain import PlainDiagnostics
from .target import ModelArgs, PyroTarget, as_model_args, as_target

if TYPE_CHECKING:
    import arviz as az

#: Cap on the floats of one tensor of the likelihood pass (draws x configurations x points x widest
#: layer). That pass is memory-bound on a CPU: one configuration's chunk (100 draws x 256 points x a
#: 128-wide layer, ~13 MB) already fills a core's cache, and stacking 16 of them measured 2.5x slower
#: than one at a time, so on a CPU configurations go through it in slices of this size (which changes
#: no number). On a GPU the batch is what pays.
MAX_ELEMENTS = {"cpu": 2**21, "cuda": 2**27}


class LeadingDimsLinear(nn.Module):
    """A :class:`~ppl_vae.inference.layers.BatchedLinear` that also takes leading draw dimensions.

    ``BatchedLinear`` maps ``(B, in)`` or ``(K, B, in)`` to ``(K, B, out)``; the
    diagnostics' draws add dimensions in front: ``(..., K, B, in) -> (..., K, B, out)``.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() <= 3:
            return self.layer(inputs)
        lead, (n_configs, rows, width) = inputs.shape[:-3], inputs.shape[-3:]
        # (..., K, B, in) -> (K, ... B, in), one batched product per configuration. The output is
        # returned as a view with the configurations outermost in memory, so that the next
        # layer's reshape (after element-wise activations, which keep the layout) copies nothing.
        out = self.layer(inputs.movedim(-3, 0).reshape(n_configs, -1, width))
        return out.unflatten(1, (*lead, rows)).movedim(0, -3)


def _accept_leading_dims(module: nn.Module) -> None:
    """Wrap every ``BatchedLinear`` inside ``module`` (in place) in :class:`LeadingDimsLinear`."""
    from ..inference.layers import BatchedLinear

    for name, child in list(module.named_children()):
        if isinstance(child, BatchedLinear):
            setattr(module, name, LeadingDimsLinear(child))
        else:
            _accept_leading_dims(child)


def batched_target(models: Sequence[Any]) -> PyroTarget:
    """The K models stacked into one :class:`PyroTarget` whose sites are batched ``(K, n)``.

    Raises
    ------
    ValueError
        The models do not share an architecture that can be batched.
    """
    from ..inference.batched import BatchedModel, can_vectorise

    possible, reason = can_vectorise([model.config for model in models], models)
    if not possible:
        raise ValueError(f"these models cannot be diagnosed as one group: {reason}")
    batched = BatchedModel(models)
    _accept_leading_dims(batched)
    template = models[0]
    return PyroTarget(model=batched.model, guide=batched.guide, latent_sites=tuple(template.latent_sites),
                      all_latent_sites=tuple(template.latent_sites), observed_site=template.observed_site,
                      vectorize="plate", modules=(batched,), n_configs=len(models))


def config_slices(n_configs: int, per_config: int, max_elements: int) -> list[slice]:
    """Consecutive slices of at most ``max_elements // per_config`` configurations (at least one each)."""
    size = max(1, max_elements // max(per_config, 1))
    return [slice(start, min(start + size, n_configs)) for start in range(0, n_configs, size)]


def _widest(model: nn.Module, args: ModelArgs) -> int:
    """The most values per point and draw that the model holds at once: its widest layer or data argument."""
    layers = [module.out_features for module in model.modules() if isinstance(module, nn.Linear)]
    return max([*layers, *(int(tensor[0].numel()) for tensor in args.row_tensors().values())])


def group_metrics(models: Sequence[Any], args: ModelArgs, *, iw_samples: int, seed: int,
                  max_elements: int) -> dict[str, torch.Tensor]:
    """:func:`~ppl_vae.diagnostics.likelihood.pointwise_metrics` of each model, ``(K, n)`` each.

    Configurations go through in slices of at most ``max_elements`` floats per
    tensor (see :data:`MAX_ELEMENTS`); a slice of one runs the model itself.
    """
    per_config = min(SAMPLE_CHUNK, iw_samples) * min(BATCH_SIZE, args.n) * _widest(models[0], args)
    parts = []
    for part in config_slices(len(models), per_config, max_elements):
        chosen = list(models[part])
        if len(chosen) == 1:
            with chosen[0].unregistered():  # keep it out of Pyro's parameter store
                alone = pointwise_metrics(as_target(chosen[0]), args, iw_samples=iw_samples, seed=seed)
            parts.append({name: values[None] for name, values in alone.items()})
        else:
            parts.append(pointwise_metrics(batched_target(chosen), args, iw_samples=iw_samples, seed=seed))
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def diagnose_group(
    models: Sequence[Any],
    data: Any,
    *,
    n_obs: int = 16,
    n_draws: int = 100,
    iw_samples: int = 1000,
    kl_samples: int = 16,
    seed: int = 0,
    theory: bool = True,
    test_data: Any = None,
    data_spec: dict | None = None,
    device: str = "auto",
    progress: bool = False,
    max_elements: int | None = None,
    collapse_epsilon: float = COLLAPSE_EPSILON,
    low_information_share: float = LOW_INFORMATION_SHARE,
    as_inference_data: bool = True,
) -> list[az.InferenceData] | list[PlainDiagnostics]:
    """``[diagnose(model, data, ...) for model in models]``, computed in batched passes.

    Parameters
    ----------
    models
        K suite models of one family and architecture (linear, mlp or cnn:
        see :func:`~ppl_vae.inference.batched.can_vectorise`), differing in
        hyper-parameters and weights. They are moved to ``device`` in place, as
        ``diagnose`` moves its model; their weights are not changed.
    data, test_data, n_obs, n_draws, iw_samples, kl_samples, seed, theory, data_spec, device, progress
    collapse_epsilon, low_information_share
        As :func:`~ppl_vae.diagnostics.diagnose` (one ``seed`` for every configuration).
    max_elements
        Cap on the floats of one tensor of the likelihood pass (default
        :data:`MAX_ELEMENTS` for the device): the configurations go through it in
        slices (same numbers).
    as_inference_data
        False: each configuration's groups and attributes as a
        :class:`~ppl_vae.diagnostics.plain.PlainDiagnostics` (ArviZ is not
        imported; what a sweep stacks and writes).

    Returns
    -------
    list of arviz.InferenceData
        Configuration k's equals ``diagnose(models[k], data, ...)`` with the same
        options: the same groups, variables, coordinates and attributes, values to
        float round-off.
    """
    if not models:
        raise ValueError("models must hold at least one model")
    check_sizes(n_obs, n_draws, iw_samples, kl_samples, theory, collapse_epsilon, low_information_share)
    if not isinstance(theory, bool):
        raise ValueError("theory= must be True or False for the suite's models (their config gives the rest)")
    for model in models:
        for bundle in (data, test_data):
            if isinstance(bundle, DataBundle):
                model.check_data(bundle)
    torch_device = place(models[0], None, device)
    for model in models[1:]:
        place(model, None, device)
    args = as_model_args(data, models[0].model, name="data").to(torch_device)
    eval_args = args if test_data is None else as_model_args(test_data, models[0].model,
                                                             name="test_data").to(torch_device)
    if max_elements is None:
        max_elements = MAX_ELEMENTS["cuda" if torch_device.type == "cuda" else "cpu"]
    target = batched_target(models)
    # As diagnose: every group but the theory on the held-out points when there are some.
    obs_index = select_observations(eval_args.n, n_obs, seed)
    subset = subset_rows(target, eval_args, obs_index)
    # The seeds are diagnose's: draws from seed, latent statistics from seed + 1, the likelihood from seed + 2.
    with rng_preserved():
        traced, prior = draw_tensors(target, subset, n_draws=n_draws, seed=seed)
        kl, mean, methods = statistic_tensors(target, eval_args, num_samples=kl_samples, seed=seed + 1,
                                              progress=progress)
    kl, mean = _numpy(kl), _numpy(mean)
    pointwise = _numpy(group_metrics(models, eval_args, iw_samples=iw_samples, seed=seed + 2,
                                     max_elements=max_elements))
    digest = eval_args.digest()
    metrics_data = "test" if test_data is not None else "train"
    idatas, first_draws = [], None
    for k, model in enumerate(models):
        alone = as_target(model)
        # Every configuration's draws are of the same points: configuration 0's groups are the template.
        groups = draw_datasets(alone, subset, select_config(traced, k), select_config(prior, k), obs_index,
                               like=first_draws)
        first_draws = groups if first_draws is None else first_draws
        statistics = statistics_dataset(_config(kl, k), _config(mean, k), methods, kl_samples)
        metrics = metrics_dataset(_config(pointwise, k), iw_samples=iw_samples, seed=seed + 2, digest=digest)
        idatas.append(assemble(alone, args, groups, statistics, metrics, theory=theory, seed=seed,
                               kl_samples=kl_samples, metrics_data=metrics_data, data_spec=data_spec,
                               device=torch_device, collapse_epsilon=collapse_epsilon,
                               low_information_share=low_information_share, eval_args=eval_args,
                               as_inference_data=as_inference_data))
    return idatas


def _config(arrays: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Configuration ``k``'s row of every ``(K, ...)`` array."""
    return {name: values[k] for name, values in arrays.items()}


def _numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in tensors.items()}
