"""Config validation and serialisation."""

import json

import pytest

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
