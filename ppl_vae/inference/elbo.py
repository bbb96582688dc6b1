"""The suite's one ELBO: the negative ELBO of each configuration, from Pyro traces.

Every training run (K = 1 or a batch of K configurations) and every benchmark of
ours computes its loss here. The estimator is Pyro's, term by term: the guide is
traced, the model replayed against it, and each sample site contributes

- observed site:        ``-scale * log p(obs | ...)``
- latent site, analytic: ``scale_q * KL(q(z|...) || p(z|...))`` (as ``TraceMeanField_ELBO``)
- latent site, sampled:  ``scale_q * log q(z) - scale_p * log p(z)`` at the guide's draw (as ``Trace_ELBO``)

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

import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.distributions.kl import kl_divergence
from pyro.poutine.util import site_is_subsample

from ppl_vae.inference.free_bits import free_bits_kl

ANALYTIC = "analytic"
SAMPLED = "sampled"


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


def _per_dimension(fn):
    """The distribution with its event dimensions turned back into batch dimensions."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn


def elbo_terms(model: Callable, guide: Callable, *args, estimators: Mapping[str, str],
               kl_multipliers: Mapping[str, torch.Tensor] | None = None,
               free_bits: Mapping[str, torch.Tensor] | None = None,
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
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            yield name, -site["fn"].log_prob(site["value"]) * site["scale"]
            continue
        guide_site = guide_trace.nodes[name]
        floor = None if free_bits is None else free_bits.get(name)
        if estimators[name] == ANALYTIC:
            kl = kl_divergence(guide_site["fn"] if floor is None else _per_dimension(guide_site["fn"]),
                               site["fn"] if floor is None else _per_dimension(site["fn"]))
            term = (kl if floor is None else _floored(kl, floor)) * guide_site["scale"]
        elif floor is None:
            term = (guide_site["fn"].log_prob(guide_site["value"]) * guide_site["scale"]
                    - site["fn"].log_prob(site["value"]) * site["scale"])
        else:
            # One-sample estimate of each dimension's KL at the guide's draw (log q_j - log p_j), floored
            # like the analytic one; a site's KL weight is the same in model and guide.
            value = guide_site["value"]
            kl = (_per_dimension(guide_site["fn"]).log_prob(value) - _per_dimension(site["fn"]).log_prob(value))
            term = _floored(kl, floor) * guide_site["scale"]
        if kl_multipliers is not None and name in kl_multipliers:
            term = term * kl_multipliers[name]
        yield name, term


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
                    free_bits: Mapping[str, torch.Tensor] | None = None, **kwargs) -> torch.Tensor:
    """Negative (KL-weighted) ELBO of each configuration, summed over the batch.

    Sites of batch shape ``(K, B)`` (a ``configs`` plate at ``dim=-2`` outside
    the ``data`` plate) give K losses; sites of shape ``(B,)`` (one ordinary
    model) give one.

    Returns
    -------
    torch.Tensor
        ``(K,)`` differentiable losses (nats, summed over the B rows).
    """
    loss = 0.0
    for name, term in elbo_terms(model, guide, *args, estimators=estimators, kl_multipliers=kl_multipliers,
                                 free_bits=free_bits, **kwargs):
        if term.dim() not in (1, 2):
            raise ValueError("every sample site must sit inside the 'data' plate (dim=-1), and at most a "
                             f"'configs' plate (dim=-2); site {name!r} has batch shape {tuple(term.shape)}")
        loss = loss + term.sum(-1)
    return loss.reshape(-1)


def elbo_loss(model: Callable, guide: Callable, *args, estimators: Mapping[str, str], **kwargs) -> torch.Tensor:
    """Negative ELBO summed over every plate: a scalar, as Pyro's ``differentiable_loss``."""
    return per_config_loss(model, guide, *args, estimators=estimators, **kwargs).sum()
