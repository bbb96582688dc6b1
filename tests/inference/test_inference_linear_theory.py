"""SVI takes the linear models to the closed-form optimum of ppl_vae.theory (SPEC 4).

The theory is evaluated on the same training data (SVI converges to the optimum
for the empirical second moments). Thresholds are placed between consecutive
data thetas so that each family is checked with 0, 1 and 2 collapsed modes.
"""

import numpy as np
import pytest
import torch

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference import fit
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model
from ppl_vae.theory.closed_form import linear_cvae, linear_mhvae, linear_vae
from ppl_vae.theory.moments import cvae_thetas, vae_thetas

SPECTRUM = [9.0, 4.84, 1.96, 0.64, 0.25, 0.09]
N, DIM, LATENT = 2000, 6, 4
TRAIN = {"steps": 3000, "lr": 0.03, "lr_decay": 0.999, "progress": False, "device": "cpu"}
ACTIVE_REL_TOL, COLLAPSED_ABS_TOL = 0.03, 0.05


@pytest.fixture(scope="module")
def gaussian():
    return synthetic_gaussian(N, DIM, spectrum=SPECTRUM, seed=3)


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs(N, DIM, correlation="noise_1_2", spectrum=SPECTRUM, seed=3)


def _threshold(theta, n_collapsed):
    """A collapse threshold on theta leaving exactly ``n_collapsed`` of the first LATENT modes below it."""
    if n_collapsed == 0:
        return 0.75 * theta[LATENT - 1]
    return float(np.sqrt(theta[LATENT - n_collapsed] * theta[LATENT - 1 - n_collapsed]))


def _train(config, bundle):
    torch.manual_seed(0)
    model = build_model(config)
    fit(model, bundle, **TRAIN)
    return model.linear_readout(bundle)


def _check(readout, theory, decoder, flags, sv_variables=()):
    for flag in flags:
        assert int(readout[flag].sum()) == int(theory[flag].sum()), flag
    collapsed = theory[flags[-1]].values if decoder.startswith("z2") else theory[flags[0]].values
    measured, predicted = readout[decoder].values, theory[decoder].values
    np.testing.assert_array_less(measured[collapsed], COLLAPSED_ABS_TOL)
    np.testing.assert_allclose(measured[~collapsed], predicted[~collapsed], rtol=ACTIVE_REL_TOL)
    for name in sv_variables:  # further singular values, judged where the theory says they are alive
        alive = theory[name].values > 0
        np.testing.assert_allclose(readout[name].values[alive], theory[name].values[alive], rtol=ACTIVE_REL_TOL)
        np.testing.assert_array_less(readout[name].values[~alive], COLLAPSED_ABS_TOL)


@pytest.mark.parametrize(("beta", "n_collapsed"), [(0.5, 0), (1.0, 1), (2.0, 2)])
def test_linear_vae_learnable_sigma_reaches_theory(gaussian, beta, n_collapsed):
    theta = vae_thetas(gaussian.x)
    eta_dec = _threshold(theta, n_collapsed) / np.sqrt(beta)  # collapse iff theta < sqrt(beta) eta_dec
    theory = linear_vae(gaussian.x, LATENT, beta=beta, eta_dec=eta_dec)
    assert int(theory["collapsed"].sum()) == n_collapsed
    readout = _train(VAEConfig(DIM, LATENT, beta=beta, eta_dec=eta_dec), gaussian)
    _check(readout, theory, "decoder_sv", ("collapsed",), ("encoder_sv",))


@pytest.mark.parametrize(("beta", "n_collapsed"), [(0.5, 0), (1.0, 1), (2.0, 2)])
def test_linear_cvae_reaches_theory(pairs, beta, n_collapsed):
    theta = cvae_thetas(pairs.x, pairs.y)
    eta_dec = float(np.sqrt(_threshold(theta, n_collapsed) / beta))  # collapse iff theta < beta eta_dec^2
    theory = linear_cvae(pairs.x, pairs.y, LATENT, beta=beta, eta_dec=eta_dec)
    assert int(theory["collapsed"].sum()) == n_collapsed
    readout = _train(CVAEConfig(DIM, DIM, LATENT, beta=beta, eta_dec=eta_dec), pairs)
    _check(readout, theory, "decoder_sv", ("collapsed",))
    active = ~theory["collapsed"].values
    np.testing.assert_allclose(readout["encoder_std"].values, theory["encoder_std"].values, rtol=0.03)
    assert active.sum() == LATENT - n_collapsed


@pytest.mark.parametrize(
    ("beta1", "beta2", "eta_dec", "sigma1", "expected"),
    [
        (1.0, 1.0, 0.7, 1.0, (0, 0)),  # case A, everything alive
        (1.0, 1.0, 1.1, 1.5, (1, 0)),  # case A: z1 collapses below sqrt(beta2) eta_dec, z2 stays alive
        (1.0, 2.0, 1.0, 1.0, (1, 2)),  # cases B/C: beta2 kills z2 modes first
    ],
)
def test_linear_mhvae_learnable_sigma2_reaches_theorem_3(gaussian, beta1, beta2, eta_dec, sigma1, expected):
    theory = linear_mhvae(gaussian.x, (LATENT, LATENT), beta1=beta1, beta2=beta2, eta_dec=eta_dec, sigma1=sigma1)
    assert (int(theory["z1_collapsed"].sum()), int(theory["z2_collapsed"].sum())) == expected
    config = MHVAEConfig(DIM, (LATENT, LATENT), beta1=beta1, beta2=beta2, eta_dec=eta_dec, sigma1=sigma1)
    readout = _train(config, gaussian)
    _check(readout, theory, "z2_decoder_sv", ("z1_collapsed", "z2_collapsed"), ("z1_encoder_sv",))
