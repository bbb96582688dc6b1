"""Atomic file writes and run directories.

Nothing a user already has is lost: files are written to a temporary name in the
same directory and renamed into place (with the permissions the user's umask
gives a new file), an existing file is only replaced when the caller says so,
and an existing run directory is only reused when the caller says so explicitly.
"""

from __future__ import annotations

import hashlib
import contextlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from ppl_vae._lock import LOCK_NAME, refuse_link


def current_umask() -> int:
    """The process's umask, read without changing it where ``/proc`` allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, exclusive: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    Parameters
    ----------
    path
        Final destination. Its parent directory is created if missing.
    write
        Callable that writes the complete file at the temporary path it is given.
    exclusive
        Never replace an existing ``path``: the finished file is linked into place,
        which fails if ``path`` appeared meanwhile.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    FileExistsError
        ``exclusive`` and ``path`` exists (the new file is discarded).
    ppl_vae._lock.LinkedOutputError
        ``path`` is a symbolic link: refused by name, never followed or replaced.
    """
    target = check_path(path)
    refuse_link(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp made it 0600
        if exclusive:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(f"{target} already exists; pass --overwrite to replace it") from None
            tmp.unlink()
        else:
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


def check_path(path: str | os.PathLike, name: str = "path") -> Path:
    """``path`` as a :class:`~pathlib.Path`, refusing the empty string (which would mean the current directory).

    Raises
    ------
    ValueError
        ``path`` is empty or blank.
    """
    if not str(os.fspath(path)).strip():
        raise ValueError(f"{name} must not be empty (give a file or folder name)")
    return Path(path)


class DamagedFileError(ValueError):
    """A file the suite wrote (or should have) that cannot be read: the message names it."""


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Turn a low-level read failure inside the block into a :class:`DamagedFileError` naming ``what``.

    A damaged ``.gz`` or a truncated file raises ``OSError`` / ``EOFError`` /
    ``zlib.error`` whose messages name no file; a missing file
    (``FileNotFoundError``) passes through unchanged.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise DamagedFileError(f"cannot read {what}: {detail}") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of ``path``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    DamagedFileError
        The file is not valid UTF-8 JSON; the message names the file and where it breaks.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DamagedFileError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                         "it is damaged or was not written by ppl_vae") from None
    except UnicodeDecodeError:
        raise DamagedFileError(f"{path} is not valid JSON (not UTF-8 text); it is damaged or was not written by ppl_vae"
                         ) from None


def atomic_write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (``exclusive``: as :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), exclusive=exclusive)


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


#: What :func:`prepare_run_dir` says by default when a directory is not empty.
RUN_DIR_HINT = "pass --overwrite to replace it or --resume to continue it"


def visible_entries(directory: Path) -> list[Path]:
    """The entries of ``directory`` other than its lock file and unfinished temporary files."""
    return [entry for entry in directory.iterdir()
            if entry.name != LOCK_NAME and not (entry.name.startswith(".") and entry.name.endswith(".tmp"))]


def prepare_run_dir(path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                    layout: Collection[str] | None = None, hint: str = RUN_DIR_HINT) -> Path:
    """Create (or reuse, when allowed) a run directory.

    Parameters
    ----------
    path
        The run directory (not empty: ``''`` is refused rather than taken as the current directory).
    overwrite
        Allow reusing a non-empty directory. With ``layout`` the old run is cleared
        first: every file named in ``layout`` is removed before anything new is
        written, and a directory holding anything else is refused. Without
        ``layout`` files are replaced one by one as the new run writes them.
    resume
        The directory must exist and is reused as is.
    layout
        The names a run directory holds (see ``overwrite``).
    hint
        What the error tells the user to do when the directory is not empty.

    Raises
    ------
    RunDirectoryExistsError
        ``path`` exists, is not empty, and neither ``overwrite`` nor ``resume`` is
        set; or ``overwrite`` is set and ``path`` holds files outside ``layout``.
    FileNotFoundError
        ``resume`` is set but ``path`` does not exist.
    ValueError
        ``path`` is empty.
    """
    run_dir = check_path(path, "the run directory")
    if resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"cannot resume: run directory {run_dir} does not exist")
        return run_dir
    entries = visible_entries(run_dir) if run_dir.is_dir() else []
    if entries and not overwrite:
        raise RunDirectoryExistsError(f"run directory {run_dir} already exists and is not empty; {hint}")
    if entries and layout is not None:
        _clear_run(run_dir, entries, layout)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _clear_run(run_dir: Path, entries: list[Path], layout: Collection[str]) -> None:
    """Remove the files of an old run, refusing a directory that holds anything else."""
    foreign = sorted(entry.name for entry in entries
                     if entry.name not in layout or entry.is_symlink() or not entry.is_file())
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise RunDirectoryExistsError(
            f"{run_dir} holds files that are not part of a ppl-vae run ({shown}); refusing to overwrite it: "
            "choose another --out")
    for entry in entries:
        entry.unlink()


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


def write_netcdf(dataset, path: str | os.PathLike, *, exclusive: bool = False) -> Path:
    """Write an ``xarray.Dataset`` to ``path`` atomically, making its attributes netCDF-safe.

    ``exclusive``: never replace an existing file (see :func:`atomic_write`).
    """
    clean = dataset.copy()
    clean.attrs = netcdf_safe_attrs(dict(dataset.attrs))
    for name in clean.variables:
        clean[name].attrs = netcdf_safe_attrs(dict(clean[name].attrs))
    return atomic_write(path, lambda tmp: clean.to_netcdf(tmp), exclusive=exclusive)
