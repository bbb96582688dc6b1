"""Models written the usual Pyro way, independently of ppl_vae's own classes.

Nothing here follows the suite's model contract: sites are named freely
(``latent``, ``obs``), networks reshape their input, modules are registered
with ``pyro.module``, and the data plate is ``pyro.plate("data", len(x))``.
The diagnostics must find everything from the traces.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn


class Encoder(nn.Module):
    def __init__(self, in_dim: int, z_dim: int, hidden: int):
        super().__init__()
        self.in_dim = in_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc21 = nn.Linear(hidden, z_dim)
        self.fc22 = nn.Linear(hidden, z_dim)

    def forward(self, x):
        hidden = nn.functional.softplus(self.fc1(x.reshape(-1, self.in_dim)))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class BernoulliVAE(nn.Module):
    """The Pyro tutorial's VAE: binary pixels, N(0, I) prior, optional KL weight ``beta``."""

    def __init__(self, x_dim: int = 64, z_dim: int = 8, hidden: int = 64, beta: float = 1.0):
        super().__init__()
        self.x_dim, self.z_dim, self.beta = x_dim, z_dim, beta
        self.encoder = Encoder(x_dim, z_dim, hidden)
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim), nn.Sigmoid())

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            with poutine.scale(scale=self.beta):
                z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            probs = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=x.reshape(-1, self.x_dim))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            with poutine.scale(scale=self.beta):
                pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


class CVAE(nn.Module):
    """p(z | x) learned (or N(0, I)), p(y | x, z) = N(dec([z, x]), sigma^2), q(z | x, y) = N(enc([x, y]))."""

    def __init__(self, x_dim: int, y_dim: int, z_dim: int = 4, hidden: int = 32, learned_prior: bool = True,
                 sigma: float = 0.5):
        super().__init__()
        self.learned_prior, self.sigma, self.z_dim = learned_prior, sigma, z_dim
        self.prior_net = Encoder(x_dim, z_dim, hidden)
        self.encoder = Encoder(x_dim + y_dim, z_dim, hidden)
        self.decoder = nn.Sequential(nn.Linear(z_dim + x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))

    def prior(self, x):
        if self.learned_prior:
            return self.prior_net(x)
        return x.new_zeros(x.shape[0], self.z_dim), x.new_ones(x.shape[0], self.z_dim)

    def model(self, x, y=None):
        pyro.module("cvae", self)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.prior(x)
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            mean = self.decoder(torch.cat([z, x], dim=-1))
            pyro.sample("y", dist.Normal(mean, self.sigma).to_event(1), obs=y)

    def guide(self, x, y=None):
        pyro.module("cvae", self)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(torch.cat([x, y], dim=-1))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class TwoLevel(nn.Module):
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2, s1^2), x | z1 ~ N(B z1, s0^2); q(z1 | x) q(z2 | z1), all linear.

    The guide is set to the exact posterior factors (with a diagonal q(z1 | x)),
    so the marginal likelihood and the KLs have closed forms.
    """

    def __init__(self, A, B, s1: float, s0: float):
        super().__init__()
        self.A, self.B, self.s1, self.s0 = A, B, s1, s0
        d1, d2 = A.shape
        prior_z1 = A @ A.T + s1**2 * torch.eye(d1)
        post_z1 = torch.linalg.inv(torch.linalg.inv(prior_z1) + B.T @ B / s0**2)
        post_z2 = torch.linalg.inv(torch.eye(d2) + A.T @ A / s1**2)
        self.W1 = nn.Parameter(post_z1 @ B.T / s0**2)
        self.e1 = nn.Parameter(post_z1.diagonal().sqrt())
        self.W2 = nn.Parameter(post_z2 @ A.T / s1**2)
        self.e2 = nn.Parameter(post_z2.diagonal().sqrt())

    def marginal(self) -> torch.distributions.MultivariateNormal:
        cov = self.B @ (self.A @ self.A.T + self.s1**2 * torch.eye(self.A.shape[0])) @ self.B.T
        return torch.distributions.MultivariateNormal(torch.zeros(self.B.shape[0]), cov + self.s0**2 * torch.eye(self.B.shape[0]))

    def model(self, x):
        pyro.module("two_level", self)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(x.shape[0], self.A.shape[1]), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.A.T, self.s1).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.B.T, self.s0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("two_level", self)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x @ self.W1.T, self.e1).to_event(1))
            pyro.sample("z2", dist.Normal(z1 @ self.W2.T, self.e2).to_event(1))


def laplace_model(x):
    """A Laplace latent (plain functions, parameters in Pyro's parameter store only)."""
    weight = pyro.param("decoder_weight", torch.eye(x.shape[1], 3))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Laplace(x.new_zeros(3), x.new_ones(3)).to_event(1))
        pyro.sample("x", dist.Normal(z @ weight.T, 0.5).to_event(1), obs=x)


def laplace_guide(x):
    weight = pyro.param("encoder_weight", torch.zeros(3, x.shape[1]))
    log_scale = pyro.param("encoder_log_scale", torch.zeros(3))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Laplace(x @ weight.T, log_scale.exp()).to_event(1))


def train(model, guide, args: tuple, steps: int, lr: float = 1e-2, seed: int = 0) -> list[float]:
    """Plain SVI with Trace_ELBO and Adam, full batch, as a Pyro user writes it."""
    pyro.set_rng_seed(seed)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=pyro.infer.Trace_ELBO())
    return [svi.step(*args) / args[0].shape[0] for _ in range(steps)]
