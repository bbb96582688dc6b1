"""Seeded train / test partition."""

import numpy as np
import pytest
import torch

from ppl_vae.data import DataBundle, load, train_test_split
from ppl_vae.data.holdout import rows_digest


def numbered_bundle(n):
    """Rows whose x, y and labels all carry the row number."""
    rows = torch.arange(n, dtype=torch.float32)[:, None]
    return DataBundle("numbered", x=rows, y=2 * rows, labels=torch.arange(n), attrs={"spec": {"name": "numbered"}})


def test_parts_are_disjoint_cover_and_sized():
    train, test = train_test_split(numbered_bundle(50), test_fraction=0.2, seed=1)
    assert (train.n, test.n) == (40, 10)
    rows = sorted(train.labels.tolist() + test.labels.tolist())
    assert rows == list(range(50))
    for part in (train, test):
        assert torch.equal(part.x[:, 0], part.labels.float())
        assert torch.equal(part.y, 2 * part.x)


def test_parts_keep_original_order_and_provenance():
    train, test = train_test_split(numbered_bundle(30), seed=2)
    assert train.labels.tolist() == sorted(train.labels.tolist())
    digest = rows_digest(np.asarray(test.labels.tolist()))  # the labels of numbered_bundle are the row indices
    assert test.attrs["holdout"] == {"part": "test", "test_fraction": 0.1, "seed": 2, "n_test": 3,
                                     "test_rows_sha256": digest}
    _, other = train_test_split(numbered_bundle(30), seed=3)
    assert other.attrs["holdout"]["test_rows_sha256"] != digest  # another split, another fingerprint
    assert train.attrs["holdout"]["part"] == "train"
    assert train.attrs["spec"] == {"name": "numbered"}


def test_seed_reproduces_and_other_seed_differs():
    bundle = numbered_bundle(100)
    first = train_test_split(bundle, seed=0)[1].labels
    again = train_test_split(bundle, seed=0)[1].labels
    other = train_test_split(bundle, seed=1)[1].labels
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_at_least_one_row_each_side():
    train, test = train_test_split(numbered_bundle(3), test_fraction=0.01)
    assert (train.n, test.n) == (2, 1)
    train, test = train_test_split(numbered_bundle(3), test_fraction=0.99)
    assert (train.n, test.n) == (1, 2)


def test_split_of_loaded_images_keeps_image_metadata():
    train, test = train_test_split(load("digits", paired=True))
    assert train.n + test.n == 1797
    assert train.split == test.split == "quadrant" and test.image_shape == (8, 8)


@pytest.mark.parametrize(
    "kwargs", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"test_fraction": "a"}, {"seed": -1}]
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        train_test_split(numbered_bundle(10), **kwargs)


def test_rejects_single_sample():
    with pytest.raises(ValueError, match="at least 2"):
        train_test_split(numbered_bundle(1))
