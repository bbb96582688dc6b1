"""Data for the collapse experiments: synthetic Gaussians, bundled digits, local MNIST, the user's files.

Every loader returns a :class:`DataBundle` of float32 tensors whose
``attrs["spec"]`` rebuilds it through :func:`load`.
"""

from ppl_vae.data.bundle import DataBundle
from ppl_vae.data.files import FILE_SUFFIXES, DataFileError, load_file, load_xarray
from ppl_vae.data.holdout import train_test_split
from ppl_vae.data.images import (
    MNIST_FILES,
    QUADRANT_ORDER,
    SPLITS,
    join_split,
    load_digits,
    load_mnist,
    read_idx,
    split_images,
)
from ppl_vae.data.registry import DATASETS, load
from ppl_vae.data.synthetic import CORRELATION_LEVELS, synthetic_gaussian, synthetic_pairs

__all__ = [
    "CORRELATION_LEVELS",
    "DATASETS",
    "DataBundle",
    "DataFileError",
    "FILE_SUFFIXES",
    "MNIST_FILES",
    "QUADRANT_ORDER",
    "SPLITS",
    "join_split",
    "load",
    "load_digits",
    "load_file",
    "load_mnist",
    "load_xarray",
    "read_idx",
    "split_images",
    "synthetic_gaussian",
    "synthetic_pairs",
    "train_test_split",
]
