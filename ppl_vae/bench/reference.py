"""The same models and losses in plain PyTorch: the yardstick for Pyro's overhead.

Each function computes, without Pyro, the loss that Pyro's ELBO computes for
the family's ``model`` / ``guide`` pair, from the same ``nn.Module`` networks
(so network compute is identical and any difference in step time is the cost
of the probabilistic-programming layer):

- VAE / CVAE: one reparameterised sample, closed-form Gaussian KL (what
  ``TraceMeanField_ELBO`` computes);
- MHVAE: one sample of z1 and z2, ``log q(z1|x) - log p(z1|z2)`` at the
  samples and the closed-form KL of z2 given z1 (SPEC 2.3).

Losses are sums over the batch scaled by ``data_size / B``, as a subsampled
``pyro.plate`` scales them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(value: torch.Tensor, loc: torch.Tensor, scale) -> torch.Tensor:
    """``log N(value; loc, diag scale^2)`` summed over the last dimension: ``(..., d) -> (...)``."""
    scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
    z = (value - loc) / scale
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1) - torch.log(scale).expand_as(z).sum(-1)


def gaussian_kl(loc_q: torch.Tensor, scale_q: torch.Tensor, loc_p, scale_p) -> torch.Tensor:
    """``KL(N(loc_q, scale_q^2) || N(loc_p, scale_p^2))`` summed over the last dimension."""
    scale_p = torch.as_tensor(scale_p, dtype=loc_q.dtype, device=loc_q.device)
    ratio = (scale_q / scale_p).pow(2)
    return 0.5 * (ratio + ((loc_q - loc_p) / scale_p).pow(2) - 1.0 - torch.log(ratio)).sum(-1)


def vae_loss(model: nn.Module, x: torch.Tensor, *, data_size: int) -> torch.Tensor:
    """Negative beta-ELBO of a :class:`ppl_vae.models.VAE` on a batch ``x`` ``(B, d)``."""
    c = model.config
    loc, scale = model.encoder(x)
    z = loc + scale * torch.randn_like(loc)
    reconstruction = gaussian_log_density(x, model.decoder(z), c.eta_dec)
    kl = gaussian_kl(loc, scale, 0.0, c.eta_enc)
    return (data_size / x.shape[0]) * (c.beta * kl - reconstruction).sum()


def cvae_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, data_size: int) -> torch.Tensor:
    """Negative beta-ELBO of a :class:`ppl_vae.models.CVAE` on a batch ``(x, y)``."""
    c = model.config
    loc, scale = model.encoder(x, y)
    if model.prior is not None:
        prior_loc, prior_scale = model.prior(x)
    else:
        prior_loc, prior_scale = 0.0, c.eta_enc
    z = loc + scale * torch.randn_like(loc)
    reconstruction = gaussian_log_density(y, model.decoder_z(z) + model.decoder_x(x), c.eta_dec)
    kl = gaussian_kl(loc, scale, prior_loc, prior_scale)
    return (data_size / x.shape[0]) * (c.beta * kl - reconstruction).sum()


def mhvae_loss(model: nn.Module, x: torch.Tensor, *, data_size: int) -> torch.Tensor:
    """Negative ELBO of a :class:`ppl_vae.models.MHVAE` (beta1 on z1's term, beta2 on z2's KL)."""
    c = model.config
    loc1, scale1 = model.encoder1(x)
    z1 = loc1 + scale1 * torch.randn_like(loc1)
    loc2, scale2 = model.encoder2(z1)
    z2 = loc2 + scale2 * torch.randn_like(loc2)
    reconstruction = gaussian_log_density(x, model.decoder1(z1), c.eta_dec)
    z1_term = gaussian_log_density(z1, loc1, scale1) - gaussian_log_density(z1, model.decoder2(z2), c.eta_dec)
    z2_kl = gaussian_kl(loc2, scale2, 0.0, c.eta_enc)
    return (data_size / x.shape[0]) * (c.beta1 * z1_term + c.beta2 * z2_kl - reconstruction).sum()


PLAIN_LOSSES = {"vae": vae_loss, "cvae": cvae_loss, "mhvae": mhvae_loss}


def plain_loss(model: nn.Module, *batch: torch.Tensor, data_size: int) -> torch.Tensor:
    """The family's plain-PyTorch loss for ``model`` on ``batch`` (``bundle.tensors()`` rows)."""
    return PLAIN_LOSSES[model.family](model, *batch, data_size=data_size)
