"""The user's own data from files: ``.npz``, ``.npy``, ``.csv``, netCDF, or an in-memory xarray Dataset.

Two kinds of source:

- collections of named arrays (``.npz``, netCDF / xarray): ``x_key`` /
  ``y_key`` / ``label_key`` name the arrays (variables). With one array and no
  key, that array is x. The first dimension of each array is the data rows;
  further dimensions are flattened (an ``(n, H, W)`` x is kept as images, for
  the report's figures).
- tables (``.csv`` with a header row, and a 2-D ``.npy``): the keys select
  columns: comma-separated column names or positions, position ranges
  ``a:b`` (``"0:16"``, Python's half-open slice) or name ranges (``"p00:p77"``,
  both ends included, as pandas' ``.loc``); by default x is every column not
  taken by y or the labels. A CSV column whose name says it holds labels
  (``label``, ``target``, ``class``, ...) is never silently read as a feature:
  without ``x_key`` or ``label_key`` naming it, the file is refused.

Flat image files: ``image_shape=(H, W)`` (or ``"HxW"``) says how each row of x
tiles an image (unpaired data), or how x and y tile it under ``split`` (CVAE
pairs), so reconstructions are drawn and the CNN architecture can be used.

Every array is checked before use, with errors naming the file and the array:
numeric dtype, at least one row and one feature, no NaN or inf, the same
number of rows in x, y and the labels, integer labels. Values are cast to
float32 (the models' precision; the theory reads them back as float64).
Files are read without pickle (``np.load(..., allow_pickle=False)``), so a
file cannot run code.

``attrs["spec"]`` records the absolute path, the keys and the file's SHA-256;
:func:`ppl_vae.data.load` refuses to rebuild the data when the file has
changed since.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ppl_vae._io import file_sha256
from ppl_vae.data.bundle import DataBundle
from ppl_vae.data.sizes import check_declared_size

#: File suffixes ``load`` reads, by kind.
TABLE_SUFFIXES = (".csv", ".npy")
ARRAY_SUFFIXES = (".npz", ".nc", ".nc4", ".cdf", ".netcdf")
FILE_SUFFIXES = TABLE_SUFFIXES + ARRAY_SUFFIXES
FILE_OPTIONS = ("x_key", "y_key", "label_key", "image_shape", "split", "sha256")
ROLE_KEYS = {"x": "x_key", "y": "y_key", "labels": "label_key"}
#: Column names that hold class labels rather than features (compared case-insensitively).
LABEL_LIKE_NAMES = frozenset({"label", "labels", "target", "targets", "class", "classes", "digit", "category",
                              "species", "y_true"})


class DataFileError(ValueError):
    """A data file (or one of its arrays) that cannot be used; the message names both."""


def looks_like_file(name: object) -> bool:
    """True for a path (str or PathLike) whose suffix is one :func:`load_file` reads."""
    return isinstance(name, (str, os.PathLike)) and Path(name).suffix.lower() in FILE_SUFFIXES


# --- reading --------------------------------------------------------------------------------------------------


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Name -> array of an ``.npz`` or netCDF file."""
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except ValueError as err:  # object arrays need pickle: refused
            raise DataFileError(f"{path}: {err} (object arrays are not read; save numeric arrays)") from None
    try:
        with xr.open_dataset(path) as dataset:
            _check_lazy_size(dataset, path)  # from the variables' shapes, before anything is decompressed
            return dataset_arrays(dataset.load())
    except DataFileError:
        raise
    except (OSError, ValueError) as err:
        raise DataFileError(f"{path}: not a readable netCDF file ({err})") from None


def _check_lazy_size(dataset: xr.Dataset, path: Path) -> None:
    from ppl_vae._validate import check_bytes

    try:
        check_bytes(f"{path} (its variables)", sum(int(v.nbytes) for v in dataset.data_vars.values()))
    except ValueError as err:
        raise DataFileError(str(err)) from None


