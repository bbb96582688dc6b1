"""Tiny linear Gaussian stand-ins that follow the model contract, with weights set by hand.

They need no training, and their posteriors, KLs and marginal likelihoods are
known in closed form, which is what the diagnostics tests check against.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine



@dataclass(frozen=True)
class StandInConfig:
    family: str
    beta: float = 1.0
    eta_enc: float = 1.0
    eta_dec: float = 1.0
    beta2: float | None = None
    arch: str = "stand-in"

    def to_dict(self):
        return {"family": self.family, "beta": self.beta, "eta_enc": self.eta_enc, "eta_dec": self.eta_dec}

    def hyperparameters(self):
        hp = {"beta": self.beta, "eta_enc": self.eta_enc, "eta_dec": self.eta_dec}
        if self.beta2 is not None:
            hp["beta2"] = self.beta2
        return hp


class LinearVAE(torch.nn.Module):
    """p(z) = N(0, eta_enc^2), p(x|z) = N(U z, eta_dec^2), q(z|x) = N(W x, diag(s^2))."""

    observed_site = "x"
    latent_sites = ("z",)

    def __init__(self, U, W, s, beta=1.0, eta_enc=1.0, eta_dec=1.0):
        super().__init__()
        self.config = StandInConfig("vae", beta, eta_enc, eta_dec)
        self.family = "vae"
        self.U, self.W, self.s = (torch.nn.Parameter(torch.as_tensor(t, dtype=torch.float32)) for t in (U, W, s))

    @property
    def latent_dims(self):
        return {"z": self.U.shape[1]}

    def model(self, x):
        c = self.config
        with pyro.plate("data", x.shape[-2], dim=-1):
            with poutine.scale(scale=c.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.U.shape[1]), c.eta_enc).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.U.T, c.eta_dec).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[-2], dim=-1):
            with poutine.scale(scale=self.config.beta):
                pyro.sample("z", dist.Normal(x @ self.W.T, self.s).to_event(1))


class LinearMHVAE(torch.nn.Module):
    """z2 -> z1 -> x top-down; q(z1|x) = N(W1 x, s1^2), q(z2|z1) = N(W2 z1, s2^2)."""

    observed_site = "x"
    latent_sites = ("z1", "z2")

    def __init__(self, U1, U2, W1, W2, s1, s2, beta1=1.0, beta2=1.0, eta_enc=1.0, eta_dec=1.0):
        super().__init__()
        self.config = StandInConfig("mhvae", beta1, eta_enc, eta_dec, beta2=beta2)
        self.family = "mhvae"
        self.betas = (beta1, beta2)
        tensors = (U1, U2, W1, W2, s1, s2)
        self.U1, self.U2, self.W1, self.W2, self.s1, self.s2 = (
            torch.nn.Parameter(torch.as_tensor(t, dtype=torch.float32)) for t in tensors
        )

    @property
    def latent_dims(self):
        return {"z1": self.U1.shape[1], "z2": self.U2.shape[1]}

    def model(self, x):
        c = self.config
        with pyro.plate("data", x.shape[-2], dim=-1):
            with poutine.scale(scale=self.betas[1]):
                z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.U2.shape[1]), c.eta_enc).to_event(1))
            with poutine.scale(scale=self.betas[0]):
                z1 = pyro.sample("z1", dist.Normal(z2 @ self.U2.T, c.eta_dec).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.U1.T, c.eta_dec).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[-2], dim=-1):
            with poutine.scale(scale=self.betas[0]):
                z1 = pyro.sample("z1", dist.Normal(x @ self.W1.T, self.s1).to_event(1))
            with poutine.scale(scale=self.betas[1]):
                pyro.sample("z2", dist.Normal(z1 @ self.W2.T, self.s2).to_event(1))


class LinearCVAE(torch.nn.Module):
    """p(z|x) = N(0, eta_enc^2), p(y|x,z) = N(U1 z + U2 x, eta_dec^2), q(z|x,y) = N(W1 x + W2 y, s^2)."""

    observed_site = "y"
    latent_sites = ("z",)

    def __init__(self, U1, U2, W1, W2, s, beta=1.0):
        super().__init__()
        self.config = StandInConfig("cvae", beta)
        self.family = "cvae"
        self.U1, self.U2, self.W1, self.W2, self.s = (
            torch.nn.Parameter(torch.as_tensor(t, dtype=torch.float32)) for t in (U1, U2, W1, W2, s)
        )

    @property
    def latent_dims(self):
        return {"z": self.U1.shape[1]}

    def model(self, x, y):
        c = self.config
        with pyro.plate("data", x.shape[-2], dim=-1):
            with poutine.scale(scale=c.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.U1.shape[1]), c.eta_enc).to_event(1))
            pyro.sample("y", dist.Normal(z @ self.U1.T + x @ self.U2.T, c.eta_dec).to_event(1), obs=y)

    def guide(self, x, y):
        with pyro.plate("data", x.shape[-2], dim=-1):
            with poutine.scale(scale=self.config.beta):
                pyro.sample("z", dist.Normal(x @ self.W1.T + y @ self.W2.T, self.s).to_event(1))


def exact_posterior_vae(dim=4, latent=3, eta_enc=1.0, eta_dec=0.5, seed=0):
    """A linear VAE whose guide IS the exact posterior (U has orthogonal columns)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    norms = torch.tensor([2.0, 1.0, 0.0][:latent] + [0.5] * max(0, latent - 3), dtype=torch.float64)
    U = q[:, :latent] * norms  # the third column is zero: that dimension is collapsed
    precision = (norms**2) / eta_dec**2 + 1.0 / eta_enc**2
    W = (U.T / eta_dec**2) / precision[:, None]
    s = precision.rsqrt()
    return LinearVAE(U, W, s, eta_enc=eta_enc, eta_dec=eta_dec), (U, eta_enc, eta_dec)


