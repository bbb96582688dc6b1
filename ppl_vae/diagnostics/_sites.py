"""Read one Pyro site the way Pyro's own ELBOs read it: masks, subsample plates, priors coupled to later draws.

The diagnostics trace a model / guide pair themselves (:mod:`._traces`); these
helpers make that reading follow Pyro's semantics for the idioms users write:

- ``poutine.mask`` (``site['mask']``) and ``Distribution.mask`` (a
  ``MaskedDistribution``): a masked entry contributes nothing to a log density,
  as in :meth:`pyro.poutine.Trace.log_prob_sum` (``scale_and_mask``), and is
  left out of the per-dimension KL (:func:`coordinate_mask`);
- ``pyro.plate(..., subsample_size=B)``: per-point diagnostics need every data
  point, so every subsampled plate is run on its full range
  (:func:`full_plates`): the guide and the model see the same indices
  ``0 .. size - 1``, and Pyro's subsample scale ``size / B`` becomes 1;
- a prior whose parameters depend on latents the guide draws after this site
  (the MHVAE's p(z1 | z2) with z2 ~ q(z2 | z1)): the KL the objective pays is
  E_q[log q(z1) - log p(z1 | z2)] with z2 drawn at the sampled z1, not an
  analytic KL with z2 decoupled from z1 (:func:`coupled_sites`).

The engine (:mod:`ppl_vae.inference`) reads its traces with its own collector;
these functions are the diagnostics' reading of the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import scale_and_mask
from pyro.poutine.subsample_messenger import SubsampleMessenger
from torch.distributions import Distribution, Independent


@contextmanager
def full_plates() -> Iterator[None]:
    """Run every subsampled ``pyro.plate`` on its full range, indices ``0 .. size - 1``, inside the block.

    A plate built with ``subsample_size=B`` draws B of its ``size`` indices
    and scales its sites by ``size / B``; for the block it is built as if
    ``subsample_size`` were None: every index, in order, scale 1, and the guide
    and the replayed model agree on them. Indices the program passes itself
    (``pyro.plate(..., subsample=idx)``) are kept. Pyro offers no handler that
    changes a plate's ``subsample_size`` (it checks it against the indices a
    handler returns), so the plate's own helper is wrapped for the block and
    restored on exit.
    """
    original = SubsampleMessenger.__dict__["_subsample"]

    def full(name, size=None, subsample_size=None, subsample=None, use_cuda=None, device=None):
        if size is not None and subsample is None:
            subsample_size = None
        return original.__func__(name, size, subsample_size, subsample, use_cuda, device)

    SubsampleMessenger._subsample = staticmethod(full)
    try:
        yield
    finally:
        SubsampleMessenger._subsample = original


def masked_log_prob(site: dict, log_prob: torch.Tensor) -> torch.Tensor:
    """``log_prob`` with the site's ``poutine.mask`` applied (masked entries 0), as Pyro's traces do."""
    mask = site.get("mask")
    return log_prob if mask is None else scale_and_mask(log_prob, mask=mask)


def _full_shape(fn: Distribution) -> torch.Size:
    return fn.batch_shape + fn.event_shape


def _event_padded(mask: torch.Tensor | bool, fn: Distribution) -> torch.Tensor:
    """A mask over ``fn.batch_shape`` as a tensor broadcastable to ``fn``'s batch + event shape."""
    mask = torch.as_tensor(mask, dtype=torch.bool)
    return mask.reshape(tuple(mask.shape) + (1,) * len(fn.event_shape))


def coordinate_mask(site: dict) -> torch.Tensor | None:
    """Which coordinates of a site count, ``fn.batch_shape + fn.event_shape`` (bool), or None when all do.

    Combines ``poutine.mask`` (``site['mask']``, over the batch shape) with the
    masks of any ``MaskedDistribution`` inside the ``Independent`` / expand
    wrappers (each over its own level's batch shape).
    """
    fn = site["fn"]
    shape = _full_shape(fn)
    masks = []
    if site.get("mask") is not None:
        masks.append(_event_padded(site["mask"], fn))
    level = fn
    while isinstance(level, (Independent, ExpandedDistribution, MaskedDistribution)):
        if isinstance(level, MaskedDistribution):
            masks.append(_event_padded(level._mask, level))
        level = level.base_dist
    if not masks:
        return None
    full = torch.ones(shape, dtype=torch.bool, device=masks[0].device)
    for mask in masks:
        full = full & mask.to(full.device)
    return full


def coupled_sites(guide_order: Iterable[str], model_order: Iterable[str]) -> frozenset[str]:
    """Latent sites whose prior may depend on their own draw through a later guide draw.

    Site ``s`` is coupled when the model samples, before ``s``, a latent the
    guide samples after ``s``: the guide may draw that latent from ``s``
    (q(z2 | z1)) and the model's p(s | .) is then a function of ``s``'s own
    value, so KL(q(s) || p(s | .)) with the parents held fixed is not the
    term the objective pays.

    Parameters
    ----------
    guide_order, model_order
        The latent sites in the order the guide and the model sample them.
    """
    guide_order, model_order = list(guide_order), list(model_order)
    coupled = set()
    for position, site in enumerate(guide_order):
        if site not in model_order:
            continue
        later_in_guide = set(guide_order[position + 1:])
        earlier_in_model = set(model_order[: model_order.index(site)])
        if later_in_guide & earlier_in_model:
            coupled.add(site)
    return frozenset(coupled)