def dataset_arrays(dataset: xr.Dataset) -> dict[str, np.ndarray]:
    """Name -> values of every data variable (rows along each variable's first dimension)."""
    return {str(name): np.asarray(variable.values) for name, variable in dataset.data_vars.items()}


def _read_table(path: Path) -> tuple[np.ndarray | None, list[str], dict[str, np.ndarray]]:
    """(2-D values or None, column names, column name -> values) of a ``.csv`` or ``.npy`` file."""
    if path.suffix.lower() == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise DataFileError(f"{path}: {err} (object arrays are not read; save a numeric array)") from None
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise DataFileError(f"{path}: a .npy file is read as a table (n, columns); got shape {values.shape}. "
                                "Save images flattened, or several arrays in a .npz")
        names = [str(i) for i in range(values.shape[1])]
        return values, names, {}
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as err:
        raise DataFileError(f"{path}: not a readable CSV file ({err})") from None
    names = [str(c) for c in frame.columns]
    return None, names, {name: frame[column].to_numpy() for name, column in zip(names, frame.columns)}


def _range_end(end: str, columns: list[str], part: str, source: str, *, stop: bool) -> tuple[int | None, bool]:
    """Position of one end of a column range, and whether it was a name (name ends are inclusive)."""
    if not end:
        return None, False
    if end in columns:
        return columns.index(end) + (1 if stop else 0), True
    try:
        return int(end), False
    except ValueError:
        raise DataFileError(f"{source}: column range {part!r}: {end!r} is neither a column name nor a position "
                            "(ranges are a:b of positions, or first:last of names, e.g. p00:p77)") from None


def parse_columns(key: str, columns: list[str], source: str) -> list[int]:
    """Positions of the columns ``key`` selects.

    ``key`` is a comma-separated list of column names, positions, position
    ranges ``a:b`` (half-open, as a Python slice) and name ranges
    ``first:last`` (both ends included, as pandas' ``.loc``).
    """
    positions: list[int] = []
    for part in (p.strip() for p in str(key).split(",")):
        if not part:
            continue
        if part in columns:
            positions.append(columns.index(part))
        elif ":" in part:
            first, _, last = part.partition(":")
            start, _ = _range_end(first.strip(), columns, part, source, stop=False)
            stop, _ = _range_end(last.strip(), columns, part, source, stop=True)
            positions.extend(range(len(columns))[slice(start, stop)])
        elif part.lstrip("-").isdigit() and -len(columns) <= int(part) < len(columns):
            positions.append(int(part) % len(columns))
        else:
            shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
            raise DataFileError(f"{source}: no column {part!r}; the columns are {shown} (or positions 0-{len(columns) - 1})")
    if not positions:
        raise DataFileError(f"{source}: {key!r} selects no column")
    return positions


