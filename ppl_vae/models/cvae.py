"""Conditional VAE (SPEC 2.2): condition x, output y.

    p(z|x)   = N(0, eta_enc^2 I)  or, learned prior, N(mu(x), diag s(x)^2)
    p(y|x,z) = N(dec_z(z) + dec_x(x), eta_dec^2 I)
    q(z|x,y) = N(enc(x, y), Sigma(x, y))

Loss per sample: -E_q[log p(y|x,z)] + beta KL(q(z|x,y) || p(z|x)). For
``arch='linear'``: dec_z(z) = U1 z, dec_x(x) = U2 x, enc(x, y) = W1 x + W2 y, Sigma
a free diagonal, no biases.

Encoder latent mappings (``latent_mapping``):

- ``'joint'``: x and y each enter through their own first layer (for cnn: a conv
  branch on the image with the other part blanked), the branch features are
  added, and one shared trunk maps them to (loc, log std) - the usual CVAE
  encoder on [x, y].
- ``'separate'``: x and y each have a complete network of their own that ends in
  the latent space, and the two latent mappings are added: loc = f(x) + g(y),
  log std = f'(x) + g'(y): the authors' own CVAE encoder (their public code), the
  baseline of SPEC 6.3 and 6.8. Nothing is shared between the x path and the y
  path before the latent space. (The paper's "separate latent mappings" remark
  concerns hierarchical VAEs: see the MHVAE's ``z2_input``.)

For ``arch='linear'`` both readings are W1 x + W2 y.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import xarray as xr
from pyro import poutine
from torch import nn

from ppl_vae.models import readout
from ppl_vae.models.base import LatentVariableModel
from ppl_vae.models.config import CVAEConfig
from ppl_vae.models.networks import ConvDecoder, ConvEncoder, DiagonalGaussian, decoder_for, feature_body, mlp


class ImagePart(nn.Module):
    """Place the ``x`` or ``y`` part of a CVAE image split on a blank full image: ``(..., d) -> (..., H W)``."""

    def __init__(self, part: str, image_shape: tuple[int, int], split: str, x_dim: int, y_dim: int):
        super().__init__()
        self.part, self.image_shape, self.split = part, tuple(image_shape), split
        self.x_dim, self.y_dim = x_dim, y_dim

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        from ppl_vae.data.images import join_split

        lead = values.shape[:-1]
        flat = values.reshape(-1, values.shape[-1])
        blank = flat.new_zeros(flat.shape[0], self.y_dim if self.part == "x" else self.x_dim)
        x, y = (flat, blank) if self.part == "x" else (blank, flat)
        return join_split(x, y, self.image_shape, self.split).reshape(*lead, -1)


class OutputPixels(nn.Module):
    """Keep the ``y`` pixels of a full image: ``(..., H W) -> (..., d_y)``."""

    def __init__(self, image_shape: tuple[int, int], split: str):
        super().__init__()
        self.image_shape, self.split = tuple(image_shape), split

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        from ppl_vae.data.images import split_images

        lead = pixels.shape[:-1]
        _, y = split_images(pixels.reshape(-1, *self.image_shape), self.split)
        return y.reshape(*lead, -1)


def _branch(config: CVAEConfig, part: str, out_dim: int) -> nn.Module:
    """First layer of one encoder input: a linear layer (mlp) or a conv net on the blanked image (cnn)."""
    in_dim = config.x_dim if part == "x" else config.y_dim
    if config.arch == "cnn":
        return nn.Sequential(ImagePart(part, config.image_shape, config.split, config.x_dim, config.y_dim),
                             ConvEncoder(config.image_shape, out_dim))
    return nn.Linear(in_dim, out_dim)


class CVAEEncoder(nn.Module):
    """q(z|x, y) as ``(loc, scale)``; see the module docstring for the latent mappings."""

    def __init__(self, config: CVAEConfig):
        super().__init__()
        self.mapping = "linear" if config.arch == "linear" else config.latent_mapping
        k, hidden = config.latent_dim, config.hidden_dims
        if self.mapping == "linear":
            self.x_map = nn.Linear(config.x_dim, k, bias=False)  # W1
            self.y_map = nn.Linear(config.y_dim, k, bias=False)  # W2
            self.log_std = nn.Parameter(torch.zeros(k))
        elif self.mapping == "joint":
            self.x_branch = _branch(config, "x", hidden[0])
            self.y_branch = _branch(config, "y", hidden[0])
            trunk: nn.Module = nn.ReLU()
            if len(hidden) > 1:
                trunk = nn.Sequential(nn.ReLU(), mlp(hidden[0], hidden[1:-1], hidden[-1]), nn.ReLU())
            self.head = DiagonalGaussian(trunk, hidden[-1], k)
        else:
            self.x_head = DiagonalGaussian(nn.Sequential(_branch(config, "x", hidden[0]), nn.ReLU(),
                                                         _trunk(hidden)), hidden[-1], k)
            self.y_head = DiagonalGaussian(nn.Sequential(_branch(config, "y", hidden[0]), nn.ReLU(),
                                                         _trunk(hidden)), hidden[-1], k)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mapping == "linear":
            loc = self.x_map(x) + self.y_map(y)
            return loc, self.log_std.exp().expand_as(loc)
        if self.mapping == "joint":
            return self.head(self.x_branch(x) + self.y_branch(y))
        x_loc, x_scale = self.x_head(x)
        y_loc, y_scale = self.y_head(y)
        return x_loc + y_loc, x_scale * y_scale  # log stds add


def _trunk(hidden: tuple[int, ...]) -> nn.Module:
    if len(hidden) == 1:
        return nn.Identity()
    return nn.Sequential(mlp(hidden[0], hidden[1:-1], hidden[-1]), nn.ReLU())


class LearnedPrior(nn.Module):
    """p(z|x) = N(mu(x), diag s(x)^2): linear mu = M x with a free std vector, or a network head."""

    def __init__(self, config: CVAEConfig):
        super().__init__()
        if config.arch == "cnn":
            body = nn.Sequential(ImagePart("x", config.image_shape, config.split, config.x_dim, config.y_dim),
                                 ConvEncoder(config.image_shape, config.hidden_dims[-1]), nn.ReLU())
            width = config.hidden_dims[-1]
        else:
            body, width = feature_body(config.arch, config.x_dim, config.hidden_dims)
        self.net = DiagonalGaussian(body, width, config.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x)


def _decoders(config: CVAEConfig) -> tuple[nn.Module, nn.Module]:
    """The z-branch and the x-branch of the decoder mean, both ending in ``y_dim``."""
    if config.arch != "cnn":
        return (decoder_for(config.arch, config.latent_dim, config.y_dim, config.hidden_dims),
                decoder_for(config.arch, config.x_dim, config.y_dim, config.hidden_dims))
    image_shape, split, width = config.image_shape, config.split, config.hidden_dims[-1]
    z_branch = nn.Sequential(ConvDecoder(config.latent_dim, image_shape), OutputPixels(image_shape, split))
    x_branch = nn.Sequential(ImagePart("x", image_shape, split, config.x_dim, config.y_dim),
                             ConvEncoder(image_shape, width), nn.ReLU(),
                             ConvDecoder(width, image_shape), OutputPixels(image_shape, split))
    return z_branch, x_branch


class CVAE(LatentVariableModel):
    family = "cvae"
    observed_site = "y"
    latent_sites = ("z",)
    analytic_kl_sites = ("z",)
    kl_levels = {"z": ""}

    def __init__(self, config: CVAEConfig):
        super().__init__(config)
        self.encoder = CVAEEncoder(config)
        self.decoder_z, self.decoder_x = _decoders(config)
        self.prior = LearnedPrior(config) if config.prior == "learned" else None

    @property
    def latent_dims(self) -> dict[str, int]:
        return {"z": self.config.latent_dim}

    def prior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of p(z|x), shape ``(..., latent_dim)``."""
        if self.prior is not None:
            return self.prior(x)
        loc = x.new_zeros(x.shape[:-1] + (self.config.latent_dim,))
        return loc, torch.full_like(loc, self.config.eta_enc)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self._register()
        c = self.config
        with pyro.plate("data", x.shape[-2], dim=-1, device=x.device):
            prior_loc, prior_scale = self.prior_params(x)
            with poutine.scale(scale=c.beta):
                z = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            y_loc = self.decoder_z(z) + self.decoder_x(x)
            pyro.sample("y", dist.Normal(y_loc, c.eta_dec).to_event(1), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._register()
        with pyro.plate("data", x.shape[-2], dim=-1, device=x.device):
            loc, scale = self.encoder(x, y)
            with poutine.scale(scale=self.config.beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def linear_readout(self, bundle) -> xr.Dataset:
        """Decoder z-branch singular values, ``W2 E^(1/2)`` singular values and encoder stds (SPEC 4.3).

        Needs the standard prior (the theory has no learned prior). Modes are
        ordered by decoder singular value; see :mod:`ppl_vae.models.readout`.
        """
        self._require_linear()
        if self.prior is not None:
            raise ValueError("linear_readout needs prior='standard' (the theory has no learned prior)")
        std = self.encoder.log_std.exp()
        return readout.cvae_readout(bundle.x, bundle.y, self.encoder.y_map.weight, self.decoder_z.weight, std)
