"""Seeded train / test partition of a bundle."""

from __future__ import annotations

import dataclasses
import hashlib
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
        ``{"part", "test_fraction", "seed", "n_test", "test_rows_sha256"}``
        (:func:`rows_digest` of the held-out rows); ``attrs["spec"]`` still
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

    n_test = split_sizes(n, fraction)[1]
    order = np.random.default_rng(seed).permutation(n)
    parts = {"train": np.sort(order[n_test:]), "test": np.sort(order[:n_test])}

    def part(label: str) -> DataBundle:
        rows = bundle.subset(torch.from_numpy(parts[label]).to(bundle.x.device))
        holdout = {"part": label, "test_fraction": fraction, "seed": seed, "n_test": n_test,
                   "test_rows_sha256": rows_digest(parts["test"])}
        return dataclasses.replace(rows, attrs={**rows.attrs, "holdout": holdout})

    return part("train"), part("test")


def rows_digest(rows: np.ndarray) -> str:
    """SHA-256 of row indices ``(n,)`` as little-endian int64: the fingerprint of a split, stored with a run."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<i8").tobytes()).hexdigest()


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """``(n_train, n_test)`` of :func:`train_test_split` for ``n >= 2`` rows (0 < test_fraction < 1).

    ``n_test = round(test_fraction * n)`` clipped to ``[1, n - 1]``, so neither part is empty.
    With ``test_fraction == 0`` (no split) all ``n`` rows train.
    """
    if not 0.0 <= test_fraction < 1.0:  # also refuses NaN
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if test_fraction == 0.0 or n < 2:
        return n, 0
    n_test = min(max(int(math.floor(test_fraction * n + 0.5)), 1), n - 1)
    return n - n_test, n_test


def check_split(n: int, test_fraction: float, name: str = "test_fraction") -> tuple[int, int]:
    """``(n_train, n_test)``, refusing a fraction that would round to holding out every row (or none).

    :func:`train_test_split` clips such a fraction to keep one row on each side;
    a command line refuses it instead, naming the option, so that ``0.999`` of 80
    rows is an error rather than a run trained on a single row.

    Raises
    ------
    ValueError
        ``test_fraction`` outside [0, 1), or ``round(test_fraction * n)`` equal to
        ``n`` (nothing to train on) or to 0 (nothing held out) for ``test_fraction > 0``.
    """
    try:
        fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {test_fraction!r}") from None
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {test_fraction!r}")
    if fraction > 0.0:
        held = int(math.floor(fraction * n + 0.5))
        if held >= n or held == 0 or n < 2:
            raise ValueError(f"{name} {test_fraction!r} would hold out {held} of the {n} rows, leaving "
                             f"{'none to train on' if held >= n else 'none held out'}; choose a fraction that "
                             f"leaves rows on both sides (e.g. 0.1), or 0 for no held-out rows")
    return split_sizes(n, fraction)


def held_out_split(bundle: DataBundle, train_options: dict) -> tuple[DataBundle, DataBundle | None]:
    """(training data, held-out data or None) as a run's training options describe.

    A run trained with ``test_fraction`` > 0 (and ``split_seed``, default 0) in
    its ``train`` options was fitted on the training part; the rest is held out
    (:func:`train_test_split`).
    """
    fraction = float(train_options.get("test_fraction") or 0.0)
    if fraction <= 0.0:
        return bundle, None
    return train_test_split(bundle, fraction, seed=int(train_options.get("split_seed", 0)))
