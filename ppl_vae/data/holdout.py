"""Seeded train / test partition of a bundle."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ppl_vae._validate import check_int_range
from ppl_vae.data.bundle import DataBundle


def train_test_split(bundle: DataBundle, test_fraction: float = 0.1, seed: int = 0) -> tuple[DataBundle, DataBundle]:
    """Partition a bundle's rows at random into a training and a test part.

    Parameters
    ----------
    bundle
        Data with ``n >= 2`` rows.
    test_fraction
        Share of rows held out, in (0, 1); the test part has
        ``round(test_fraction * n)`` rows, clipped to ``[1, n - 1]``.
    seed
        Seed (>= 0) of the permutation.

    Returns
    -------
    train, test
        Bundles holding disjoint rows (each in the original order) that
        together cover ``bundle``. Each records ``attrs["holdout"]`` =
        ``{"part", "test_fraction", "seed"}``; ``attrs["spec"]`` still
        rebuilds the full data.
    """
    try:
        fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") from None
    if not (0.0 < fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    seed = check_int_range("seed", seed, low=0)
    n = bundle.n
    if n < 2:
        raise ValueError(f"bundle must have at least 2 samples to split, got n = {n}")

    n_test = min(max(int(math.floor(fraction * n + 0.5)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    parts = {"train": np.sort(order[n_test:]), "test": np.sort(order[:n_test])}

    def part(label: str) -> DataBundle:
        rows = bundle.subset(torch.from_numpy(parts[label]).to(bundle.x.device))
        holdout = {"part": label, "test_fraction": fraction, "seed": seed}
        return dataclasses.replace(rows, attrs={**rows.attrs, "holdout": holdout})

    return part("train"), part("test")
