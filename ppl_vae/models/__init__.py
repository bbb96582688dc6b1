"""Pyro model/guide pairs for the VAE, CVAE and MHVAE (SPEC section 2).

>>> config = CVAEConfig(x_dim=16, y_dim=48, latent_dim=8, beta=1.0, eta_dec=0.5)
>>> model = build_model(config)          # a LatentVariableModel
>>> model.model(x, y); model.guide(x, y)  # Pyro programs over bundle.tensors()

Adding a variant means a new config field and a branch in the family's module;
the trainer only sees ``model.model`` / ``model.guide`` and ``model.family``.
"""

from __future__ import annotations

from ppl_vae.models.base import LatentVariableModel
from ppl_vae.models.config import (
    ARCHITECTURES,
    CONFIG_CLASSES,
    CVAEConfig,
    MHVAEConfig,
    ModelConfig,
    VAEConfig,
    config_from_dict,
)
from ppl_vae.models.cvae import CVAE
from ppl_vae.models.mhvae import MHVAE
from ppl_vae.models.readout import COLLAPSE_TOL, compare_with_theory, count_collapsed
from ppl_vae.models.vae import VAE

MODEL_CLASSES: dict[str, type[LatentVariableModel]] = {"vae": VAE, "cvae": CVAE, "mhvae": MHVAE}


def build_model(config: ModelConfig) -> LatentVariableModel:
    """The model of ``config.family`` built from ``config`` (parameters on the CPU, float32)."""
    family = getattr(config, "family", None)
    if family not in MODEL_CLASSES:
        raise ValueError(f"config must be a VAEConfig, CVAEConfig or MHVAEConfig, got {type(config).__name__}")
    return MODEL_CLASSES[family](config)


__all__ = [
    "ARCHITECTURES", "CONFIG_CLASSES", "COLLAPSE_TOL", "CVAE", "CVAEConfig", "LatentVariableModel", "MHVAE",
    "MHVAEConfig", "MODEL_CLASSES", "ModelConfig", "VAE", "VAEConfig", "build_model", "compare_with_theory",
    "config_from_dict", "count_collapsed",
]
