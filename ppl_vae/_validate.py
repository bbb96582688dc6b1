"""Argument checks shared by every layer.

Each check raises ``ValueError`` whose message names the parameter and the
allowed range, so that a user sees at once which argument to fix.
"""

from __future__ import annotations

import math
import os
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


def check_mapping(name: str, value):
    """Return ``value`` if it is a mapping (a dict, a parsed YAML/JSON object), else ``ValueError`` naming ``name``."""
    from collections.abc import Mapping

    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping (key: value entries), got {type(value).__name__} {value!r:.60}")
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
    check_real(name, array)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values; all entries must be finite")
    return array


# --- hostile input: non-finite or complex values, sizes checked before work --------------------------------------

#: Environment variable overriding :func:`memory_budget` (bytes; ``'8G'``, ``'512M'`` accepted).
BUDGET_VARIABLE = "PPL_VAE_MEMORY_BUDGET"
#: Most values one integer range (``'0-4'``) may hold; checked before it is expanded.
MAX_RANGE_VALUES = 1_000_000


def memory_budget() -> int:
    """Bytes one array (or one data file) may take: ``$PPL_VAE_MEMORY_BUDGET``, else half the physical memory."""
    text = os.environ.get(BUDGET_VARIABLE, "").strip()
    if text:
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1].upper(), 1)
        try:
            return int(float(text[:-1] if scale > 1 else text) * scale)
        except ValueError:
            raise ValueError(f"{BUDGET_VARIABLE} must be a number of bytes like 8G or 512M, got {text!r}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def human_bytes(n: float) -> str:
    """``'1.5 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_bytes(what: str, nbytes: int, *, budget: int | None = None) -> int:
    """Refuse work that would need more than the memory budget, before it is done.

    Raises
    ------
    MemoryBudgetError
        ``nbytes`` > budget; the message names ``what``, both sizes and how to raise the budget.
    """
    origin = "given" if budget is not None else (f"${BUDGET_VARIABLE}" if os.environ.get(BUDGET_VARIABLE, "").strip()
                                                 else "half the physical memory")
    budget = memory_budget() if budget is None else budget
    if nbytes > budget:
        raise MemoryBudgetError(f"{what} needs {human_bytes(nbytes)}, more than the memory budget of "
                                f"{human_bytes(budget)} ({origin}; set {BUDGET_VARIABLE} to change it)")
    return int(nbytes)


class MemoryBudgetError(ValueError):
    """Work refused before it starts because it would not fit in memory."""


def check_theory_cost(name: str, dim: int, *, copies: int = 6) -> None:
    """Refuse a closed-form theory whose ``dim x dim`` float64 moment matrices would not fit in memory.

    ``copies``: how many ``dim x dim`` matrices the theory holds at once
    (moment, eigenvectors, their products).
    """
    check_bytes(f"the closed-form theory of {name} ({dim} features: {copies} matrices of {dim} x {dim} float64)",
                copies * 8 * int(dim) ** 2)


def check_real(name: str, values) -> None:
    """Refuse complex, object or string values by name (NumPy array, torch tensor or array-like)."""
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return
    if hasattr(values, "is_complex"):  # torch
        if values.is_complex():
            raise ValueError(f"{name} is complex ({dtype}); real numbers are needed")
        return
    kind = np.dtype(dtype).kind
    if kind == "c":
        raise ValueError(f"{name} is complex ({dtype}); real numbers are needed")
    if kind not in "biuf":
        raise ValueError(f"{name} has dtype {dtype}; real numbers are needed")


def check_finite_values(name: str, values) -> None:
    """Refuse NaN or infinite entries (and complex values) of a tensor or array by name; never skip them."""
    check_real(name, values)
    if hasattr(values, "detach"):
        if values.is_floating_point():
            bad = int((~values.detach().isfinite()).sum())
            if bad:
                raise ValueError(f"{name} contains {bad} NaN or infinite values; all entries must be finite")
        return
    array = np.asarray(values)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values; all entries must be finite")


def count_range(name: str, first: int, last: int, limit: int = MAX_RANGE_VALUES) -> int:
    """The number of values of the inclusive integer range ``first-last``, refused above ``limit`` before expanding."""
    count = int(last) - int(first) + 1
    if count > limit:
        raise ValueError(f"{name}: the range {first}-{last} holds {count:,} values, more than the {limit:,} a range "
                         "may hold")
    return count


def check_grid_size(name: str, count: int, limit: int, yes: bool, option: str = "--yes") -> int:
    """Refuse a grid of ``count`` points above ``limit`` unless confirmed; ``count`` is a product, not an expansion."""
    if count > limit and not yes:
        raise ValueError(f"{name} has {count:,} points, more than the limit of {limit:,}; narrow it or pass "
                         f"{option} to run it anyway")
    return int(count)


#: Data options of the command line -> the built-in data sets they apply to.
DATA_OPTION_SETS = {"n_samples": ("synthetic",), "dim": ("synthetic",), "correlation": ("synthetic",),
                    "classes": ("digits", "mnist")}


def check_data_options_apply(data_name: str, **given) -> None:
    """Refuse data options given for a built-in data set they do not apply to (never ignore them).

    ``given``: option name -> value (None or empty: not given).

    Raises
    ------
    ValueError
        Naming the options as flags (``--n-samples, --dim``) and the data sets they apply to.
    """
    wrong = [name for name, value in given.items()
             if value not in (None, (), []) and data_name not in DATA_OPTION_SETS.get(name, (data_name,))]
    if wrong:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in wrong)
        sets = sorted({s for name in wrong for s in DATA_OPTION_SETS[name]})
        raise ValueError(f"{flags} do{'es' if len(wrong) == 1 else ''} not apply to --data {data_name} "
                         f"(only to {', '.join(sets)})")
