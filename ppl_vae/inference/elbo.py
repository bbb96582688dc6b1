"""The suite's one ELBO: the negative ELBO of each configuration, from Pyro traces.

Every training run (K = 1 or a batch of K configurations) and every benchmark of
ours computes its loss here. The estimator is Pyro's, term by term: the guide is
traced, the model replayed against it, and each sample site contributes

- observed site:        ``-scale * log p(obs | ...)``
- latent site, analytic: ``scale_q * KL(q(z|...) || p(z|...))`` (as ``TraceMeanField_ELBO``)
- latent site, sampled:  ``scale_q * log q(z) - scale_p * log p(z)`` at the guide's draw (as ``Trace_ELBO``)
- guide-only (auxiliary) site: ``scale_q * log q(z)``

each masked as Pyro masks it (``poutine.mask``: zero where the site's mask is False).
A subsampled plate's rows are the guide's, replayed into the model, and its scale
``N / B`` is part of each site's scale, as in Pyro.

but the sum runs over the ``data`` plate only, leaving the ``configs`` plate
(``dim=-2``) intact, so a batch of K models yields K losses from one graph.

Which latent sites may take the closed-form KL is a property of the guide, and the
rule lives here (:func:`site_estimators`): a site is analytic when its model
distribution depends on no latent the guide draws after it. The model classes
declare those sites (``analytic_kl_sites``): the VAE and CVAE ``z``; the MHVAE ``z2``
(p(z2) has no parents, so KL(q(z2|z1) || p(z2)) is exact given the sampled z1) but
not ``z1`` (p(z1|z2) depends on z2, which the bottom-up guide draws after z1).

Two training variants act on the latent terms (issue: KL schedules and free bits):
``kl_multipliers`` multiplies a site's term by a per-configuration weight (a KL
warm-up or cyclical schedule at this step, on top of the site's beta), and
``free_bits`` replaces a site's KL by ``B * sum_j max(lambda, mean_b KL_bj)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import math

import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.distributions.kl import kl_divergence
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Normal

from ppl_vae._shapes import broadcast_shapes  # torch.broadcast_shapes imports sympy on first use (~0.5 s)
from ppl_vae.inference.free_bits import free_bits_kl

ANALYTIC = "analytic"
SAMPLED = "sampled"
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def site_estimators(model) -> dict[str, str]:
    """Estimator of each latent site of a suite model: ``'analytic'`` KL or ``'sampled'``.

    Parameters
    ----------
    model
        Anything with ``latent_sites`` (guide order) and ``analytic_kl_sites``
        (the sites whose model factor has no guide-later parent).

    Returns
    -------
    dict
        Site name -> ``'analytic'`` or ``'sampled'``.
    """
    analytic = set(getattr(model, "analytic_kl_sites", ()))
    return {site: ANALYTIC if site in analytic else SAMPLED for site in model.latent_sites}


def estimator_name(estimators: Mapping[str, str]) -> str:
    """A provenance label: the Pyro estimator these site choices reproduce.

    ``'TraceMeanField_ELBO'`` (every KL analytic), ``'Trace_ELBO'`` (every term
    sampled), or ``'Trace_ELBO+analytic_KL(z2)'`` for a mix.
    """
    analytic = sorted(site for site, kind in estimators.items() if kind == ANALYTIC)
    if len(analytic) == len(estimators):
        return "TraceMeanField_ELBO"
    if not analytic:
        return "Trace_ELBO"
    return f"Trace_ELBO+analytic_KL({','.join(analytic)})"


class _SiteCollector(Messenger):
    """The part of a Pyro trace the ELBO reads: each sample site's distribution, value, scale and mask.

    ``poutine.trace`` keeps a copy of every message and a graph of nodes; the loss needs
    a few fields of each site, and on a small model that bookkeeping costs as much as
    the networks. With ``replay`` (a guide's collected sites) every latent site of the
    model takes the guide's value, as ``poutine.replay`` does, and so does every plate's
    subsample site: a ``pyro.plate(..., subsample_size=B)`` in the model scores the rows
    the guide drew (``subsamples``), and its scale ``N / B`` reaches each site's ``scale``
    through the plate, as in Pyro. Subsample sites carry no density and are not in ``sites``.
    """

    def __init__(self, replay: dict[str, dict] | None = None, subsamples: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.sites: dict[str, dict] = {}
        self.subsamples: dict[str, torch.Tensor] = {}
        self.replay = replay
        self.replay_subsamples = subsamples

    def _pyro_sample(self, msg) -> None:
        if self.replay is None or msg["is_observed"]:
            return
        if site_is_subsample(msg):
            indices = (self.replay_subsamples or {}).get(msg["name"])
            if indices is not None:
                msg["value"] = indices
                msg["done"] = True
            return
        guide_site = self.replay.get(msg["name"])
        if guide_site is None:
            raise ValueError(f"the model's latent site {msg['name']!r} has no site of that name in the guide")
        msg["value"] = guide_site["value"]
        msg["done"] = True

    def _pyro_post_sample(self, msg) -> None:
        if site_is_subsample(msg):
            self.subsamples[msg["name"]] = msg["value"]
            return
        if msg["name"] in self.sites:
            raise ValueError(f"sample site {msg['name']!r} appears twice in one run of the program")
        self.sites[msg["name"]] = {"fn": msg["fn"], "value": msg["value"], "scale": msg["scale"],
                                   "mask": msg["mask"], "is_observed": msg["is_observed"],
                                   "infer": msg["infer"] or {}}


def collect_sites(model: Callable, guide: Callable, *args, **kwargs) -> tuple[dict[str, dict], dict[str, dict]]:
    """Run the guide, then the model with its latent and subsample sites replayed from the guide.

    Returns
    -------
    (dict, dict)
        The model's and the guide's sample sites in program order, name -> ``fn``,
        ``value``, ``scale``, ``mask``, ``is_observed``, ``infer``: what ``poutine.trace``
        of the guide and of ``poutine.replay(model)`` hold in those fields.
    """
    with _SiteCollector() as guide_sites:
        guide(*args, **kwargs)
    with _SiteCollector(replay=guide_sites.sites, subsamples=guide_sites.subsamples) as model_sites:
        model(*args, **kwargs)
    return model_sites.sites, guide_sites.sites


def _unwrap(fn) -> tuple[object, int]:
    """The distribution inside any ``Independent`` / expand wrappers, and how many event dimensions they add."""
    event_dims = 0
    while isinstance(fn, (Independent, ExpandedDistribution)):
        event_dims += fn.reinterpreted_batch_ndims if isinstance(fn, Independent) else 0
        fn = fn.base_dist
    return fn, event_dims


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` without the dimensions it was expanded along (stride 0), kept at size 1.

    A Normal built from a float std (``Normal(loc, 0.5)``) or a ``(K, 1, 1)`` one holds
    it expanded to the full ``(K, B, d)`` shape; its log and square need not be taken
    K B d times.
    """
    for dim, (size, stride) in enumerate(zip(tensor.shape, tensor.stride())):
        if stride == 0 and size > 1:
            tensor = tensor.narrow(dim, 0, 1)
    return tensor


def _event_sum(tensor: torch.Tensor, shape: torch.Size, event_dims: int) -> torch.Tensor:
    """Sum of ``tensor.expand(shape)`` over its last ``event_dims`` dimensions, without expanding it.

    ``tensor`` broadcasts to ``shape``; the result broadcasts to ``shape[:-event_dims]``.
    """
    if event_dims == 0:
        return tensor
    tensor = tensor.reshape((1,) * (len(shape) - tensor.dim()) + tuple(tensor.shape))
    repeats = 1
    for dim in range(len(shape) - event_dims, len(shape)):
        if tensor.shape[dim] == 1:
            repeats *= shape[dim]
    summed = tensor.sum(tuple(range(-event_dims, 0)))
    return summed if repeats == 1 else summed * repeats


def _is_normal(fn) -> bool:
    """A Normal whose density is the textbook one (not a subclass with its own ``log_prob``)."""
    return isinstance(fn, Normal) and type(fn).log_prob is Normal.log_prob


def log_density(fn, value: torch.Tensor, *, per_dimension: bool = False) -> torch.Tensor:
    """``fn.log_prob(value)``; for a (reinterpreted) Normal computed on its compact std.

    Parameters
    ----------
    fn
        A distribution; a Normal inside any ``Independent`` or expand wrappers takes the fast path.
    value
        A value of ``fn``'s shape.
    per_dimension
        Leave the event dimensions of ``Independent`` unsummed (one term per dimension).

    Returns
    -------
    torch.Tensor
        Batch shape of ``fn`` (``per_dimension``: batch and event shape), nats.
    """
    base, event_dims = _unwrap(fn)
    if not _is_normal(base):
        return base.log_prob(value) if per_dimension else fn.log_prob(value)
    event_dims = 0 if per_dimension else event_dims
    scale = _compact(base.scale)
    loc = base.loc
    if loc.shape != value.shape:  # data shared by K configurations: (B, d) against (K, B, d)
        loc, value = torch.broadcast_tensors(loc, value)
    # mse_loss: (value - loc)^2 as one kernel, forward and backward
    squares = torch.nn.functional.mse_loss(loc, value, reduction="none")
    shape = squares.shape if scale.dim() <= squares.dim() else broadcast_shapes(squares.shape, scale.shape)
    batch_dims = max(scale.dim() - event_dims, 0)
    if event_dims and all(size == 1 for size in scale.shape[batch_dims:]):
        # One std across the event (a decoder's eta_dec): divide the sum, not every element.
        quadratic = _event_sum(squares, shape, event_dims) / scale.reshape(scale.shape[:batch_dims]).square()
    else:
        quadratic = _event_sum(squares / scale.square(), shape, event_dims)
    return -0.5 * quadratic - _event_sum(scale.log() + _HALF_LOG_2PI, shape, event_dims)


def kl_to_prior(guide_fn, model_fn, *, per_dimension: bool = False) -> torch.Tensor:
    """``KL(guide_fn || model_fn)``; for two Normals computed on their compact stds.

    Same shapes as :func:`log_density`; other pairs go to Pyro's ``kl_divergence``.
    """
    parts = _normal_kl_parts(guide_fn, model_fn)
    if parts is None:
        q, p = _unwrap(guide_fn)[0], _unwrap(model_fn)[0]
        return kl_divergence(q, p) if per_dimension else kl_divergence(guide_fn, model_fn)
    return _kl_from_parts(parts, per_dimension=per_dimension)


def _normal_kl_parts(guide_fn, model_fn) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """``((loc_q - loc_p) / scale_p)^2``, ``r - 1 - log r`` (``r = (scale_q / scale_p)^2``) and the event dimensions.

    The per-dimension parts of the KL of two Normals, on their compact stds; None for other pairs.
    """
    q, q_event_dims = _unwrap(guide_fn)
    p, p_event_dims = _unwrap(model_fn)
    if not (_is_normal(q) and _is_normal(p)) or q_event_dims != p_event_dims:
        return None
    p_scale = _compact(p.scale)
    variance_ratio = (_compact(q.scale) / p_scale).square()
    mean_term = ((q.loc - p.loc) / p_scale).square()
    return mean_term, variance_ratio - 1.0 - variance_ratio.log(), q_event_dims


def _kl_from_parts(parts: tuple[torch.Tensor, torch.Tensor, int], *, per_dimension: bool) -> torch.Tensor:
    """Half the sum of the two parts of :func:`_normal_kl_parts`, each summed over the event first."""
    mean_term, variance_term, event_dims = parts
    event_dims = 0 if per_dimension else event_dims
    shape = broadcast_shapes(mean_term.shape, variance_term.shape)
    return 0.5 * (_event_sum(mean_term, shape, event_dims) + _event_sum(variance_term, shape, event_dims))


def _scaled(term: torch.Tensor, site: dict) -> torch.Tensor:
    """``term`` times the site's scale, zero where its mask is False: Pyro's ``scale_and_mask``.

    The multiplication by a plain 1.0 (no ``poutine.scale`` around the site) is skipped.
    """
    scale, mask = site["scale"], site["mask"]
    if not (isinstance(scale, float) and scale == 1.0):
        term = term * scale
    if mask is None or mask is True:
        return term
    if mask is False:
        return torch.zeros_like(term)
    return torch.where(mask, term, term.new_zeros(()))


def _row_mean_per_dimension(kl: torch.Tensor, fn) -> torch.Tensor:
    """Per-dimension KL ``(*batch, *event)`` averaged over the data rows: ``(..., d)``, detached.

    The rows are the innermost batch dimension (the ``data`` plate); the event
    dimensions are flattened into one ``d`` (a scalar latent has ``d = 1``).
    """
    kl = kl.detach()
    batch_dims = len(fn.batch_shape)
    kl = kl.reshape(*kl.shape[:batch_dims], -1)
    return kl.mean(-2) if batch_dims else kl


def elbo_terms(model: Callable, guide: Callable, *args, estimators: Mapping[str, str],
               kl_multipliers: Mapping[str, torch.Tensor] | None = None,
               free_bits: Mapping[str, torch.Tensor] | None = None,
               kl_out: dict[str, torch.Tensor] | None = None,
               **kwargs) -> Iterator[tuple[str, torch.Tensor]]:
    """Scaled per-site terms of the negative ELBO for one draw from the guide.

    Parameters
    ----------
    model, guide
        Pyro callables; every latent site must be reparameterisable.
    *args, **kwargs
        Passed to both.
    estimators
        Latent site -> ``'analytic'`` or ``'sampled'`` (:func:`site_estimators`).
    kl_multipliers
        Latent site -> weight multiplying its term, broadcastable to the term's
        batch shape (``(K, 1)`` per configuration); a KL schedule at this step.
    free_bits
        Latent site -> floor lambda (nats per latent dimension), broadcastable to
        ``(K, 1)``. The site's term becomes ``scale * B * sum_j max(lambda, mean_b KL_bj)``
        spread evenly over the B rows, with ``KL_bj`` analytic, or for a sampled site
        its one-sample estimate ``log q_j(z_j) - log p_j(z_j)``.

    Yields
    ------
    (str, torch.Tensor)
        Site name and its term, of the site's batch shape (``(B,)`` or ``(K, B)``).
    """
    model_sites, guide_sites = collect_sites(model, guide, *args, **kwargs)
    for name, site in model_sites.items():
        if site["is_observed"]:
            yield name, _scaled(-log_density(site["fn"], site["value"]), site)
            continue
        guide_site = guide_sites[name]
        floor = None if free_bits is None else free_bits.get(name)
        analytic = estimators.get(name, SAMPLED) == ANALYTIC
        parts = _normal_kl_parts(guide_site["fn"], site["fn"]) if analytic else None
        if kl_out is not None:
            # Two Normals in closed form: from the loss's own parts (the operations a fresh KL makes, on
            # the same tensors, so the same values; one pass over the batch fewer).
            with torch.no_grad():
                per_dimension = (_per_dimension_kl(guide_site, site) if parts is None
                                 else _kl_from_parts(parts, per_dimension=True))
            kl_out[name] = _row_mean_per_dimension(per_dimension, guide_site["fn"])
        if analytic:
            kl = (kl_to_prior(guide_site["fn"], site["fn"], per_dimension=floor is not None) if parts is None
                  else _kl_from_parts(parts, per_dimension=floor is not None))
            term = _scaled(kl if floor is None else _floored(kl, floor), guide_site)
        elif floor is None:
            term = (_scaled(log_density(guide_site["fn"], guide_site["value"]), guide_site)
                    - _scaled(log_density(site["fn"], site["value"]), site))
        else:
            # One-sample estimate of each dimension's KL at the guide's draw (log q_j - log p_j), floored
            # like the analytic one; a site's KL weight is the same in model and guide.
            value = guide_site["value"]
            kl = (log_density(guide_site["fn"], value, per_dimension=True)
                  - log_density(site["fn"], value, per_dimension=True))
            term = _scaled(_floored(kl, floor), guide_site)
        if kl_multipliers is not None and name in kl_multipliers:
            term = term * kl_multipliers[name]
        yield name, term
    for name, guide_site in guide_sites.items():
        # A guide-only (auxiliary) latent pays its log q, as in Pyro's Trace_ELBO.
        if name not in model_sites:
            yield name, _scaled(log_density(guide_site["fn"], guide_site["value"]), guide_site)


def _per_dimension_kl(guide_site: dict, model_site: dict) -> torch.Tensor:
    """KL(q || p) of one latent site per dimension, ``(*batch, *event)``, without the site's scale.

    Closed form where Pyro has one (two Normals: the model's at the replayed
    parents), else the one-sample estimate ``log q_j - log p_j`` at the guide's draw.
    """
    with torch.no_grad():
        try:
            return kl_to_prior(guide_site["fn"], model_site["fn"], per_dimension=True)
        except NotImplementedError:
            value = guide_site["value"]
            return (log_density(guide_site["fn"], value, per_dimension=True)
                    - log_density(model_site["fn"], value, per_dimension=True))


def _floored(kl: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """Free-bits KL of one site (:func:`~ppl_vae.inference.free_bits.free_bits_kl`) spread over the rows.

    ``kl`` holds ``KL_bj`` per row b and latent dimension j, ``(..., B, d)``; the objective
    ``B * sum_j max(lambda, mean_b KL_bj)`` per configuration is returned as ``(..., B)``
    rows that each hold ``1/B`` of it, so the usual batch sum applies. ``floor`` is a
    number (one model) or ``(K, 1)`` (one per configuration).
    """
    total = free_bits_kl(kl, floor.unsqueeze(-1) if floor.dim() else floor, validate=False)  # (...)
    return (total / kl.shape[-2]).unsqueeze(-1).expand(kl.shape[:-1])


def per_config_loss(model: Callable, guide: Callable, *args, estimators: Mapping[str, str],
                    kl_multipliers: Mapping[str, torch.Tensor] | None = None,
                    free_bits: Mapping[str, torch.Tensor] | None = None,
                    kl_out: dict[str, torch.Tensor] | None = None, **kwargs) -> torch.Tensor:
    """Negative (KL-weighted) ELBO of each configuration, summed over the batch.

    Sites of batch shape ``(K, B)`` (a ``configs`` plate at ``dim=-2`` outside
    the ``data`` plate) give K losses; sites of shape ``(B,)`` (one ordinary
    model) give one. ``kl_out`` as :func:`elbo_terms`.

    Returns
    -------
    torch.Tensor
        ``(K,)`` differentiable losses (nats, summed over the B rows).
    """
    loss = 0.0
    for name, term in elbo_terms(model, guide, *args, estimators=estimators, kl_multipliers=kl_multipliers,
                                 free_bits=free_bits, kl_out=kl_out, **kwargs):
        if term.dim() not in (1, 2):
            raise ValueError("every sample site must sit inside the 'data' plate (dim=-1), and at most a "
                             f"'configs' plate (dim=-2); site {name!r} has batch shape {tuple(term.shape)}")
        loss = loss + term.sum(-1)
    return loss.reshape(-1)


def elbo_loss(model: Callable, guide: Callable, *args, estimators: Mapping[str, str], **kwargs) -> torch.Tensor:
    """Negative ELBO summed over every plate: a scalar, as Pyro's ``differentiable_loss``."""
    return per_config_loss(model, guide, *args, estimators=estimators, **kwargs).sum()
