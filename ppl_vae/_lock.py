"""Claiming an output location: one writer at a time, and a clear error for the second.

Every command that writes (``train``, ``sweep``, ``reproduce``, ``report``,
``bench``) claims where it writes before it writes anything there::

    with claim_output(run_dir, "ppl-vae train"):
        ...  # nobody else can claim run_dir until the block ends

A claim is a lock file (``.ppl-vae.lock`` inside an output directory,
``.<name>.lock`` beside an output file) holding the owner's pid, command line
and start time, locked with ``flock``. The kernel drops the lock when its process
ends, however it ends (``kill -9`` included), so a lock file left by a dead
process is reclaimed by the next writer; a live owner is named in the error the
second writer gets.

Claims nest: a folder inside a claimed folder (a run of a sweep that is running)
is claimed too, so a second command cannot write into it while the outer owner
lives (the process holding the outer claim may, for its own sub-folders).

No write follows a link the suite did not create: the lock file is opened with
``O_NOFOLLOW`` (created with ``O_EXCL``), and a lock file or output that is a
symbolic link (or a lock file with other hard links) is refused by name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: Name of the lock file inside a claimed directory (left out of "is it empty?" checks).
LOCK_NAME = ".ppl-vae.lock"


#: Resolved directories whose claim this process holds (it may write inside them).
_HELD: set[Path] = set()


class OutputInUseError(RuntimeError):
    """Another live process holds the claim on an output location."""


class LinkedOutputError(OSError):
    """An output or lock file that is a symbolic (or extra hard) link: refused, never followed."""


def refuse_link(path: str | os.PathLike, what: str = "output") -> None:
    """Raise :class:`LinkedOutputError` naming ``path`` if it is a symbolic link.

    Checked with ``lstat`` (the link itself, not what it points to).
    """
    if os.path.islink(path):
        raise LinkedOutputError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); ppl-vae never writes "
                                "through a link it did not create: remove the link or give the real path")


def check_name_length(target: str | os.PathLike, *, extra: int = 0) -> None:
    """Refuse a path whose components are longer than the file system allows (checked before any work).

    ``extra``: bytes a derived name adds (``.<name>.lock`` beside a file adds 6).

    Raises
    ------
    OSError
        ``ENAMETOOLONG``, naming the component and the limit.
    """
    path = Path(target)
    probe = next((p for p in path.parents if os.path.lexists(p)), Path("."))
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        size = len(os.fsencode(part)) + (extra if part == path.name else 0)
        if size > limit:
            raise OSError(errno.ENAMETOOLONG, f"the name {part[:40]}... in {str(path)[:60]}... is {size} bytes, more "
                          f"than the {limit} the file system allows for one name; choose a shorter one")


def lock_path(target: str | os.PathLike, *, directory: bool) -> Path:
    """The lock file of ``target``: inside it (a directory) or beside it (a file)."""
    target = Path(target)
    return target / LOCK_NAME if directory else target.parent / f".{target.name}.lock"


def _describe_holder(path: Path) -> str:
    """``'ppl-vae train (pid 123, since 2026-01-01 10:00:00)'`` from a lock file, as far as it can be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            holder = json.loads(handle.read(4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    if not isinstance(holder, dict) or "pid" not in holder:
        return "another process (its lock file is still being written)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    argv = f": {holder['argv']}" if holder.get("argv") else ""
    return f"{holder.get('command', 'another process')} (pid {holder['pid']}{where}{argv}, since {since})"


def _open_lock(path: Path) -> int:
    """Open the lock file without following a link: create it exclusively, or open the one there.

    Raises
    ------
    LinkedOutputError
        ``path`` is a symbolic link, not a regular file, or has other hard links.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:  # removed meanwhile by its owner: the caller retries
        return -1
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            refuse_link(path, "lock file")
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        kind = "has other hard links" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        raise LinkedOutputError(f"lock file {path} {kind}; ppl-vae never writes through a file it did not "
                                "create: remove it")
    return fd


def _acquire(path: Path, command: str, target: Path) -> int:
    """Open and ``flock`` ``path`` without waiting; return the descriptor holding the lock.

    Raises
    ------
    OutputInUseError
        A live process holds it.
    LinkedOutputError
        The lock file is a link (see :func:`_open_lock`).
    """
    while True:
        fd = _open_lock(path)
        if fd < 0:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise OutputInUseError(f"{target} is in use by {_describe_holder(path)}; wait for it to finish "
                                   "or choose another output") from None
        try:
            same_file = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:  # else the previous owner removed the file between our open and our lock: retry
            break
        os.close(fd)
    argv = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""
    record = json.dumps({"pid": os.getpid(), "command": command, "host": socket.gethostname(),
                         "argv": argv[:160], "started": time.time()})
    os.ftruncate(fd, 0)
    os.write(fd, record.encode("utf-8"))
    os.fsync(fd)
    return fd


def enclosing_claim(target: str | os.PathLike) -> Path | None:
    """The nearest folder above ``target`` that another process holds a claim on, or None.

    A folder this process claimed does not count (a sweep writes its own runs).
    Each ancestor with a lock file is probed with a non-blocking shared ``flock``.
    """
    resolved = Path(os.path.abspath(target))
    for folder in resolved.parents:
        lock = folder / LOCK_NAME
        if folder in _HELD or folder.resolve() in _HELD or not os.path.lexists(lock):
            continue
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return folder
        finally:
            os.close(fd)
    return None


def check_not_nested(target: str | os.PathLike) -> None:
    """Refuse ``target`` if it lies inside a folder another live process has claimed.

    Raises
    ------
    OutputInUseError
        Naming the enclosing folder and its holder.
    """
    outer = enclosing_claim(target)
    if outer is not None:
        raise OutputInUseError(f"{target} is inside {outer}, which is in use by "
                               f"{_describe_holder(outer / LOCK_NAME)}; wait for it to finish")


@contextlib.contextmanager
def claim_output(target: str | os.PathLike, command: str, *, directory: bool = True) -> Iterator[Path]:
    """Hold the claim on ``target`` for the duration of the block.

    Parameters
    ----------
    target
        An output directory (created if missing; removed again at the end if
        this claim created it and left it empty) or, with ``directory=False``, an
        output file (its parent directory is created if missing).
    command
        What holds the claim, named in a second writer's error (``'ppl-vae train'``,
        ``'training'``); the process's command line is recorded beside it.
    directory
        Whether ``target`` is a directory.

    Yields
    ------
    Path
        ``target`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputInUseError
        A live process holds the claim, on ``target`` or on a folder above it;
        nothing was written.
    LinkedOutputError
        ``target`` or its lock file is a symbolic link (refused, not followed).
    """
    target = Path(target)
    check_name_length(target, extra=0 if directory else 6)
    refuse_link(target)
    check_not_nested(target)
    folder = target if directory else target.parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(target, directory=directory)
    try:
        fd = _acquire(path, command, target)
    except BaseException:
        if created:
            _remove_if_empty(folder)
        raise
    held = folder.resolve() if directory else None
    if held is not None:
        _HELD.add(held)
    try:
        yield target
    finally:
        if held is not None:
            _HELD.discard(held)
        path.unlink(missing_ok=True)  # while still holding the lock: a waiter re-checks the inode
        os.close(fd)
        if created:
            _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