def parse_image_shape(value) -> tuple[int, int] | None:
    """``(height, width)`` from ``"HxW"``, ``"H,W"`` or a pair of integers; ``None`` stays ``None``.

    Raises
    ------
    ValueError
        Naming ``image_shape`` and the form it takes.
    """
    if value is None:
        return None
    parts = str(value).lower().replace(",", "x").split("x") if isinstance(value, str) else list(value)
    try:
        height, width = (int(str(p).strip()) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be HxW with two positive integers (e.g. 28x28), got {value!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_shape must be HxW with two positive integers (e.g. 28x28), got {value!r}")
    return height, width


# --- checking -------------------------------------------------------------------------------------------------


def check_array(values: np.ndarray, source: str, name: str) -> np.ndarray:
    """``values`` as a float32 ``(n, d)`` array (trailing dimensions flattened), or ``DataFileError``.

    ``source`` names the file; ``name`` the array.
    """
    values = np.asarray(values)
    what = f"{source}: array {name!r}"
    if values.dtype.kind not in "biuf":
        raise DataFileError(f"{what} has dtype {values.dtype}; numbers (bool, integer or float) are needed")
    if values.ndim == 0:
        raise DataFileError(f"{what} is a scalar; an array with one row per data point is needed")
    if values.size == 0:
        raise DataFileError(f"{what} has shape {values.shape}; at least one row and one feature are needed")
    values = values.reshape(values.shape[0], -1) if values.ndim != 1 else values[:, None]
    finite = np.isfinite(values)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DataFileError(f"{what} contains {int((~finite).sum())} NaN or infinite values (first in row "
                            f"{int(rows[0])}); all entries must be finite")
    with np.errstate(over="ignore"):
        as_float = values.astype(np.float32)
    if not np.isfinite(as_float).all():
        raise DataFileError(f"{what} has values beyond the float32 range (|x| > 3.4e38)")
    return as_float


def check_labels(values: np.ndarray, source: str, name: str) -> np.ndarray:
    """Integer class labels ``(n,)`` as int64, or ``DataFileError``."""
    labels = check_array(values, source, name)
    if labels.shape[1] != 1:
        raise DataFileError(f"{source}: labels {name!r} must be one value per row, got {labels.shape[1]} per row")
    original = np.asarray(values).reshape(-1)
    if not np.all(np.equal(np.mod(original, 1), 0)):
        raise DataFileError(f"{source}: labels {name!r} must be integers (class numbers)")
    return original.astype(np.int64)


def check_rows(arrays: Mapping[str, np.ndarray], source: str) -> int:
    """The common number of rows of ``arrays``, or ``DataFileError`` naming the disagreeing arrays."""
    rows = {name: int(values.shape[0]) for name, values in arrays.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{name!r} has {n}" for name, n in rows.items())
        raise DataFileError(f"{source}: arrays must have the same number of rows (one per data point); {listed}")
    return next(iter(rows.values()))


# --- selecting ------------------------------------------------------------------------------------------------


def _pick(arrays: Mapping[str, np.ndarray], key: str | None, taken: set[str], role: str, source: str) -> str:
    """The array name for ``role`` (x): ``key``, or the only array left."""
    if key is not None:
        if key not in arrays:
            raise DataFileError(f"{source}: no array {key!r} for {role}; the arrays are {', '.join(map(repr, arrays))}")
        return key
    left = [name for name in arrays if name not in taken]
    if len(left) != 1:
        raise DataFileError(f"{source}: name the array of {role} with x_key (--x-key); the arrays are "
                            f"{', '.join(map(repr, arrays))}")
    return left[0]


def _ordered(chosen: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {role: chosen[role] for role in ROLE_KEYS if role in chosen}


def _from_arrays(arrays: Mapping[str, np.ndarray], source: str, keys: dict) -> dict[str, np.ndarray]:
    """Role (x, y, labels) -> raw array for a collection of named arrays."""
    chosen: dict[str, np.ndarray] = {}
    for role, key in (("y", keys["y_key"]), ("labels", keys["label_key"])):
        if key is not None:
            chosen[role] = arrays[_pick(arrays, key, set(), role, source)]
    x_name = _pick(arrays, keys["x_key"], {keys["y_key"], keys["label_key"]}, "x", source)
    chosen["x"] = arrays[x_name]
    return _ordered(chosen)


def _from_table(values: np.ndarray | None, columns: list[str], by_name: dict[str, np.ndarray], source: str,
                keys: dict) -> dict[str, np.ndarray]:
    """Role -> raw ``(n, k)`` array for a table, the keys selecting columns."""
    def take(positions: list[int]) -> np.ndarray:
        if values is not None:
            return values[:, positions]
        picked = [by_name[columns[p]] for p in positions]
        bad = [columns[p] for p, column in zip(positions, picked) if column.dtype.kind not in "biuf"]
        if bad:
            raise DataFileError(f"{source}: column(s) {', '.join(map(repr, bad))} are not numeric")
        return np.stack(picked, axis=1)

    chosen, used = {}, set()
    for role, key in (("y", keys["y_key"]), ("labels", keys["label_key"])):
        if key is not None:
            positions = parse_columns(key, columns, source)
            used.update(positions)
            chosen[role] = take(positions)
    if keys["x_key"] is not None:
        x_positions = parse_columns(keys["x_key"], columns, source)
    else:
        x_positions = [p for p in range(len(columns)) if p not in used]
        if not x_positions:
            raise DataFileError(f"{source}: no column left for x; name them with x_key (--x-key)")
        if values is None:  # a CSV: its header names the columns
            _refuse_label_like([columns[p] for p in x_positions], source)
    chosen["x"] = take(x_positions)
    return _ordered(chosen)


def _refuse_label_like(x_columns: list[str], source: str) -> None:
    """Refuse to read a column named like class labels as a feature of x by default."""
    label_like = [c for c in x_columns if c.strip().lower() in LABEL_LIKE_NAMES]
    if label_like:
        column = label_like[0]
        raise DataFileError(f"{source}: column {column!r} looks like class labels and would be read as a feature "
                            f"of x; name it with label_key (--label-key {column}), or list x's columns with "
                            "x_key (--x-key)")


def _image_layout(x: np.ndarray, y: np.ndarray | None, image_shape: tuple[int, int] | None, split: str | None,
                  source: str) -> tuple[tuple[int, int] | None, str | None]:
    """The bundle's ``(image_shape, split)``, checked against the widths of x (and y).

    Unpaired data: ``H * W`` must equal x's width. Pairs: x and y must be the
    ``split`` pieces of ``H x W`` images (see :func:`ppl_vae.data.images.split_images`).
    """
    if image_shape is None:
        if split is not None:
            raise DataFileError(f"{source}: split names how x and y tile an image; give image_shape (--image-shape) too")
        return None, None
    height, width = image_shape
    if y is None:
        if split is not None:
            raise DataFileError(f"{source}: split applies to CVAE pairs; unpaired data reads whole images")
        if x.shape[1] != height * width:
            raise DataFileError(f"{source}: image_shape {height}x{width} needs {height * width} values per row of x, "
                                f"got {x.shape[1]}")
        return (height, width), None
    from ppl_vae.data.images import split_images

    split = split or "quadrant"
    try:
        x_size, y_size = (int(np.prod(piece.shape[1:])) for piece in split_images(np.zeros((1, height, width)), split))
    except ValueError as err:
        raise DataFileError(f"{source}: image_shape {height}x{width} with split {split!r}: {err}") from None
    if (x.shape[1], y.shape[1]) != (x_size, y_size):
        raise DataFileError(f"{source}: a {split!r} split of {height}x{width} images has x of {x_size} and y of "
                            f"{y_size} values per row; the file has {x.shape[1]} and {y.shape[1]}")
    return (height, width), split


def _bundle(raw: dict[str, np.ndarray], *, paired: bool, source: str, name: str, keys: dict, spec: dict,
            image_shape: tuple[int, int] | None = None, split: str | None = None) -> DataBundle:
    """Check the chosen arrays and wrap them in a :class:`DataBundle`."""
    if paired and "y" not in raw:
        raise DataFileError(f"{source}: paired data (CVAE) needs y: name its array or columns with y_key (--y-key)")
    if not paired and "y" in raw:
        raise DataFileError(f"{source}: y_key (--y-key) names the CVAE output; unpaired data (VAE / MHVAE) reads x only")
    names = {role: keys[ROLE_KEYS[role]] or role for role in raw}  # how errors name each array
    checked = {role: (check_labels if role == "labels" else check_array)(values, source, names[role])
               for role, values in raw.items()}
    check_rows({names[role]: values for role, values in checked.items()}, source)
    x_raw = np.asarray(raw["x"])
    if image_shape is None and split is None and x_raw.ndim == 3 and not paired:
        image_shape = tuple(int(s) for s in x_raw.shape[1:])
    else:
        image_shape, split = _image_layout(checked["x"], checked.get("y"), image_shape, split, source)
    return DataBundle(
        name,
        x=torch.from_numpy(checked["x"]),
        y=torch.from_numpy(checked["y"]) if "y" in checked else None,
        labels=torch.from_numpy(checked["labels"]) if "labels" in checked else None,
        image_shape=image_shape,
        split=split,
        attrs={"source": source, **{k: v for k, v in keys.items() if v is not None}, "spec": spec},
    )


def _keys(x_key, y_key, label_key) -> dict:
    return {"x_key": None if x_key is None else str(x_key), "y_key": None if y_key is None else str(y_key),
            "label_key": None if label_key is None else str(label_key)}


def load_file(path: str | os.PathLike, *, paired: bool = False, x_key: str | None = None, y_key: str | None = None,
              label_key: str | None = None, image_shape=None, split: str | None = None,
              sha256: str | None = None) -> DataBundle:
    """Data from a ``.npz`` / ``.npy`` / ``.csv`` / netCDF file (module docstring).

    Parameters
    ----------
    path
        The file.
    paired
        True for CVAE pairs: ``y_key`` must then name y.
    x_key, y_key, label_key
        Arrays (``.npz``, netCDF) or columns (``.csv``, ``.npy``) of x, y and
        integer class labels.
    image_shape
        ``(height, width)`` or ``"HxW"``: rows of x are flattened images
        (unpaired), or x and y are the ``split`` pieces of flattened images.
    split
        ``'quadrant'`` (default for pairs with ``image_shape``) or ``'half'``.
    sha256
        Expected SHA-256 of the file (from a saved ``attrs["spec"]``): a
        changed file is refused.

    Raises
    ------
    FileNotFoundError
        No such file.
    DataFileError
        (a ``ValueError``) An unsupported suffix, an unreadable file, a missing
        key, or an array that fails a check; the message names the file and array.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataFileError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")
    digest = file_sha256(path)
    if sha256 is not None and sha256 != digest:
        raise DataFileError(f"{path} has changed since it was recorded (SHA-256 {digest[:12]}..., expected "
                            f"{str(sha256)[:12]}...); the saved run no longer matches its data")
    keys = _keys(x_key, y_key, label_key)
    source = str(path)
    try:
        shape = parse_image_shape(image_shape)
    except ValueError as err:
        raise DataFileError(f"{source}: {err}") from None
    if split is not None and split not in ("quadrant", "half"):
        raise DataFileError(f"{source}: split must be 'quadrant' or 'half', got {split!r}")
    check_declared_size(path)  # headers and decompressed sizes against the memory budget, before reading
    if suffix in TABLE_SUFFIXES:
        raw = _from_table(*_read_table(path), source, keys)
    else:
        raw = _from_arrays(_read_arrays(path), source, keys)
    layout = {k: v for k, v in (("image_shape", None if shape is None else list(shape)), ("split", split))
              if v is not None}
    spec = {"name": source, "paired": paired, **{k: v for k, v in keys.items() if v is not None}, **layout,
            "sha256": digest}
    return _bundle(raw, paired=paired, source=source, name=path.name, keys=keys, spec=spec, image_shape=shape,
                   split=split)


def load_xarray(dataset: xr.Dataset, *, paired: bool = False, x_key: str | None = None, y_key: str | None = None,
                label_key: str | None = None, image_shape=None, split: str | None = None) -> DataBundle:
    """Data from an in-memory :class:`xarray.Dataset` (variables named by the keys, rows first).

    The keys, ``image_shape`` and ``split`` are those of :func:`load_file`. The
    bundle's ``attrs["spec"]`` cannot rebuild in-memory data; save the Dataset
    as netCDF for runs that must be reloaded.
    """
    if not isinstance(dataset, xr.Dataset):
        raise DataFileError(f"expected an xarray.Dataset, got {type(dataset).__name__}")
    keys = _keys(x_key, y_key, label_key)
    source = "xarray Dataset"
    try:
        shape = parse_image_shape(image_shape)
    except ValueError as err:
        raise DataFileError(f"{source}: {err}") from None
    raw = _from_arrays(dataset_arrays(dataset), source, keys)
    spec = {"name": "xarray Dataset (in memory, cannot be reloaded)", "paired": paired}
    return _bundle(raw, paired=paired, source=source, name="xarray", keys=keys, spec=spec, image_shape=shape,
                   split=split)
