"""Read guide and prior distributions of every latent site off Pyro traces.

The diagnostics are generic over Pyro programs: run the guide under
:func:`pyro.poutine.trace`, replay the model on that trace, and every latent
site then carries its variational distribution q (guide trace) and its prior
p (model trace), including learned priors and conditional priors such as
p(z1 | z2), whose parameters depend on the sampled parents. S draws per data
point come from one vectorised call (:mod:`ppl_vae.diagnostics.target`);
every tensor is then laid out as ``(S, n, d)``: draw, data point, the site's
values per point flattened.

The per-dimension KL is analytic when q and p are Normal in each coordinate
(``Normal``, possibly under ``Independent`` / ``expand`` / ``mask``), and a
one-draw Monte Carlo term ``log q(z_i) - log p(z_i)`` per coordinate when both
factorise over coordinates but are not Normal (averaging over draws and points
estimates the KL). A distribution that does not factorise over coordinates
(e.g. a full-covariance Normal) gives one joint Monte Carlo KL per point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Distribution, Independent, Normal

from .target import ModelArgs, PyroTarget, trace_pair

#: How a site's KL was computed (``attrs['kl_method']`` of the collapse group).
ANALYTIC = "analytic"
MONTE_CARLO = "monte carlo"
MONTE_CARLO_JOINT = "monte carlo, joint (the distributions do not factorise over dimensions)"

_WRAPPERS = (Independent, ExpandedDistribution, MaskedDistribution)


@dataclass(frozen=True)
class LatentDraws:
    """One latent site for a batch: S guide draws per point and what they give.

    Every array is ``(S, n, d)`` or ``(S, n)``; ``d`` is the site's values per
    point (for a joint Monte Carlo KL, ``kl`` has ``d = 1``).
    """

    value: torch.Tensor
    q_mean: torch.Tensor  # E_q[z | parents] per draw
    kl: torch.Tensor  # analytic KL per draw, or the one-draw term log q - log p per coordinate
    kl_method: str
    q_log_prob: torch.Tensor  # (S, n), without the poutine.scale factor (beta)
    p_log_prob: torch.Tensor  # (S, n)
    q_log_prob_beta: torch.Tensor  # (S, n), times the guide site's poutine.scale
    p_log_prob_beta: torch.Tensor  # (S, n), times the model site's poutine.scale


@dataclass(frozen=True)
class TracedBatch:
    """Everything the diagnostics read from one (guide, replayed model) pass over a batch."""

    latents: dict[str, LatentDraws]  # the diagnosed latent sites
    log_weight: torch.Tensor  # (S, n): log p(obs | z) + sum over ALL latent sites of log p - log q (beta = 1)
    log_weight_beta: torch.Tensor  # (S, n): the same with each density times its site's poutine.scale
    decoder_mean: torch.Tensor | None  # (S, n, d_obs), None when the likelihood has no mean
    observed: torch.Tensor  # (n, d_obs)
    predictive: torch.Tensor | None  # (S, n, d_obs) draws from p(obs | z), when asked for


@dataclass(frozen=True)
class PriorDraws:
    """The model run alone (latents from the prior) for a batch, each ``(S, n, d)``."""

    latents: dict[str, torch.Tensor]
    predictive: torch.Tensor  # draws of the observed site
    mean: torch.Tensor | None  # the likelihood's mean


def elementwise(fn: Distribution) -> Distribution | None:
    """The univariate distribution under ``Independent`` / expand / mask wrappers, or None if it is multivariate."""
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    return fn if fn.event_shape == torch.Size() else None


def _per_point(tensor: torch.Tensor, shape: torch.Size, S: int, n: int) -> torch.Tensor:
    """``tensor`` broadcast to a site's full ``shape`` (rows leading) as ``(S, n, d)``."""
    return tensor.expand(shape).reshape(S, n, -1)


def _summed(log_prob: torch.Tensor, batch_shape: torch.Size, S: int, n: int) -> torch.Tensor:
    """A site's log density summed over everything but the draw and the data point: ``(S, n)``."""
    return _per_point(log_prob, batch_shape, S, n).sum(-1)


def _check_local(site: str, shape: torch.Size, S: int, n: int, vectorize: str) -> None:
    rows = tuple(shape[:2]) == (S, n) if vectorize == "plate" else (len(shape) > 0 and shape[0] == S * n)
    if not rows:
        raise ValueError(
            f"site {site!r} has shape {tuple(shape)} for {n} data points: the diagnostics need one value per data "
            "point, i.e. a site inside the plate over the data rows (global sites are not supported)"
        )


def _mean(fn: Distribution, like: torch.Tensor) -> torch.Tensor | None:
    try:
        return fn.mean.expand(like.shape)
    except (NotImplementedError, AttributeError, RuntimeError):
        return None


