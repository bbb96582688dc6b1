"""Read guide and prior distributions of every latent site off Pyro traces.

The diagnostics are generic over the model contract: run the guide under
:func:`pyro.poutine.trace`, replay the model on that trace, and every latent
site then carries its variational distribution q (guide trace) and its prior
p (model trace), including learned priors and MHVAE's p(z1 | z2), whose
parameters depend on the sampled parents. A ``pyro.plate("samples", S, dim=-2)``
around both draws S samples per data point in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from torch.distributions import Distribution, Normal


@dataclass(frozen=True)
class LatentSite:
    """Guide and prior of one latent site for a batch, each ``(S, n, d)``."""

    value: torch.Tensor
    q_loc: torch.Tensor
    q_scale: torch.Tensor
    p_loc: torch.Tensor
    p_scale: torch.Tensor
    q_log_prob: torch.Tensor  # (S, n), summed over the event dimension, without the beta factor
    p_log_prob: torch.Tensor  # (S, n)
    q_kl_weight: torch.Tensor  # (S, n) the poutine.scale factor (beta) of the guide site
    p_kl_weight: torch.Tensor  # (S, n) the poutine.scale factor of the model site

    def kl_per_dimension(self) -> torch.Tensor:
        """Analytic KL(q(z_i) || p(z_i)) per dimension, ``(S, n, d)``, in nats."""
        return torch.distributions.kl_divergence(Normal(self.q_loc, self.q_scale), Normal(self.p_loc, self.p_scale))


@dataclass(frozen=True)
class TracedBatch:
    """Everything the diagnostics read from one (guide, replayed model) pass."""

    latents: dict[str, LatentSite]
    decoder_mean: torch.Tensor  # (S, n, d_obs)
    observed: torch.Tensor  # (n, d_obs)
    log_likelihood: torch.Tensor  # (S, n): log p(obs | z), summed over the event dimension


def _normal_of(fn: Distribution, site: str) -> Normal:
    """The Normal under ``Independent`` / masking wrappers."""
    while not isinstance(fn, Normal):
        if not hasattr(fn, "base_dist"):
            raise TypeError(f"site {site!r} must be a (wrapped) Normal distribution, got {type(fn).__name__}")
        fn = fn.base_dist
    return fn


def _as_weight(scale: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(scale, dtype=like.dtype, device=like.device).expand_as(like)


def trace_batch(model, batch: tuple[torch.Tensor, ...], num_samples: int) -> TracedBatch:
    """Draw ``num_samples`` latents per data point from the guide and score them.

    Parameters
    ----------
    model
        An object following the model contract (``model``, ``guide``,
        ``latent_sites``, ``observed_site``).
    batch
        The positional data arguments, each ``(n, d)``.
    num_samples
        S, the number of guide draws per data point.
    """
    with pyro.plate("samples", num_samples, dim=-2):
        guide_trace = poutine.trace(model.guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(*batch)
    latents = {}
    for name in model.latent_sites:
        q_site, p_site = guide_trace.nodes[name], model_trace.nodes[name]
        value = q_site["value"]
        q, p = _normal_of(q_site["fn"], name), _normal_of(p_site["fn"], name)
        q_log_prob = q_site["fn"].log_prob(value).expand(value.shape[:-1])
        p_log_prob = p_site["fn"].log_prob(value).expand(value.shape[:-1])
        latents[name] = LatentSite(
            value=value,
            q_loc=q.loc.expand_as(value),
            q_scale=q.scale.expand_as(value),
            p_loc=p.loc.expand_as(value),
            p_scale=p.scale.expand_as(value),
            q_log_prob=q_log_prob,
            p_log_prob=p_log_prob,
            q_kl_weight=_as_weight(q_site["scale"], q_log_prob),
            p_kl_weight=_as_weight(p_site["scale"], p_log_prob),
        )
    obs_site = model_trace.nodes[model.observed_site]
    decoder = _normal_of(obs_site["fn"], model.observed_site)
    observed = obs_site["value"]
    mean_shape = torch.broadcast_shapes(decoder.loc.shape, observed.shape)
    log_likelihood = obs_site["fn"].log_prob(observed)
    return TracedBatch(
        latents=latents,
        decoder_mean=decoder.loc.expand(mean_shape),
        observed=observed,
        log_likelihood=log_likelihood.expand(mean_shape[:-1]),
    )


def sample_prior_predictive(model, batch: tuple[torch.Tensor, ...], num_samples: int) -> dict[str, torch.Tensor]:
    """Run the model alone (latents from the prior): decoder mean and latent draws.

    For a CVAE the prior is p(z | x), so the decoder mean is a conditional
    completion of y given x; for a VAE / MHVAE it is an unconditional sample.
    Returns ``{site: (S, n, d)}`` plus the observed site's decoder mean.
    """
    with pyro.plate("samples", num_samples, dim=-2):
        model_trace = poutine.trace(model.model).get_trace(*batch)
    draws = {name: model_trace.nodes[name]["value"] for name in model.latent_sites}
    obs_site = model_trace.nodes[model.observed_site]
    decoder = _normal_of(obs_site["fn"], model.observed_site)
    shape = torch.broadcast_shapes(decoder.loc.shape, obs_site["value"].shape)
    draws[model.observed_site] = decoder.loc.expand(num_samples, *shape[-2:])
    return draws


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for a block without disturbing the caller's RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def model_device(model) -> torch.device:
    """The device holding the model's parameters (CPU for a parameter-free model)."""
    if isinstance(model, torch.nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")
