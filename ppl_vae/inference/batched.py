"""K configurations of one architecture as one Pyro model: the engine's batched form.

The K models share their structure and differ only in scalar hyper-parameters
(KL weights, prior and decoder stds) and in their initial weights (each drawn
from its own seed). :class:`BatchedModel` stacks their networks
(:func:`~ppl_vae.inference.layers.stack_modules`) and runs the family's own
``model`` / ``guide`` code inside a plate over configurations::

    with pyro.plate("configs", K, dim=-2):      # beta: (K, 1); stds: (K, 1, 1)
        Family.model(batched, *batch)           # pyro.plate("data", B, dim=-1) inside

so the maths is, by construction, that of the ordinary model: every latent and
observed site gets batch shape ``(K, B)`` (the batch is shared ``(B, d)`` rows, or
``(K, B, d)`` when each configuration draws its own minibatch), ``poutine.scale`` receives a
``(K, 1)`` tensor and each Normal its per-configuration std. Gradients do not
mix configurations (the loss is a sum of K independent terms and Adam acts
element-wise), so one run trains K independent models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import torch
from torch import nn

from ppl_vae.inference.layers import is_stackable, stack_modules, unstack_into


def _hyper_shape(name: str) -> tuple[int, ...]:
    """Trailing shape of a per-configuration hyper-parameter tensor.

    KL weights and their controls (schedules, free-bits floors) act on a site's
    ``(K, B)`` log-density: ``(K, 1)``. Stds are a
    Normal's scale against ``(K, B, dim)`` locations: ``(K, 1, 1)``.
    """
    return (1,) if name.startswith(("beta", "kl_", "free_bits")) else (1, 1)


class BatchedConfig:
    """A model config whose hyper-parameters are per-configuration tensors.

    Attribute access falls through to the first configuration for structural
    fields (dimensions, architecture); the names in ``hyperparameters()`` are
    ``(K, 1)`` (KL weights) or ``(K, 1, 1)`` (stds) tensors.
    """

    def __init__(self, configs: Sequence[Any], device: torch.device, dtype: torch.dtype = torch.float32):
        self._template = configs[0]
        self._hyper = {
            name: torch.tensor([config.hyperparameters()[name] for config in configs], dtype=dtype,
                               device=device).reshape(len(configs), *_hyper_shape(name))
            for name in configs[0].hyperparameters()
        }

    def __getattr__(self, name: str) -> Any:
        hyper = self.__dict__.get("_hyper", {})
        if name in hyper:
            return hyper[name]
        return getattr(self.__dict__["_template"], name)


def structural_fields(config: Any) -> dict[str, Any]:
    """The fields that fix a model's architecture: everything but its hyper-parameters."""
    hyper = set(config.hyperparameters())
    return {key: value for key, value in config.to_dict().items() if key not in hyper}


def can_vectorise(configs: Sequence[Any], models: Sequence[nn.Module] | None = None) -> tuple[bool, str]:
    """Whether ``configs`` can be trained as one batched model, and why not if not.

    Parameters
    ----------
    configs
        Model configs.
    models
        Optionally, built models for them (checked for batchable layers).

    Returns
    -------
    (bool, str)
        ``(True, '')`` or ``(False, reason)``.
    """
    if not configs:
        return False, "no configurations"
    first = structural_fields(configs[0])
    for k, config in enumerate(configs[1:], start=1):
        other = structural_fields(config)
        if other != first:
            differing = sorted(key for key in set(first) | set(other) if first.get(key) != other.get(key))
            return False, f"configuration {k} differs from configuration 0 in {', '.join(differing)}"
    if models is not None and not all(is_stackable(model) for model in models):
        return False, "the networks hold layers that cannot be batched over configurations"
    return True, ""


class BatchedModel(nn.Module):
    """K models of one family trained as one: stacked networks, per-configuration hyper-parameters.

    Parameters
    ----------
    models
        K built models (``ppl_vae.models.build_model``) of one family and
        architecture; their current weights become the initial slices.

    Notes
    -----
    ``model`` and ``guide`` take the same ``*batch`` as the ordinary models
    and give each site batch shape ``(K, B)``. The family's code reads
    ``self.config`` (here a :class:`BatchedConfig`) and the networks by their
    attribute names (here stacked copies), so it runs unchanged.
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        template = models[0]
        self.family = template.family
        self.analytic_kl_sites = template.analytic_kl_sites
        self.kl_levels = template.kl_levels
        self.n_configs = len(models)
        self._model_fn = type(template).model
        self._guide_fn = type(template).guide
        for name, _ in template.named_children():
            self.add_module(name, stack_modules([getattr(model, name) for model in models]))
        self.config = BatchedConfig([model.config for model in models], device=template.device)
        self.latent_sites = template.latent_sites
        self.observed_site = template.observed_site

    def _register(self) -> None:
        """The family code registers parameters with Pyro; here torch.optim owns them."""

    def prior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CVAE p(z|x) as ``(loc, scale)``: ``(K, B, latent_dim)`` each.

        The family's version fills the standard prior's scale with a Python
        float; here ``eta_enc`` is a ``(K, 1, 1)`` tensor, so it broadcasts.
        """
        if getattr(self, "prior", None) is not None:
            return self.prior(x)
        rows = x.shape[-2]  # x is shared (B, d) or per configuration (K, B, d)
        loc = x.new_zeros((self.n_configs, rows, self.config.latent_dim))
        return loc, self.config.eta_enc.expand_as(loc)

    def _run(self, fn, batch: tuple[torch.Tensor, ...]) -> None:
        device = batch[0].device
        with pyro.plate("configs", self.n_configs, dim=-2, device=device):
            fn(self, *batch)

    def model(self, *batch: torch.Tensor) -> None:
        """The family's generative model, batched over configurations."""
        self._run(self._model_fn, batch)

    def guide(self, *batch: torch.Tensor) -> None:
        """The family's variational posterior, batched over configurations."""
        self._run(self._guide_fn, batch)

    def unstack_into(self, models: Sequence[nn.Module]) -> None:
        """Copy slice k of every network into ``models[k]``."""
        for name, child in self.named_children():
            unstack_into(child, [getattr(model, name) for model in models])


def clip_per_config_(parameters: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each configuration's gradient to total norm ``max_norm`` (in place).

    The configuration is the leading dimension of every parameter; the norm is
    taken over all parameters' slices of one configuration, as
    ``torch.nn.utils.clip_grad_norm_`` would for that model alone.

    Returns
    -------
    torch.Tensor
        ``(K,)`` gradient norms before clipping.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    n_configs = grads[0].shape[0]
    squared = sum(g.reshape(n_configs, -1).pow(2).sum(1) for g in grads)
    norms = squared.sqrt()
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.reshape(n_configs, *([1] * (g.dim() - 1))))
    return norms

