"""Closed-form collapse predictions for linear VAE, CVAE and MHVAE (float64).

- :mod:`~ppl_vae.theory.moments`      data statistics theta (SPEC section 3)
- :mod:`~ppl_vae.theory.closed_form`  global optima and collapsed modes (SPEC section 4)
- :mod:`~ppl_vae.theory.thresholds`   largest beta / eta_dec keeping k modes active
- :mod:`~ppl_vae.theory.mhvae_thresholds` the MHVAE's (Theorem 3) beta1 / beta2 / eta_dec thresholds
- :mod:`~ppl_vae.theory.numeric`      independent check: direct minimisation of the expected loss
- :mod:`~ppl_vae.theory.free_bits`    linear VAE / CVAE optima under free bits (mode by mode)
"""

from ppl_vae.theory.closed_form import linear_cvae, linear_mhvae, linear_vae
from ppl_vae.theory.free_bits import linear_cvae_free_bits, linear_vae_free_bits
from ppl_vae.theory.moments import cvae_thetas, residual_moment, second_moment, vae_thetas
from ppl_vae.theory.numeric import (
    cvae_expected_loss,
    mhvae_expected_loss,
    numeric_linear_cvae,
    numeric_linear_cvae_free_bits,
    numeric_linear_mhvae,
    numeric_linear_vae,
    numeric_linear_vae_free_bits,
    vae_expected_loss,
)
from ppl_vae.theory.mhvae_thresholds import mhvae_collapse_thresholds, mhvae_thresholds_from_spectrum
from ppl_vae.theory.thresholds import collapse_thresholds, data_scale_eta_dec, thresholds_from_spectrum

__all__ = [
    "collapse_thresholds",
    "cvae_expected_loss",
    "cvae_thetas",
    "data_scale_eta_dec",
    "linear_cvae",
    "linear_cvae_free_bits",
    "linear_mhvae",
    "linear_vae",
    "linear_vae_free_bits",
    "mhvae_collapse_thresholds",
    "mhvae_expected_loss",
    "mhvae_thresholds_from_spectrum",
    "numeric_linear_cvae",
    "numeric_linear_cvae_free_bits",
    "numeric_linear_mhvae",
    "numeric_linear_vae",
    "numeric_linear_vae_free_bits",
    "residual_moment",
    "second_moment",
    "thresholds_from_spectrum",
    "vae_expected_loss",
    "vae_thetas",
]
