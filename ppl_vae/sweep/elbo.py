"""The ELBO from Pyro traces, with the reduction left to the caller.

Pyro's ``Trace_ELBO`` / ``TraceMeanField_ELBO`` return one number summed over
every plate. A sweep needs the loss of each configuration (for its loss curve)
while still back-propagating through one graph, so :func:`per_config_loss`
computes the same estimators from the traces but sums only over the data
plate, leaving the ``configs`` plate (``dim=-2``) intact; its sum equals the
Pyro loss (a test holds this). :func:`elbo_loss` sums everything: the same
number as ``differentiable_loss``, with less bookkeeping per step (no
enumeration, score-function or shape-check machinery), for reparameterised
Gaussian models such as ours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.poutine.util import site_is_subsample


def elbo_terms(model: Callable, guide: Callable, *args, mean_field: bool = True,
               **kwargs) -> Iterator[torch.Tensor]:
    """Scaled per-site terms of the negative ELBO, one guide sample, each of the site's batch shape.

    Parameters
    ----------
    model, guide
        Pyro callables; every latent site must be reparameterisable.
    *args, **kwargs
        Passed to both.
    mean_field
        ``True``: the KL of each latent site in closed form, as
        ``TraceMeanField_ELBO`` (valid only when no latent's model parent is
        drawn after it in the guide); its weight is the guide site's scale.
        ``False``: ``log q - log p`` at the guide's sample, as ``Trace_ELBO``
        (needed for the MHVAE).

    Yields
    ------
    torch.Tensor
        ``-scale * log p(obs)`` for observed sites and ``scale * KL`` (or
        ``scale * (log q - log p)``) for latent sites.
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            yield -site["fn"].log_prob(site["value"]) * site["scale"]
            continue
        guide_site = guide_trace.nodes[name]
        if mean_field:
            yield kl_divergence(guide_site["fn"], site["fn"]) * guide_site["scale"]
        else:
            yield (guide_site["fn"].log_prob(guide_site["value"]) * guide_site["scale"]
                   - site["fn"].log_prob(site["value"]) * site["scale"])


def elbo_loss(model: Callable, guide: Callable, *args, mean_field: bool = True, **kwargs) -> torch.Tensor:
    """Negative (KL-weighted) ELBO summed over every plate: a scalar, as ``differentiable_loss``."""
    return sum(term.sum() for term in elbo_terms(model, guide, *args, mean_field=mean_field, **kwargs))


def per_config_loss(model: Callable, guide: Callable, *args, mean_field: bool = True, **kwargs) -> torch.Tensor:
    """Negative (KL-weighted) ELBO of each configuration, one sample from the guide.

    Parameters
    ----------
    model, guide
        Pyro callables whose sample sites have batch shape ``(K, B)``: a
        ``configs`` plate at ``dim=-2`` and a ``data`` plate at ``dim=-1``.
    *args, **kwargs, mean_field
        As :func:`elbo_terms`.

    Returns
    -------
    torch.Tensor
        ``(K,)`` differentiable losses; a site's ``poutine.scale`` (the KL
        weight, a minibatch factor) multiplies its terms exactly as in Pyro.
    """
    loss = 0.0
    for term in elbo_terms(model, guide, *args, mean_field=mean_field, **kwargs):
        if term.dim() != 2:
            raise ValueError("every sample site must sit inside the 'configs' (dim=-2) and 'data' (dim=-1) "
                             f"plates; got a log-density of shape {tuple(term.shape)}")
        loss = loss + term.sum(-1)
    return loss
