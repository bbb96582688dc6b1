"""Atomic file writes and run directories.

Nothing a user already has is lost: files are written to a temporary name in the
same directory and renamed into place, and an existing run directory is only
reused when the caller says so explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    Parameters
    ----------
    path
        Final destination. Its parent directory is created if missing.
    write
        Callable that writes the complete file at the temporary path it is given.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


class RunDirectoryExistsError(FileExistsError):
    """Raised when a run directory exists and neither overwrite nor resume was asked for."""


def prepare_run_dir(path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create (or reuse, when allowed) a run directory.

    Parameters
    ----------
    path
        The run directory.
    overwrite
        Allow reusing a non-empty directory; files are replaced one by one as the
        new run writes them (atomically), nothing is deleted up front.
    resume
        The directory must exist and is reused as is.

    Raises
    ------
    RunDirectoryExistsError
        ``path`` exists, is not empty, and neither ``overwrite`` nor ``resume`` is set.
    FileNotFoundError
        ``resume`` is set but ``path`` does not exist.
    """
    run_dir = Path(path)
    if resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"cannot resume: run directory {run_dir} does not exist")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise RunDirectoryExistsError(
            f"run directory {run_dir} already exists and is not empty; "
            "pass --overwrite to replace it or --resume to continue it"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def netcdf_safe_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes netCDF can store: None becomes ``'none'``, bools become ints, containers become JSON."""
    safe: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            safe[key] = "none"
        elif isinstance(value, bool):
            safe[key] = int(value)
        elif isinstance(value, (dict, list, tuple)):
            safe[key] = json.dumps(value, default=_json_default)
        else:
            safe[key] = value
    return safe


def write_netcdf(dataset, path: str | os.PathLike) -> Path:
    """Write an ``xarray.Dataset`` to ``path`` atomically, making its attributes netCDF-safe."""
    clean = dataset.copy()
    clean.attrs = netcdf_safe_attrs(dict(dataset.attrs))
    for name in clean.variables:
        clean[name].attrs = netcdf_safe_attrs(dict(clean[name].attrs))
    return atomic_write(path, lambda tmp: clean.to_netcdf(tmp))
