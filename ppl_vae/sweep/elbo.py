"""The ELBO of K configurations at once, kept apart per configuration.

Pyro's ``Trace_ELBO`` / ``TraceMeanField_ELBO`` return one number summed over
every plate. A sweep needs the loss of each configuration (for its loss curve)
while still back-propagating through one graph, so this module computes the
same estimators from the traces but sums only over the data plate, leaving
the ``configs`` plate (``dim=-2``) intact. The sum of the result equals the
Pyro loss (a test holds this).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.poutine.util import site_is_subsample


def _scaled(term: torch.Tensor, scale) -> torch.Tensor:
    """``scale * term`` summed over the data dimension, keeping the config dimension: ``(K, B) -> (K,)``."""
    weighted = term * scale
    if weighted.dim() != 2:
        raise ValueError("every sample site must sit inside the 'configs' (dim=-2) and 'data' (dim=-1) plates; "
                         f"got a log-density of shape {tuple(weighted.shape)}")
    return weighted.sum(-1)


def per_config_loss(model: Callable, guide: Callable, *args, mean_field: bool = True, **kwargs) -> torch.Tensor:
    """Negative (KL-weighted) ELBO of each configuration, one sample from the guide.

    Parameters
    ----------
    model, guide
        Pyro callables whose sample sites have batch shape ``(K, B)``: a
        ``configs`` plate at ``dim=-2`` and a ``data`` plate at ``dim=-1``.
    *args, **kwargs
        Passed to both.
    mean_field
        ``True``: the KL of each latent site in closed form, as
        ``TraceMeanField_ELBO`` (valid only when no latent's model parent is
        drawn after it in the guide). ``False``: ``log q - log p`` at the
        guide's sample, as ``Trace_ELBO`` (needed for the MHVAE).

    Returns
    -------
    torch.Tensor
        ``(K,)`` differentiable losses; a site's ``poutine.scale`` (the KL
        weight, the minibatch factor) multiplies its terms exactly as in Pyro.
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    loss = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            loss = loss - _scaled(site["fn"].log_prob(site["value"]), site["scale"])
            continue
        guide_site = guide_trace.nodes[name]
        if mean_field:
            # TraceMeanField_ELBO takes the KL's weight from the guide site.
            loss = loss + _scaled(kl_divergence(guide_site["fn"], site["fn"]), guide_site["scale"])
        else:
            loss = (loss + _scaled(guide_site["fn"].log_prob(guide_site["value"]), guide_site["scale"])
                    - _scaled(site["fn"].log_prob(site["value"]), site["scale"]))
    return loss
