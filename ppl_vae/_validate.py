"""Argument checks shared by every layer.

Each check raises ``ValueError`` whose message names the parameter and the
allowed range, so that a user sees at once which argument to fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ``ValueError``."""
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number (> 0), got {value!r}") from None
    if not math.isfinite(as_float) or as_float <= 0.0:
        raise ValueError(f"{name} must be a positive finite number (> 0), got {value!r}")
    return as_float


def check_positive_seq(name: str, values: Iterable[float]) -> np.ndarray:
    """Return a float64 array of ``values`` if every entry is finite and > 0."""
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(array)) or np.any(array <= 0.0):
        raise ValueError(f"{name} must contain only positive finite numbers (> 0), got {array.tolist()!r}")
    return array


def check_int_range(name: str, value: int, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[low, high]`` (``high`` None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{upper}, got {value}")
    return value


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_finite_matrix(name: str, array: np.ndarray) -> np.ndarray:
    """Return ``array`` if it is 2-D with no NaN or inf entries."""
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (n_samples, n_features), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values; all entries must be finite")
    return array
