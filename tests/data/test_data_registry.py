"""load(): dispatch by name, defaults, and rebuilding a bundle from attrs['spec']."""

import json

import numpy as np
import pytest
import torch

from ppl_vae.data import DATASETS, load


def assert_same_bundle(first, second):
    assert first.name == second.name
    assert torch.equal(first.x, second.x)
    assert (first.y is None) == (second.y is None)
    if first.y is not None:
        assert torch.equal(first.y, second.y)
    assert (first.labels is None) == (second.labels is None)
    if first.labels is not None:
        assert torch.equal(first.labels, second.labels)
    assert first.image_shape == second.image_shape
    assert first.split == second.split
    assert first.attrs == second.attrs


def reload(bundle):
    """Rebuild through a JSON round trip, as a saved run does."""
    spec = json.loads(json.dumps(bundle.attrs["spec"]))
    return load(**spec)


@pytest.fixture
def mnist_dir(tmp_path):
    """Plain IDX files holding 6 train images (4 x 4) and no test set."""
    images = np.arange(6 * 16, dtype=np.uint8).reshape(6, 4, 4)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 0x08, 3]) + np.array([6, 4, 4], dtype=">u4").tobytes() + images.tobytes()
    )
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(
        bytes([0, 0, 0x08, 1]) + np.array([6], dtype=">u4").tobytes() + labels.tobytes()
    )
    return tmp_path


def test_dataset_names():
    assert DATASETS == ("synthetic", "digits", "mnist")


def test_paired_defaults_need_no_options():
    synthetic = load("synthetic", paired=True)
    assert synthetic.x.shape == (2000, 16) and synthetic.y.shape == (2000, 16)
    assert synthetic.attrs["seed"] == 0
    digits = load("digits", paired=True)
    assert digits.split == "quadrant"
    assert digits.x.shape == (1797, 16) and digits.y.shape == (1797, 48)


def test_unpaired_defaults():
    synthetic = load("synthetic")
    assert synthetic.x.shape == (2000, 16) and synthetic.y is None
    digits = load("digits")
    assert digits.x.shape == (1797, 64) and digits.y is None and digits.split is None


@pytest.mark.parametrize(
    "name, paired, options",
    [
        ("synthetic", False, {}),
        ("synthetic", False, {"n": 30, "dim": 3, "spectrum": [0.1, 2.0, 1.0 / 3.0], "seed": 4}),
        ("synthetic", True, {}),
        ("synthetic", True, {"n": 25, "dim": 2, "y_dim": 5, "correlation": "noise_1_8", "seed": 9}),
        ("synthetic", True, {"correlation": "identical", "spectrum": [0.7] * 16}),
        ("digits", False, {}),
        ("digits", True, {"split": "half", "classes": [4, 1]}),
    ],
)
def test_spec_rebuilds_identical_bundle(name, paired, options):
    bundle = load(name, paired=paired, **options)
    assert bundle.attrs["spec"]["name"] == name
    assert bundle.attrs["spec"]["paired"] is paired
    assert_same_bundle(bundle, reload(bundle))


@pytest.mark.parametrize("paired, options", [(False, {}), (True, {"classes": [2], "limit": 1, "split": "half"})])
def test_mnist_spec_rebuilds_identical_bundle(mnist_dir, paired, options, monkeypatch, tmp_path_factory):
    bundle = load("mnist", paired=paired, directory=str(mnist_dir), **options)
    # A saved run may be reloaded from another working directory.
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert_same_bundle(bundle, reload(bundle))


def test_mnist_paired_default_split(mnist_dir):
    bundle = load("mnist", paired=True, directory=mnist_dir)
    assert bundle.split == "quadrant"
    assert bundle.x.shape == (6, 4) and bundle.y.shape == (6, 12)


def test_unknown_name_lists_datasets():
    with pytest.raises(ValueError, match="'synthetic', 'digits', 'mnist'"):
        load("cifar")


@pytest.mark.parametrize(
    "name, paired, option",
    [
        ("synthetic", False, "correlation"),
        ("synthetic", True, "classes"),
        ("digits", True, "n"),
        ("mnist", False, "seed"),
    ],
)
def test_unknown_option_lists_allowed(name, paired, option):
    with pytest.raises(ValueError, match="allowed") as error:
        load(name, paired=paired, **{option: 1})
    assert repr(option) in str(error.value)


def test_split_must_agree_with_paired():
    with pytest.raises(ValueError, match="split"):
        load("digits", paired=False, split="half")
    with pytest.raises(ValueError, match="split"):
        load("digits", paired=True, split=None)


def test_paired_must_be_boolean():
    with pytest.raises(ValueError, match="paired"):
        load("digits", paired="yes")


def test_invalid_option_value_is_rejected():
    with pytest.raises(ValueError, match="correlation"):
        load("synthetic", paired=True, correlation="noise_1_3")
    with pytest.raises(ValueError, match="n"):
        load("synthetic", n=0)
