"""Data files' declared sizes, checked against the memory budget before anything is read.

A ``.npy`` header can claim any shape, and a small ``.npz`` can inflate to
gigabytes; reading either first and failing with ``MemoryError`` (or taking the
machine's memory) is what this avoids. Errors are
:class:`~ppl_vae.data.files.DataFileError` naming the file (and the member).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _error(message: str) -> ValueError:
    from ppl_vae.data.files import DataFileError  # files.py imports this module

    return DataFileError(message)


def _npy_header(handle, source: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) a ``.npy`` stream declares, read from its header only."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(handle)
        else:
            shape, _, dtype = fmt._read_array_header(handle, version)  # noqa: SLF001  (3.0: utf-8 field names)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as err:
        raise _error(f"{source}: not a readable .npy array ({' '.join(str(err).split())[:160]})") from None
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _declared_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=object)) * max(dtype.itemsize, 1)  # Python ints: no overflow


def check_declared_size(path: Path, budget: int | None = None) -> None:
    """Refuse a data file whose declared contents exceed the memory budget, before reading it.

    ``.npy``: the shape and dtype in its header. ``.npz``: each member's header
    and its declared decompressed size (a small archive may inflate to
    gigabytes). ``.csv``: the file size. netCDF is checked from its variables'
    shapes when opened lazily (:func:`_read_arrays`).

    Raises
    ------
    DataFileError
        Naming the file (and the member), the declared shape and the sizes.
    """
    from ppl_vae._validate import check_bytes

    suffix, source = path.suffix.lower(), str(path)
    try:
        if suffix == ".npy":
            with open(path, "rb") as handle:
                shape, dtype = _npy_header(handle, source)
            check_bytes(f"{source} (declared shape {shape}, {dtype})", _declared_bytes(shape, dtype), budget=budget)
        elif suffix == ".npz":
            import zipfile

            try:
                archive = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise _error(f"{source}: not a readable .npz archive ({err})") from None
            with archive:
                members = archive.infolist()
                check_bytes(f"{source} (its {len(members)} arrays decompressed)",
                            sum(info.file_size for info in members), budget=budget)
                for info in members:
                    with archive.open(info) as handle:
                        shape, dtype = _npy_header(handle, f"{source}: member {info.filename!r}")
                    check_bytes(f"{source}: array {info.filename!r} (declared shape {shape}, {dtype})",
                                _declared_bytes(shape, dtype), budget=budget)
        elif suffix == ".csv":
            check_bytes(f"{source} (a CSV table read into memory)", 4 * path.stat().st_size, budget=budget)
    except ValueError as err:
        from ppl_vae.data.files import DataFileError

        if isinstance(err, DataFileError):
            raise
        raise DataFileError(str(err)) from None
