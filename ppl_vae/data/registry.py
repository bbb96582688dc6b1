"""One entry point, :func:`load`, for every data set: by name, or the user's own file.

Every bundle carries ``attrs["spec"]``, a JSON-serialisable dict of the
arguments of :func:`load` that rebuild it, so a saved run can reload its data
with ``load(**bundle.attrs["spec"])``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import xarray as xr

from ppl_vae._validate import check_choice
from ppl_vae.data.bundle import DataBundle
from ppl_vae.data.files import FILE_OPTIONS, FILE_SUFFIXES, load_file, load_xarray, looks_like_file
from ppl_vae.data.images import load_digits, load_mnist
from ppl_vae.data.synthetic import synthetic_gaussian, synthetic_pairs

#: Names accepted by :func:`load`.
DATASETS: tuple[str, ...] = ("synthetic", "digits", "mnist")

#: Size of the synthetic data when ``load`` is given no options.
SYNTHETIC_DEFAULTS = {"n": 2000, "dim": 16, "seed": 0}

#: Image split used by ``load(..., paired=True)`` unless ``split`` is given.
DEFAULT_PAIRED_SPLIT = "quadrant"


def _check_options(name: str, paired: bool, options: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for load({name!r}, paired={paired}); "
            f"allowed: {', '.join(map(repr, allowed))}"
        )


def _load_synthetic(paired: bool, options: dict) -> DataBundle:
    generator: Callable[..., DataBundle] = synthetic_pairs if paired else synthetic_gaussian
    allowed = ("n", "dim", "spectrum", "seed") + (("correlation", "y_dim") if paired else ())
    _check_options("synthetic", paired, options, allowed)
    return generator(**{**SYNTHETIC_DEFAULTS, **options})


def _image_split(name: str, paired: bool, options: dict) -> dict:
    """``options`` with ``split`` made consistent with ``paired``."""
    if paired:
        split = options.get("split", DEFAULT_PAIRED_SPLIT)
        if split is None:
            raise ValueError(f"load({name!r}, paired=True) needs split 'quadrant' or 'half', got None")
    else:
        split = options.get("split")
        if split is not None:
            raise ValueError(f"load({name!r}, paired=False) loads full images: split must be None, got {split!r}")
    return {**options, "split": split}


def _load_digits(paired: bool, options: dict) -> DataBundle:
    _check_options("digits", paired, options, ("classes", "split"))
    return load_digits(**_image_split("digits", paired, options))


def _load_mnist(paired: bool, options: dict) -> DataBundle:
    _check_options("mnist", paired, options, ("directory", "subset", "classes", "split", "limit"))
    return load_mnist(**_image_split("mnist", paired, options))


_LOADERS: dict[str, Callable[[bool, dict], DataBundle]] = {
    "synthetic": _load_synthetic,
    "digits": _load_digits,
    "mnist": _load_mnist,
}


def is_file_source(name: object) -> bool:
    """True when ``name`` is an xarray Dataset or a path to a data file rather than a built-in name."""
    if isinstance(name, xr.Dataset) or looks_like_file(name):
        return True
    return isinstance(name, (str, os.PathLike)) and str(name) not in DATASETS and Path(name).is_file()


def load(name: str | os.PathLike | xr.Dataset, *, paired: bool = False, **options) -> DataBundle:
    """Load a data set by name, or the user's own data from a file.

    Parameters
    ----------
    name
        One of :data:`DATASETS`: ``'synthetic'``, ``'digits'``, ``'mnist'``; or
        a path to a ``.npz`` / ``.npy`` / ``.csv`` / netCDF file, or an
        :class:`xarray.Dataset` (see :mod:`ppl_vae.data.files`).
    paired
        ``True`` for CVAE pairs ``(x, y)``: synthetic data from
        :func:`~ppl_vae.data.synthetic_pairs`, images cut by ``split``
        (default ``'quadrant'``), a file's ``y_key`` array. ``False``:
        single-input data (:func:`~ppl_vae.data.synthetic_gaussian`, full
        images, a file's ``x_key`` array).
    **options
        Keyword arguments of the underlying loader. ``synthetic``: ``n``
        (default 2000), ``dim`` (16), ``seed`` (0), ``spectrum``, and when
        paired ``correlation``, ``y_dim``. ``digits``: ``classes``, ``split``.
        ``mnist``: ``directory``, ``subset``, ``classes``, ``split``, ``limit``.
        Files: ``x_key``, ``y_key``, ``label_key``, ``sha256``.

    Returns
    -------
    DataBundle
        With ``attrs["spec"]`` such that ``load(**attrs["spec"])`` rebuilds it
        (not for an in-memory Dataset).

    Raises
    ------
    ValueError
        For an unknown name or option, an invalid option value, or a file
        array that fails a check (the message names the file and array).
    FileNotFoundError
        For a data file that does not exist.
    """
    if not isinstance(paired, bool):
        raise ValueError(f"paired must be True or False, got {paired!r}")
    if is_file_source(name):
        label = "an xarray Dataset" if isinstance(name, xr.Dataset) else str(name)
        _check_options(label, paired, options, FILE_OPTIONS)
        if isinstance(name, xr.Dataset):
            options.pop("sha256", None)
            return load_xarray(name, paired=paired, **options)
        return load_file(name, paired=paired, **options)
    if isinstance(name, (str, os.PathLike)) and (os.sep in str(name) or Path(str(name)).suffix):
        raise FileNotFoundError(f"no data file at {name} (data files end in {', '.join(FILE_SUFFIXES)}; built-in "
                                f"data sets: {', '.join(DATASETS)})")
    name = check_choice("name", name, DATASETS)
    return _LOADERS[name](paired, options)
