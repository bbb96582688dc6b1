"""Fixtures: stand-in models (standin_models.py) and small data sets."""

from __future__ import annotations

import pytest
import torch

from ppl_vae.data.bundle import DataBundle
from standin_models import LinearCVAE, LinearMHVAE, exact_posterior_vae


@pytest.fixture
def gaussian_bundle():
    gen = torch.Generator().manual_seed(1)
    return DataBundle("synthetic", x=torch.randn(60, 4, generator=gen), attrs={"spec": {"name": "synthetic"}})


@pytest.fixture
def exact_vae():
    return exact_posterior_vae()


@pytest.fixture
def mhvae():
    gen = torch.Generator().manual_seed(2)
    U1, U2 = torch.randn(4, 3, generator=gen), torch.randn(3, 2, generator=gen)
    W1, W2 = torch.randn(3, 4, generator=gen) * 0.5, torch.randn(2, 3, generator=gen) * 0.5
    return LinearMHVAE(U1, U2, W1, W2, torch.full((3,), 0.6), torch.tensor([0.7, 1.0]), beta1=0.5, beta2=2.0,
                       eta_dec=0.8)


@pytest.fixture
def cvae_and_bundle():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 3, generator=gen), torch.randn(40, 5, generator=gen)
    model = LinearCVAE(torch.randn(5, 2, generator=gen), torch.randn(5, 3, generator=gen),
                       torch.randn(2, 3, generator=gen), torch.randn(2, 5, generator=gen), torch.tensor([0.5, 0.9]))
    return model, DataBundle("pairs", x=x, y=y, attrs={"spec": {"name": "synthetic", "paired": True}})
