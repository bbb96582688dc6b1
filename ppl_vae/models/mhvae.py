"""Two-level Markovian hierarchical VAE (SPEC 2.3).

    p(z2)    = N(0, eta_enc^2 I)              q(z1|x)  = N(enc1(x), Sigma1)
    p(z1|z2) = N(dec2(z2), eta_dec^2 I)       q(z2|z1) = N(enc2(z1), Sigma2)
    p(x|z1)  = N(dec1(z1), eta_dec^2 I)

Loss per sample: -E_q[log p(x|z1)] + beta1 E_q[log q(z1|x) - log p(z1|z2)]
+ beta2 E_q[log q(z2|z1) - log p(z2)]. The guide is bottom-up while the model is
top-down, so the pair is not mean-field: train with ``Trace_ELBO`` (SPEC 7).
For ``arch='linear'``: enc1 = W1, enc2 = W2, dec1 = U1, dec2 = U2, no biases.
Sigma1 / Sigma2 are fixed isotropic (``sigma1`` / ``sigma2``) or learnable.
The z1 -> z2 maps are MLPs for ``arch='cnn'`` (z1 is a vector).

Skip path (``z2_input='z1+x'``): q(z2|z1, x) = N(enc2([z1, x]), Sigma2), the
encoder of z2 reading x beside z1 (linear: W2 z1 + W3 x). The model is
unchanged, and p(z2) still has no parent, so KL(q(z2|z1, x) || p(z2)) stays
exact given the sampled z1.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import xarray as xr
from pyro import poutine

from ppl_vae._shapes import broadcast_shapes  # torch.broadcast_shapes imports sympy on first use (~0.5 s)
from ppl_vae.models import readout
from ppl_vae.models.base import LatentVariableModel
from ppl_vae.models.config import MHVAEConfig
from ppl_vae.models.networks import DiagonalGaussian, decoder_for, feature_body


def encoder2_width(config: MHVAEConfig) -> int:
    """Width of what q(z2 | .) reads: d1, plus the input width with the skip path."""
    return config.latent_dims[0] + (config.input_dim if config.z2_input == "z1+x" else 0)


def encoder2_input(config: MHVAEConfig, z1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What q(z2 | .) reads: ``z1``, or ``[z1, x]`` with the skip path.

    ``z1`` may carry more leading dimensions than ``x`` (a plate of samples or
    of configurations around the data plate); ``x`` is broadcast to them.
    A function of the config, not a method, so that the batched engine, which
    runs this module's ``guide`` on stacked networks, finds it too.
    """
    if config.z2_input == "z1":
        return z1
    lead = broadcast_shapes(z1.shape[:-1], x.shape[:-1])
    return torch.cat([z1.expand(*lead, z1.shape[-1]), x.expand(*lead, x.shape[-1])], dim=-1)


class MHVAE(LatentVariableModel):
    family = "mhvae"
    observed_site = "x"
    latent_sites = ("z1", "z2")
    # p(z1|z2) depends on z2, which the bottom-up guide draws after z1: z1's term is sampled
    # (Trace_ELBO, SPEC 7). p(z2) has no parent, so KL(q(z2|z1) || p(z2)) is exact given z1.
    analytic_kl_sites = ("z2",)
    kl_levels = {"z1": "1", "z2": "2"}

    def __init__(self, config: MHVAEConfig):
        super().__init__(config)
        d1, d2 = config.latent_dims
        top_arch = "mlp" if config.arch == "cnn" else config.arch
        body1, width1 = feature_body(config.arch, config.input_dim, config.hidden_dims, config.image_shape)
        body2, width2 = feature_body(top_arch, encoder2_width(config), config.hidden_dims)
        self.encoder1 = DiagonalGaussian(body1, width1, d1, std=config.sigma1)
        self.encoder2 = DiagonalGaussian(body2, width2, d2, std=config.sigma2)
        self.decoder1 = decoder_for(config.arch, d1, config.input_dim, config.hidden_dims, config.image_shape)
        self.decoder2 = decoder_for(top_arch, d2, d1, config.hidden_dims)

    @property
    def latent_dims(self) -> dict[str, int]:
        d1, d2 = self.config.latent_dims
        return {"z1": d1, "z2": d2}

    def model(self, x: torch.Tensor) -> None:
        self._register()
        c = self.config
        prior_loc = x.new_zeros(x.shape[:-1] + (c.latent_dims[1],))
        with pyro.plate("data", x.shape[-2], dim=-1, device=x.device):
            with poutine.scale(scale=c.beta2):
                z2 = pyro.sample("z2", dist.Normal(prior_loc, c.eta_enc).to_event(1))
            with poutine.scale(scale=c.beta1):
                z1 = pyro.sample("z1", dist.Normal(self.decoder2(z2), c.eta_dec).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder1(z1), c.eta_dec).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        self._register()
        c = self.config
        with pyro.plate("data", x.shape[-2], dim=-1, device=x.device):
            loc1, scale1 = self.encoder1(x)
            with poutine.scale(scale=c.beta1):
                z1 = pyro.sample("z1", dist.Normal(loc1, scale1).to_event(1))
            loc2, scale2 = self.encoder2(encoder2_input(c, z1, x))
            with poutine.scale(scale=c.beta2):
                pyro.sample("z2", dist.Normal(loc2, scale2).to_event(1))

    def linear_readout(self, bundle) -> xr.Dataset:
        """z1 encoder singular values, z2 decoder singular values and learned z2 stds (SPEC 4.4, 4.5)."""
        self._require_linear()
        if self.config.z2_input != "z1":
            raise ValueError(f"linear_readout needs z2_input='z1' (Theorems 3 and 5 have no skip path x -> z2), "
                             f"this model has z2_input={self.config.z2_input!r}")
        z2_std = None
        if self.encoder2.learnable_std:
            _, scale = self.encoder2(self.encoder2.loc.weight.new_zeros(1, encoder2_width(self.config)))
            z2_std = scale[0]
        return readout.mhvae_readout(bundle.x, self.encoder1.loc.weight, self.decoder2.weight, z2_std)
