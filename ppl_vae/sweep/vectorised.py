"""K configurations of one architecture trained in one SVI run.

The K models share their structure and differ only in scalar hyper-parameters
(KL weights, prior and decoder stds) and in their initial weights (each drawn
from its own seed). :class:`BatchedModel` stacks their networks
(:func:`~ppl_vae.sweep.layers.stack_modules`) and runs the family's own
``model`` / ``guide`` code inside a plate over configurations::

    with pyro.plate("configs", K, dim=-2):      # beta: (K, 1); stds: (K, 1, 1)
        Family.model(batched, *batch)           # pyro.plate("data", B, dim=-1) inside

so the maths is, by construction, that of the ordinary model: every latent and
observed site gets batch shape ``(K, B)``, ``poutine.scale`` receives a
``(K, 1)`` tensor and each Normal its per-configuration std. Gradients do not
mix configurations (the loss is a sum of K independent terms and Adam acts
element-wise), so one run trains K independent models.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn

from ppl_vae._validate import check_int_range, check_positive
from ppl_vae.sweep.elbo import per_config_loss
from ppl_vae.sweep.layers import is_stackable, stack_modules, unstack_into

#: Families whose guide is mean-field (each latent's model parents are drawn
#: before it in the guide), so the KL can be taken in closed form.
MEAN_FIELD_FAMILIES = ("vae", "cvae")


def _hyper_shape(name: str) -> tuple[int, ...]:
    """Trailing shape of a per-configuration hyper-parameter tensor.

    KL weights scale a site's ``(K, B)`` log-density: ``(K, 1)``. Stds are a
    Normal's scale against ``(K, B, dim)`` locations: ``(K, 1, 1)``.
    """
    return (1,) if name.startswith("beta") else (1, 1)


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
    if configs[0].arch == "cnn":
        return False, "arch='cnn' has no batched layers"
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
        self._mean_field = bool(getattr(template, "mean_field", self.family in MEAN_FIELD_FAMILIES))
        self.n_configs = len(models)
        self._model_fn = type(template).model
        self._guide_fn = type(template).guide
        for name, _ in template.named_children():
            self.add_module(name, stack_modules([getattr(model, name) for model in models]))
        self.config = BatchedConfig([model.config for model in models], device=template.device)
        self.latent_sites = template.latent_sites
        self.observed_site = template.observed_site

    @property
    def mean_field(self) -> bool:
        """Closed-form KL allowed (the family's own flag, as ``fit`` reads it)."""
        return self._mean_field

    def _register(self) -> None:
        """The family code registers parameters with Pyro; here torch.optim owns them."""

    def prior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CVAE p(z|x) as ``(loc, scale)``: ``(K, B, latent_dim)`` each.

        The family's version fills the standard prior's scale with a Python
        float; here ``eta_enc`` is a ``(K, 1, 1)`` tensor, so it broadcasts.
        """
        if getattr(self, "prior", None) is not None:
            return self.prior(x)
        loc = x.new_zeros((self.n_configs,) + x.shape[:-1] + (self.config.latent_dim,))
        return loc, self.config.eta_enc.expand_as(loc)

    def _run(self, fn, batch: tuple[torch.Tensor, ...]) -> None:
        with pyro.plate("configs", self.n_configs, dim=-2):
            fn(self, *batch)

    def model(self, *batch: torch.Tensor) -> None:
        """The family's generative model, batched over configurations."""
        self._run(self._model_fn, batch)

    def guide(self, *batch: torch.Tensor) -> None:
        """The family's variational posterior, batched over configurations."""
        self._run(self._guide_fn, batch)

    def loss(self, *batch: torch.Tensor) -> torch.Tensor:
        """``(K,)`` negative ELBO per configuration, summed over the batch (one sample; closed-form KL
        when mean-field)."""
        return per_config_loss(self.model, self.guide, *batch, mean_field=self.mean_field)

    def unstack_into(self, models: Sequence[nn.Module]) -> None:
        """Copy slice k of every network into ``models[k]``."""
        for name, child in self.named_children():
            unstack_into(child, [getattr(model, name) for model in models])


@dataclasses.dataclass(frozen=True)
class VectorisedFit:
    """What one batched run returns.

    Attributes
    ----------
    loss_history
        ``(K, steps)`` float64 numpy array: per-sample negative beta-ELBO of
        the batch for each configuration at each step (nats per sample, as
        ``fit``'s ``loss``).
    wall_time
        Seconds spent in the training loop (device synchronised).
    steps
        Optimisation steps taken.
    """

    loss_history: np.ndarray
    wall_time: float
    steps: int


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


OPTIMIZERS = ("adam", "clipped_adam")


def _make_optimizer(name: str, parameters, lr: float, clip_norm: float | None) -> torch.optim.Optimizer:
    """As :func:`ppl_vae.inference.fit`: torch Adam, or Pyro's element-wise clipped Adam."""
    if name == "clipped_adam":
        # Element-wise clipping never mixes configurations, so Pyro's optimiser serves as is.
        return ClippedAdam(parameters, lr=lr, clip_norm=10.0 if clip_norm is None else clip_norm)
    return torch.optim.Adam(parameters, lr=lr)


def train_batched(batched: BatchedModel, tensors: Sequence[torch.Tensor], *, steps: int | None = None,
                  epochs: int | None = None, batch_size: int | None = None, lr: float = 1e-3,
                  optimizer: str = "adam", lr_decay: float = 1.0, clip_norm: float | None = None,
                  seed: int = 0) -> VectorisedFit:
    """Train a :class:`BatchedModel` like :func:`ppl_vae.inference.fit` trains one model.

    The options mean what they mean for ``fit``, so that configuration k of a
    sweep and a separate ``fit`` with the same seed see the same batches, the
    same learning-rate schedule and the same per-sample loss scaling. Only the
    Monte Carlo noise differs (configurations draw it jointly, independently).

    Parameters
    ----------
    batched
        The K stacked models (already on the data's device).
    tensors
        ``(x,)`` or ``(x, y)``, ``(n, d)`` each, on the parameters' device.
    steps, epochs
        Length of training, exactly one of them; an epoch is ``ceil(n / batch_size)`` steps.
    batch_size
        Rows per step, shared by all configurations; None: full batch.
        Batches are index draws on the device, one permutation per epoch from
        a generator seeded with ``seed`` (as ``fit``'s ``BatchSampler``).
    lr, optimizer, lr_decay
        Learning rate; ``'adam'`` or ``'clipped_adam'``; per-step exponential
        decay (lr at step t = ``lr * lr_decay**t``).
    clip_norm
        ``'adam'``: clip each configuration's own global gradient norm
        (:func:`clip_per_config_`); ``'clipped_adam'``: element-wise bound.
    seed
        Seeds batch order and the guide's noise.

    Returns
    -------
    VectorisedFit
    """
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps (>= 1) or epochs (>= 1)")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, got {optimizer!r}")
    lr = check_positive("lr", lr)
    lr_decay = check_positive("lr_decay", lr_decay)
    if lr_decay > 1.0:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    clip_norm = None if clip_norm is None else check_positive("clip_norm", clip_norm)
    n = tensors[0].shape[0]
    device = tensors[0].device
    batch_size = n if batch_size is None else min(check_int_range("batch_size", batch_size, 1), n)
    per_epoch = math.ceil(n / batch_size)
    total = check_int_range("steps", steps, 1) if steps is not None else check_int_range("epochs", epochs, 1) * per_epoch

    pyro.set_rng_seed(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    params = [p for p in batched.parameters() if p.requires_grad]
    optim = _make_optimizer(optimizer, params, lr, clip_norm)
    history = torch.empty(total, batched.n_configs, device=device)

    order = None
    synchronise(device)
    start = time.perf_counter()
    with pyro.validation_enabled(False):
        for step in range(total):
            if batch_size == n:
                batch = tuple(tensors)
            else:
                position = step % per_epoch
                if position == 0:
                    order = torch.randperm(n, generator=generator, device=device)
                index = order[position * batch_size:(position + 1) * batch_size]
                batch = tuple(t[index] for t in tensors)
            for group in optim.param_groups:
                group["lr"] = lr * lr_decay**step
            optim.zero_grad(set_to_none=True)
            # Per-sample loss of each configuration, as fit scales it.
            losses = batched.loss(*batch) / batch[0].shape[0]
            losses.sum().backward()
            if clip_norm is not None and optimizer == "adam":
                clip_per_config_(params, clip_norm)
            optim.step()
            history[step] = losses.detach()
    synchronise(device)
    wall_time = time.perf_counter() - start
    return VectorisedFit(loss_history=history.T.double().cpu().numpy(), wall_time=wall_time, steps=total)


def synchronise(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU) so wall times are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
