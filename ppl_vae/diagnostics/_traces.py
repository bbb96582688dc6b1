"""Read guide and prior distributions of every latent site off Pyro traces.

The diagnostics are generic over Pyro programs: run the guide under
:func:`pyro.poutine.trace`, replay the model on that trace, and every latent
site then carries its variational distribution q (guide trace) and its prior
p (model trace), including learned priors and conditional priors such as
p(z1 | z2), whose parameters depend on the sampled parents. S draws per data
point come from one vectorised call (:mod:`ppl_vae.diagnostics.target`);
every tensor is then laid out as ``(S, n, d)``: draw, data point, the site's
values per point flattened. A target batched over K configurations
(``PyroTarget.n_configs``, :mod:`ppl_vae.diagnostics.group`) gives
``(S, K, n, d)``: its sites carry the configurations at dim -2 of the batch and
the draws at dim -3, and every configuration reuses the same standard-normal
noise (:class:`SharedNoise`), so that configuration k's draws are those of its
model diagnosed alone with the same seed.

The per-dimension KL is analytic when q and p are Normal in each coordinate
(``Normal``, possibly under ``Independent`` / ``expand`` / ``mask``), and a
one-draw Monte Carlo term ``log q(z_i) - log p(z_i)`` per coordinate when both
factorise over coordinates but are not Normal (averaging over draws and points
estimates the KL). A distribution that does not factorise over coordinates
(e.g. a full-covariance Normal) gives one joint Monte Carlo KL per point. A
site whose prior depends on its own draw through a later guide draw (the
MHVAE's p(z1 | z2), z2 ~ q(z2 | z1); :func:`~._sites.coupled_sites`) gets the
term the objective pays, ``-H(q(z_i)) - log p(z_i | z2)`` at the guide's draws
(the entropy analytic for a Normal q), never a KL with z2 decoupled from z1.

Pyro's semantics (:mod:`._sites`): masked entries (``poutine.mask``,
``Distribution.mask``) add nothing to a log density and their KL terms and
guide means are NaN, so that they stay out of every statistic; subsampled
plates run on their full range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, Independent, Normal

from ..inference.elbo import log_density
from ._sites import coordinate_mask, coupled_sites, full_plates, masked_log_prob
from .target import ModelArgs, PyroTarget, trace_pair

#: How a site's KL was computed (``attrs['kl_method']`` of the collapse group).
ANALYTIC = "analytic"
MONTE_CARLO = "monte carlo"
MONTE_CARLO_JOINT = "monte carlo, joint (the distributions do not factorise over dimensions)"
MONTE_CARLO_COUPLED = ("monte carlo at the guide's draws: -H(q) - log p (the prior depends on a latent the guide "
                       "draws from this one)")

_WRAPPERS = (Independent, ExpandedDistribution, MaskedDistribution)


@dataclasses.dataclass(frozen=True)
class LatentDraws:
    """One latent site for a batch: S guide draws per point and what they give.

    Every array is ``(S, n, d)`` or ``(S, n)`` (``(S, K, n, d)`` / ``(S, K, n)``
    for K configurations); ``d`` is the site's values per point (for a joint
    Monte Carlo KL, ``kl`` has ``d = 1``).
    """

    value: torch.Tensor
    q_mean: torch.Tensor  # E_q[z | parents] per draw
    kl: torch.Tensor  # analytic KL per draw, or the one-draw term log q - log p per coordinate
    kl_method: str
    q_log_prob: torch.Tensor  # (S, n), without the poutine.scale factor (beta)
    p_log_prob: torch.Tensor  # (S, n)
    q_log_prob_beta: torch.Tensor  # (S, n), times the guide site's poutine.scale over the observed site's
    p_log_prob_beta: torch.Tensor  # (S, n), times the model site's poutine.scale over the observed site's


@dataclasses.dataclass(frozen=True)
class TracedBatch:
    """Everything the diagnostics read from one (guide, replayed model) pass over a batch.

    Shapes as written are for one model; K configurations add a ``K`` after ``S``
    (``observed``, the data, is the same for all of them).
    """

    latents: dict[str, LatentDraws]  # the diagnosed latent sites
    log_weight: torch.Tensor  # (S, n): log p(obs | z) + sum over ALL latent sites of log p - log q (beta = 1)
    log_weight_beta: torch.Tensor  # (S, n): the same with each density times its site's poutine.scale
    decoder_mean: torch.Tensor | None  # (S, n, d_obs), None when the likelihood has no mean
    observed: torch.Tensor  # (n, d_obs)
    predictive: torch.Tensor | None  # (S, n, d_obs) draws from p(obs | z), when asked for
    observed_rows: torch.Tensor | None = None  # (n,) bool: rows with an unmasked observed entry (None: all)


@dataclasses.dataclass(frozen=True)
class PriorDraws:
    """The model run alone (latents from the prior) for a batch, each ``(S, n, d)`` (or ``(S, K, n, d)``)."""

    latents: dict[str, torch.Tensor]
    predictive: torch.Tensor  # draws of the observed site
    mean: torch.Tensor | None  # the likelihood's mean


def elementwise(fn: Distribution) -> Distribution | None:
    """The univariate distribution under ``Independent`` / expand / mask wrappers, or None if it is multivariate."""
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    return fn if fn.event_shape == torch.Size() else None


def leading_shape(target: PyroTarget, num_samples: int) -> tuple[int, ...]:
    """The dimensions before the data point: ``(S,)``, or ``(S, K)`` for K configurations."""
    return (num_samples,) if target.n_configs is None else (num_samples, target.n_configs)


def _per_point(tensor: torch.Tensor, shape: torch.Size, lead: tuple[int, ...], n: int) -> torch.Tensor:
    """``tensor`` broadcast to a site's full ``shape`` (rows leading) as ``(*lead, n, d)``."""
    return tensor.expand(shape).reshape(*lead, n, -1)


