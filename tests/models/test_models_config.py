"""Config validation and serialisation."""

import json

import numpy as np
import pytest
import torch

from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, config_from_dict


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: VAEConfig(4, 2, beta=0.0), "beta"),
        (lambda: VAEConfig(4, 2, beta=-1.0), "beta"),
        (lambda: VAEConfig(4, 2, eta_dec=float("nan")), "eta_dec"),
        (lambda: VAEConfig(4, 0), "latent_dim"),
        (lambda: VAEConfig(0, 2), "input_dim"),
        (lambda: VAEConfig(4, 2, arch="transformer"), "arch"),
        (lambda: VAEConfig(4, 2, encoder_std=(1.0, 2.0, 3.0)), "encoder_std"),
        (lambda: VAEConfig(4, 2, encoder_std=0.0), "encoder_std"),
        (lambda: VAEConfig(4, 2, arch="cnn"), "image_shape"),
        (lambda: VAEConfig(5, 2, arch="cnn", image_shape=(2, 2)), "input_dim"),
        (lambda: VAEConfig(4, 2, arch="mlp", hidden_dims=(0,)), "hidden_dims"),
        (lambda: CVAEConfig(4, 4, 2, eta_enc=0.0), "eta_enc"),
        (lambda: CVAEConfig(4, 4, 2, prior="flat"), "prior"),
        (lambda: CVAEConfig(4, 4, 2, latent_mapping="shared"), "latent_mapping"),
        (lambda: CVAEConfig(4, 12, 2, arch="cnn", image_shape=(4, 4)), "split"),
        (lambda: MHVAEConfig(4, (2,), beta1=1.0), "latent_dims"),
        (lambda: MHVAEConfig(4, (2, 2), beta2=0.0), "beta2"),
        (lambda: MHVAEConfig(4, (2, 2), sigma1=-1.0), "sigma1"),
    ],
)
def test_invalid_values_name_the_field(factory, field):
    with pytest.raises(ValueError, match=field):
        factory()


@pytest.mark.parametrize(
    "config",
    [
        VAEConfig(6, 3, arch="mlp", hidden_dims=(16, 8), beta=2.0, encoder_std=(0.5, 1.0, 2.0)),
        VAEConfig(64, 4, arch="cnn", image_shape=(8, 8), encoder_std=0.3),
        CVAEConfig(16, 48, 4, arch="cnn", image_shape=(8, 8), split="quadrant", prior="learned",
                   latent_mapping="separate"),
        MHVAEConfig(6, (3, 2), beta1=0.5, beta2=2.0, sigma1=None, sigma2=0.7),
    ],
)
def test_to_dict_round_trips_through_json(config):
    as_dict = config.to_dict()
    assert as_dict["family"] == config.family
    assert config_from_dict(json.loads(json.dumps(as_dict))) == config


def test_config_from_dict_rejects_unknown_family():
    with pytest.raises(ValueError, match="family"):
        config_from_dict({"family": "gan", "input_dim": 3})


def test_hyperparameters_are_the_scalar_weights_and_kl_controls():
    assert CVAEConfig(4, 4, 2, beta=0.5, eta_dec=2.0, kl_warmup=10).hyperparameters() == {
        "beta": 0.5, "eta_enc": 1.0, "eta_dec": 2.0, "kl_warmup": 10, "kl_cycle": 0, "kl_cycle_ratio": 0.5,
        "free_bits": 0.0}
    controls = {f"{name}{level}" for name in ("kl_warmup", "kl_cycle", "kl_cycle_ratio", "free_bits")
                for level in "12"}
    assert set(MHVAEConfig(4, (2, 2)).hyperparameters()) == {"beta1", "beta2", "eta_enc", "eta_dec"} | controls


@pytest.mark.parametrize(("options", "match"), [
    ({"kl_warmup": -1}, "kl_warmup"),
    ({"kl_cycle": 1.5}, "kl_cycle"),
    ({"kl_cycle_ratio": 0.0}, r"kl_cycle_ratio must be in \(0, 1\]"),
    ({"free_bits": float("nan")}, "free_bits must be >= 0"),
    ({"kl_warmup": 10, "kl_cycle": 20}, "not both"),
])
def test_kl_controls_are_checked_by_name(options, match):
    with pytest.raises(ValueError, match=match):
        CVAEConfig(4, 4, 2, **options)


def test_configs_are_frozen():
    config = VAEConfig(4, 2)
    with pytest.raises(AttributeError):
        config.beta = 3.0


# ----------------------------------------------------------------------------- data that does not fit


def _pairs(x, y):
    from ppl_vae.data.bundle import DataBundle

    return DataBundle("mine", x=x, y=y)


@pytest.mark.parametrize(("x", "y", "match"), [
    (torch.zeros(5, 3), torch.zeros(6, 2), "same number of rows"),
    (torch.zeros(0, 3), torch.zeros(0, 2), "x has no rows"),
    (torch.zeros(5, 3, dtype=torch.int64), torch.zeros(5, 2), "x must hold floating-point values, got dtype torch.int64"),
    (np.zeros((5, 3), dtype=np.float32), torch.zeros(5, 2), "x must be a torch.Tensor, got numpy.ndarray"),
    (torch.zeros(5, 3), torch.full((5, 2), float("nan")), "y contains 10 NaN"),
])
def test_data_that_does_not_fit_is_refused_naming_the_tensor(x, y, match):
    from ppl_vae.models.config import check_data

    with pytest.raises(ValueError, match=match):
        check_data(CVAEConfig(3, 2, 2), _pairs(x, y))


def test_y_with_more_rows_than_x_is_refused_before_training_not_cut():
    from ppl_vae.inference import fit
    from ppl_vae.models import build_model

    with pytest.raises(ValueError, match="same number of rows"):
        fit(build_model(CVAEConfig(3, 2, 2)), _pairs(torch.zeros(5, 3), torch.zeros(8, 2)), steps=1,
            progress=False, device="cpu")


@pytest.mark.parametrize(("config", "match"), [
    (CVAEConfig(3, 2, 4), "latent_dim must be <= y_dim = 2"),
    (VAEConfig(3, 5), "latent_dim must be <= input_dim = 3"),
    (MHVAEConfig(4, (3, 4)), r"d2 <= d1 <= input_dim = 4"),
])
def test_a_linear_latent_wider_than_its_data_is_refused_before_training(config, match):
    from ppl_vae.models.config import check_data

    data = _pairs(torch.zeros(5, 3), torch.zeros(5, 2)) if config.family == "cvae" else \
        _pairs(torch.zeros(5, config.data_dims["x"]), None)
    with pytest.raises(ValueError, match=match):
        check_data(config, data)


def test_float64_data_is_cast_to_float32_with_a_note():
    from ppl_vae.models.config import as_training_data

    bundle = _pairs(torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 2))
    with pytest.warns(UserWarning, match="data x cast from float64 to float32"):
        cast = as_training_data(bundle)
    assert cast.x.dtype == torch.float32 and cast.y is bundle.y
