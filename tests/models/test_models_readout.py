"""Linear readout: theory coordinates, mode matching, comparison helpers."""

import numpy as np
import pytest
import torch

from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model, compare_with_theory, count_collapsed
from ppl_vae.theory import linear_cvae, linear_mhvae, linear_vae


@pytest.fixture(scope="module")
def gaussian():
    return synthetic_gaussian(300, 5, spectrum=[4.0, 2.0, 1.0, 0.5, 0.25], seed=2)


def test_vae_readout_matches_modes_by_decoder_column_norm(gaussian):
    model = build_model(VAEConfig(5, 3))
    column_norms = torch.tensor([0.5, 2.0, 0.0])
    stds = torch.tensor([0.3, 0.1, 1.0])
    basis, _ = torch.linalg.qr(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        model.decoder.weight.copy_(basis * column_norms)
        model.encoder.log_std.copy_(stds.log())
    readout = model.linear_readout(gaussian)
    np.testing.assert_allclose(readout["decoder_sv"], [2.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(readout["encoder_std"], [0.1, 0.3, 1.0], rtol=1e-6)
    assert readout["collapsed"].values.tolist() == [False, False, True]
    theory = linear_vae(gaussian.x, 3)
    np.testing.assert_allclose(readout["theta"], theory["theta"], rtol=1e-6)
    assert set(theory.data_vars) >= {"theta", "decoder_sv", "encoder_sv", "encoder_std", "collapsed"}
    assert readout.sizes == theory.sizes


def test_vae_encoder_sv_uses_the_whitened_frame(gaussian):
    # W = diag(phi)^(-1/2) P^T (first rows) whitens x, so W P diag(phi)^(1/2) = [I 0]: all singular values 1
    model = build_model(VAEConfig(5, 3))
    moment = (gaussian.x.double().T @ gaussian.x.double()) / gaussian.n
    phi, basis = torch.linalg.eigh(moment)
    phi, basis = phi.flip(0), basis.flip(1)
    with torch.no_grad():
        model.encoder.loc.weight.copy_(((basis / phi.sqrt()).T)[:3].float())
    np.testing.assert_allclose(model.linear_readout(gaussian)["encoder_sv"], 1.0, rtol=1e-4)


def test_cvae_readout_aligns_with_theory_and_compare_subtracts():
    pairs = synthetic_pairs(300, 4, correlation="noise_1_2", seed=0)
    model = build_model(CVAEConfig(4, 4, 2, beta=1.0, eta_dec=0.3))
    readout = model.linear_readout(pairs)
    theory = linear_cvae(pairs.x, pairs.y, 2, beta=1.0, eta_dec=0.3)
    np.testing.assert_allclose(readout["theta"], theory["theta"], rtol=1e-6)
    comparison = compare_with_theory(readout, theory)
    np.testing.assert_allclose(comparison["decoder_sv_error"], readout["decoder_sv"] - theory["decoder_sv"])
    assert comparison.attrs["n_collapsed_predicted"] == int(theory["collapsed"].sum())
    with pytest.raises(ValueError, match="learned"):
        build_model(CVAEConfig(4, 4, 2, prior="learned")).linear_readout(pairs)


def test_mhvae_readout_has_theory_modes_and_nan_outside_a_latent(gaussian):
    model = build_model(MHVAEConfig(5, (3, 2)))
    readout = model.linear_readout(gaussian)
    theory = linear_mhvae(gaussian.x, (3, 2))
    assert readout.sizes["mode"] == theory.sizes["mode"] == 3
    assert set(theory.data_vars) == set(readout.data_vars)
    assert np.isnan(readout["z2_decoder_sv"][2]) and np.isnan(theory["z2_decoder_sv"][2])
    assert readout["in_z2"].values.tolist() == theory["in_z2"].values.tolist()


def test_count_collapsed_recounts_with_a_tolerance():
    model = build_model(VAEConfig(5, 3))
    with torch.no_grad():
        model.decoder.weight.copy_(torch.eye(5, 3) * torch.tensor([1.0, 0.2, 0.01]))
    readout = model.linear_readout(synthetic_gaussian(50, 5, seed=0))
    assert count_collapsed(readout) == {"collapsed": 1}
    assert count_collapsed(readout, tol=0.5) == {"collapsed": 2}


def test_readout_needs_a_linear_model(gaussian):
    with pytest.raises(ValueError, match="linear"):
        build_model(VAEConfig(5, 2, arch="mlp", hidden_dims=(4,))).linear_readout(gaussian)