def _summed(log_prob: torch.Tensor, batch_shape: torch.Size, lead: tuple[int, ...], n: int) -> torch.Tensor:
    """A site's log density summed over everything but the draw (configuration) and the data point: ``(*lead, n)``."""
    return _per_point(log_prob, batch_shape, lead, n).sum(-1)


def _check_local(site: str, shape: torch.Size, lead: tuple[int, ...], n: int, vectorize: str) -> None:
    if vectorize == "plate":
        rows = tuple(shape[: len(lead) + 1]) == (*lead, n)
    else:
        rows = len(shape) > 0 and shape[0] == lead[0] * n
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


def _log_probs(site: dict, value: torch.Tensor, lead: tuple[int, ...], n: int,
               obs_scale=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A site's log density of ``value`` per point ``(*lead, n)``, without and with its KL weight.

    The weight is the site's ``poutine.scale`` over the observed site's
    ``obs_scale`` (a factor on every site, such as a minibatch N / B, is not
    a KL weight). Masked entries add nothing (``poutine.mask``, as in Pyro's traces).
    """
    log_prob = masked_log_prob(site, log_density(site["fn"], value))
    weight = (torch.as_tensor(site["scale"], dtype=log_prob.dtype, device=log_prob.device)
              / torch.as_tensor(obs_scale, dtype=log_prob.dtype, device=log_prob.device))
    scaled = weight * log_prob
    batch_shape = value.shape[: value.dim() - len(site["fn"].event_shape)]
    return _summed(log_prob, batch_shape, lead, n), _summed(scaled, batch_shape, lead, n)


def kl_terms(q_fn: Distribution, p_fn: Distribution, value: torch.Tensor, lead: tuple[int, ...],
             n: int, *, coupled: bool = False) -> tuple[torch.Tensor, str]:
    """Per-coordinate KL terms ``(*lead, n, d)`` of one site and how they were computed (module docstring).

    ``coupled``: p's parameters depend on ``value`` itself (through a later
    guide draw), so each term is taken at the draw: ``-H(q_i) - log p_i(value)``.
    """
    q_el, p_el = elementwise(q_fn), elementwise(p_fn)
    if coupled and q_el is not None and p_el is not None:
        q_term = -q_el.entropy() if isinstance(q_el, Normal) else q_el.log_prob(value)
        term = q_term.expand(value.shape) - p_el.log_prob(value)
        return _per_point(term, value.shape, lead, n), MONTE_CARLO_COUPLED
    if isinstance(q_el, Normal) and isinstance(p_el, Normal) and not coupled:
        kl = torch.distributions.kl_divergence(Normal(q_el.loc, q_el.scale), Normal(p_el.loc, p_el.scale))
        return _per_point(kl, value.shape, lead, n), ANALYTIC
    if q_el is not None and p_el is not None and not coupled:
        return _per_point(q_el.log_prob(value) - p_el.log_prob(value), value.shape, lead, n), MONTE_CARLO
    joint = q_fn.log_prob(value) - p_fn.log_prob(value)
    return _summed(joint, value.shape[: value.dim() - len(q_fn.event_shape)], lead, n)[..., None], MONTE_CARLO_JOINT


def draw(fn: Distribution, configs_dim: int | None = None) -> torch.Tensor:
    """One draw from ``fn``; with ``configs_dim``, the same noise for every configuration.

    A Normal (under ``Independent`` / expand / mask wrappers) is drawn as
    ``loc + eps * scale`` with ``eps`` from ``Tensor.normal_``, exactly as
    ``Normal.rsample`` does, so a lone model and its slice of a batch of
    configurations get the same values from the same generator state.

    Parameters
    ----------
    fn
        The site's distribution, broadcast to its full batch shape.
    configs_dim
        Index (from the right, negative) of the configurations in ``fn.batch_shape``:
        ``eps`` is drawn with that dimension of size 1 and broadcast over it.
        None: a plain draw (any distribution).
    """
    base = elementwise(fn)
    if not isinstance(base, Normal):
        if configs_dim is None:
            return fn.sample()
        raise ValueError(f"the batched diagnostics draw Normal sites only, got {type(base).__name__}")
    shape = fn.batch_shape + fn.event_shape
    noise_shape = list(shape)
    if configs_dim is not None:
        noise_shape[len(fn.batch_shape) + configs_dim] = 1
    eps = torch.empty(noise_shape, dtype=base.loc.dtype, device=base.loc.device).normal_()
    return base.loc.expand(shape) + eps * base.scale.expand(shape)


class SharedNoise(Messenger):
    """Draw every unobserved sample site with :func:`draw`, one noise tensor shared by the configurations.

    Enter it outside the plates, so that each site's distribution is already
    broadcast to its full batch shape when it gets here.
    """

    def __init__(self, configs_dim: int):
        super().__init__()
        self.configs_dim = configs_dim

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or msg["value"] is not None or msg["done"] or site_is_subsample(msg):
            return  # observed, replayed, drawn by an inner handler, or a plate's index
        msg["value"] = draw(msg["fn"], self.configs_dim)


#: Where the configurations sit in a batched target's sites (``BatchedModel``'s plate), and its draws.
CONFIGS_DIM = -2
BATCHED_SAMPLES_DIM = -3


def _call(target: PyroTarget, batch: ModelArgs, num_samples: int, run: Callable[[tuple], object]):
    """``run(args)`` vectorised over ``num_samples`` draws per row (see :mod:`.target`), plates in full."""
    with full_plates():
        if target.n_configs is not None:
            with SharedNoise(CONFIGS_DIM), pyro.plate("samples", num_samples, dim=BATCHED_SAMPLES_DIM):
                return run(batch.args)
        if target.vectorize == "plate":
            with pyro.plate("samples", num_samples, dim=-2):
                return run(batch.args)
        return run(batch.repeated(num_samples))


def _masked_out(terms: torch.Tensor, q_site: dict, p_site: dict, shape: torch.Size, lead: tuple[int, ...],
                n: int) -> torch.Tensor:
    """``terms`` ``(*lead, n, d)`` with NaN where the guide or the model masks the coordinate."""
    masks = [mask for mask in (coordinate_mask(q_site), coordinate_mask(p_site)) if mask is not None]
    if not masks:
        return terms
    keep = masks[0] if len(masks) == 1 else masks[0] & masks[1]
    keep = _per_point(keep, shape, lead, n)
    if keep.shape[-1] != terms.shape[-1]:  # one joint term per point: kept if any coordinate is
        keep = keep.any(-1, keepdim=True)
    return terms.masked_fill(~keep, math.nan)


def _latent(name: str, q_site: dict, p_site: dict, lead: tuple[int, ...], n: int, vectorize: str,
            coupled: bool = False, obs_scale=1.0) -> LatentDraws:
    value = q_site["value"]
    _check_local(name, value.shape, lead, n, vectorize)
    q_fn, p_fn = q_site["fn"], p_site["fn"]
    kl, method = kl_terms(q_fn, p_fn, value, lead, n, coupled=coupled)
    q_mean = _mean(q_fn, value)
    (q_log_prob, q_log_prob_beta), (p_log_prob, p_log_prob_beta) = (_log_probs(site, value, lead, n, obs_scale)
                                                                    for site in (q_site, p_site))
    mean = _per_point(value if q_mean is None else q_mean, value.shape, lead, n)
    return LatentDraws(
        value=_per_point(value, value.shape, lead, n),
        q_mean=_masked_out(mean, q_site, p_site, value.shape, lead, n),
        kl=_masked_out(kl, q_site, p_site, value.shape, lead, n),
        kl_method=method,
        q_log_prob=q_log_prob,
        p_log_prob=p_log_prob,
        q_log_prob_beta=q_log_prob_beta,
        p_log_prob_beta=p_log_prob_beta,
    )


def _observed(target: PyroTarget, site: dict, lead: tuple[int, ...],
              n: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(observed values ``(n, d)``, likelihood mean ``(*lead, n, d)`` or None, full shape) of the observed site."""
    fn = site["fn"]
    shape = fn.batch_shape + fn.event_shape
    _check_local(target.observed_site, shape, lead, n, target.vectorize)
    observed = _per_point(site["value"], shape, lead, n)[(0,) * len(lead)]
    mean = _mean(fn, site["value"].expand(shape))
    return observed, None if mean is None else _per_point(mean, shape, lead, n), shape


def observed_rows(site: dict, lead: tuple[int, ...], n: int) -> torch.Tensor | None:
    """``(n,)`` bool: the rows with at least one unmasked entry of the observed site (None: no mask)."""
    mask = coordinate_mask(site)
    if mask is None:
        return None
    return _per_point(mask, mask.shape, lead, n)[(0,) * len(lead)].any(-1)


def _predictive_draws(target: PyroTarget, fn: Distribution, shape: torch.Size, lead: tuple[int, ...],
                      n: int) -> torch.Tensor:
    """Draws of the observed site from ``fn`` as ``(*lead, n, d)``, shared noise across configurations."""
    configs_dim = None if target.n_configs is None else CONFIGS_DIM
    return _per_point(draw(fn, configs_dim), shape, lead, n)


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
    lead, n = leading_shape(target, num_samples), batch.n
    guide_trace, model_trace = _call(target, batch, num_samples,
                                     lambda args: trace_pair(target.model, target.guide, args))
    obs_site = model_trace.nodes[target.observed_site]
    observed, mean, shape = _observed(target, obs_site, lead, n)
    log_weight = _summed(masked_log_prob(obs_site, log_density(obs_site["fn"], obs_site["value"])),
                         obs_site["fn"].batch_shape, lead, n)
    log_weight_beta = log_weight
    latents = {}
    coupled = coupled_sites([s for s in guide_trace.nodes if s in target.all_latent_sites],
                            [s for s in model_trace.nodes if s in target.all_latent_sites])
    for name in target.all_latent_sites:
        draws = _latent(name, guide_trace.nodes[name], model_trace.nodes[name], lead, n, target.vectorize,
                        coupled=name in coupled, obs_scale=obs_site["scale"])
        log_weight = log_weight + draws.p_log_prob - draws.q_log_prob
        log_weight_beta = log_weight_beta + draws.p_log_prob_beta - draws.q_log_prob_beta
        if name in target.latent_sites:
            latents[name] = draws
    draws = _predictive_draws(target, obs_site["fn"], shape, lead, n) if predictive else None
    return TracedBatch(latents=latents, log_weight=log_weight, log_weight_beta=log_weight_beta, decoder_mean=mean,
                       observed=observed, predictive=draws, observed_rows=observed_rows(obs_site, lead, n))


def sample_prior(target: PyroTarget, batch: ModelArgs, num_samples: int) -> PriorDraws:
    """Run the model alone (latents from the prior): latent draws, observed-site draws and the likelihood mean.

    For a conditional model the prior is p(z | condition), so the draws are
    conditional completions; for a VAE / hierarchical VAE, unconditional samples.
    """
    lead, n = leading_shape(target, num_samples), batch.n
    trace = _call(target, batch, num_samples, lambda args: poutine.trace(target.model).get_trace(*args))
    latents = {}
    for name in target.latent_sites:
        value = trace.nodes[name]["value"]
        _check_local(name, value.shape, lead, n, target.vectorize)
        latents[name] = _per_point(value, value.shape, lead, n)
    obs_site = trace.nodes[target.observed_site]
    _, mean, shape = _observed(target, obs_site, lead, n)
    return PriorDraws(latents=latents, predictive=_predictive_draws(target, obs_site["fn"], shape, lead, n),
                      mean=mean)


#: Fields that hold the data, shared by every configuration (no configuration dimension).
_SHARED_FIELDS = ("observed", "observed_rows")


def select_config(draws, k: int):
    """Configuration ``k`` of a batched pass: every ``(S, K, ...)`` tensor inside ``draws`` as ``(S, ...)``.

    ``draws`` is a :class:`TracedBatch`, :class:`PriorDraws` or :class:`LatentDraws`
    (or a dict of them / of tensors); the slices are views.
    """
    if isinstance(draws, torch.Tensor):
        return draws[:, k]
    if isinstance(draws, dict):
        return {name: select_config(value, k) for name, value in draws.items()}
    if dataclasses.is_dataclass(draws):
        return dataclasses.replace(draws, **{field.name: select_config(getattr(draws, field.name), k)
                                             for field in dataclasses.fields(draws)
                                             if field.name not in _SHARED_FIELDS})
    return draws  # None, or a label such as kl_method


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for a block without disturbing the caller's RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
