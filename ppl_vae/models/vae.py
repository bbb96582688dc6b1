"""One-latent VAE (SPEC 2.1).

    p(z)   = N(0, eta_enc^2 I)           q(z|x) = N(enc(x), Sigma)
    p(x|z) = N(dec(z), eta_dec^2 I)

Loss per sample: -E_q[log p(x|z)] + beta KL(q(z|x) || p(z)). For ``arch='linear'``
enc(x) = W x and dec(z) = U z (no biases) and Sigma is a free diagonal (or fixed).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import xarray as xr
from pyro import poutine

from ppl_vae.models.base import LatentVariableModel
from ppl_vae.models.config import VAEConfig
from ppl_vae.models.networks import DiagonalGaussian, decoder_for, feature_body
from ppl_vae.models import readout


class VAE(LatentVariableModel):
    family = "vae"
    observed_site = "x"
    latent_sites = ("z",)
    analytic_kl_sites = ("z",)
    kl_levels = {"z": ""}

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        body, width = feature_body(config.arch, config.input_dim, config.hidden_dims, config.image_shape)
        self.encoder = DiagonalGaussian(body, width, config.latent_dim, std=config.encoder_std)
        self.decoder = decoder_for(config.arch, config.latent_dim, config.input_dim, config.hidden_dims,
                                   config.image_shape)

    @property
    def latent_dims(self) -> dict[str, int]:
        return {"z": self.config.latent_dim}

    def model(self, x: torch.Tensor) -> None:
        self._register()
        c = self.config
        prior_loc = x.new_zeros(x.shape[:-1] + (c.latent_dim,))
        with pyro.plate("data", x.shape[-2], dim=-1, device=x.device):
            with poutine.scale(scale=c.beta):
                z = pyro.sample("z", dist.Normal(prior_loc, c.eta_enc).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), c.eta_dec).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        self._register()
        with pyro.plate("data", x.shape[-2], dim=-1, device=x.device):
            loc, scale = self.encoder(x)
            with poutine.scale(scale=self.config.beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def linear_readout(self, bundle) -> xr.Dataset:
        """Decoder / encoder singular values and encoder stds per mode (SPEC 4.1, 4.2).

        ``encoder_sv`` are the singular values of ``W P diag(phi)^(1/2)`` with
        ``A = E[x x^T] = P diag(phi) P^T`` from ``bundle.x``. Modes are ordered by
        decoder singular value, descending; each latent dimension is matched to a
        mode through its decoder column norm (at the optimum the columns of U are
        orthogonal, so the column norms are the singular values).
        """
        self._require_linear()
        W = self.encoder.loc.weight
        _, encoder_std = self.encoder(W.new_zeros(1, self.config.input_dim))
        return readout.vae_readout(bundle.x, W, self.decoder.weight, encoder_std[0])