def _log_probs(site: dict, value: torch.Tensor, S: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A site's log density of ``value`` per point ``(S, n)``, without and with its ``poutine.scale``."""
    log_prob = site["fn"].log_prob(value)
    scaled = torch.as_tensor(site["scale"], dtype=log_prob.dtype, device=log_prob.device) * log_prob
    batch_shape = value.shape[: value.dim() - len(site["fn"].event_shape)]
    return _summed(log_prob, batch_shape, S, n), _summed(scaled, batch_shape, S, n)


def kl_terms(q_fn: Distribution, p_fn: Distribution, value: torch.Tensor, S: int, n: int) -> tuple[torch.Tensor, str]:
    """Per-coordinate KL terms ``(S, n, d)`` of one site and how they were computed (module docstring)."""
    q_el, p_el = elementwise(q_fn), elementwise(p_fn)
    if isinstance(q_el, Normal) and isinstance(p_el, Normal):
        kl = torch.distributions.kl_divergence(Normal(q_el.loc, q_el.scale), Normal(p_el.loc, p_el.scale))
        return _per_point(kl, value.shape, S, n), ANALYTIC
    if q_el is not None and p_el is not None:
        return _per_point(q_el.log_prob(value) - p_el.log_prob(value), value.shape, S, n), MONTE_CARLO
    joint = q_fn.log_prob(value) - p_fn.log_prob(value)
    return _summed(joint, value.shape[: value.dim() - len(q_fn.event_shape)], S, n)[..., None], MONTE_CARLO_JOINT


def _call(target: PyroTarget, batch: ModelArgs, num_samples: int, run: Callable[[tuple], object]):
    """``run(args)`` vectorised over ``num_samples`` draws per row (see :mod:`.target`)."""
    if target.vectorize == "plate":
        with pyro.plate("samples", num_samples, dim=-2):
            return run(batch.args)
    return run(batch.repeated(num_samples))


def _latent(name: str, q_site: dict, p_site: dict, S: int, n: int, vectorize: str) -> LatentDraws:
    value = q_site["value"]
    _check_local(name, value.shape, S, n, vectorize)
    q_fn, p_fn = q_site["fn"], p_site["fn"]
    kl, method = kl_terms(q_fn, p_fn, value, S, n)
    q_mean = _mean(q_fn, value)
    (q_log_prob, q_log_prob_beta), (p_log_prob, p_log_prob_beta) = (_log_probs(site, value, S, n)
                                                                    for site in (q_site, p_site))
    return LatentDraws(
        value=_per_point(value, value.shape, S, n),
        q_mean=_per_point(value if q_mean is None else q_mean, value.shape, S, n),
        kl=kl,
        kl_method=method,
        q_log_prob=q_log_prob,
        p_log_prob=p_log_prob,
        q_log_prob_beta=q_log_prob_beta,
        p_log_prob_beta=p_log_prob_beta,
    )


def _observed(target: PyroTarget, site: dict, S: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(observed values ``(n, d)``, likelihood mean ``(S, n, d)`` or None, full shape) of the observed site."""
    fn = site["fn"]
    shape = fn.batch_shape + fn.event_shape
    _check_local(target.observed_site, shape, S, n, target.vectorize)
    observed = _per_point(site["value"], shape, S, n)[0]
    mean = _mean(fn, site["value"].expand(shape))
    return observed, None if mean is None else _per_point(mean, shape, S, n), shape


def trace_batch(target: PyroTarget, batch: ModelArgs, num_samples: int, *, predictive: bool = False) -> TracedBatch:
    """Draw ``num_samples`` latents per data point from the guide and score them under the model.

    Parameters
    ----------
    target
        The model / guide pair.
    batch
        The data points (``n`` rows).
    num_samples
        S, guide draws per point.
    predictive
        Also draw the observed site from p(obs | z) for each guide draw.
    """
    S, n = num_samples, batch.n
    guide_trace, model_trace = _call(target, batch, S, lambda args: trace_pair(target.model, target.guide, args))
    obs_site = model_trace.nodes[target.observed_site]
    observed, mean, shape = _observed(target, obs_site, S, n)
    log_weight = _summed(obs_site["fn"].log_prob(obs_site["value"]), obs_site["fn"].batch_shape, S, n)
    log_weight_beta = log_weight
    latents = {}
    for name in target.all_latent_sites:
        draws = _latent(name, guide_trace.nodes[name], model_trace.nodes[name], S, n, target.vectorize)
        log_weight = log_weight + draws.p_log_prob - draws.q_log_prob
        log_weight_beta = log_weight_beta + draws.p_log_prob_beta - draws.q_log_prob_beta
        if name in target.latent_sites:
            latents[name] = draws
    draws = _per_point(obs_site["fn"].sample(), shape, S, n) if predictive else None
    return TracedBatch(latents=latents, log_weight=log_weight, log_weight_beta=log_weight_beta, decoder_mean=mean,
                       observed=observed, predictive=draws)


def sample_prior(target: PyroTarget, batch: ModelArgs, num_samples: int) -> PriorDraws:
    """Run the model alone (latents from the prior): latent draws, observed-site draws and the likelihood mean.

    For a conditional model the prior is p(z | condition), so the draws are
    conditional completions; for a VAE / hierarchical VAE, unconditional samples.
    """
    S, n = num_samples, batch.n
    trace = _call(target, batch, S, lambda args: poutine.trace(target.model).get_trace(*args))
    latents = {}
    for name in target.latent_sites:
        value = trace.nodes[name]["value"]
        _check_local(name, value.shape, S, n, target.vectorize)
        latents[name] = _per_point(value, value.shape, S, n)
    obs_site = trace.nodes[target.observed_site]
    _, mean, shape = _observed(target, obs_site, S, n)
    return PriorDraws(latents=latents, predictive=_per_point(obs_site["fn"].sample(), shape, S, n), mean=mean)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for a block without disturbing the caller's RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
