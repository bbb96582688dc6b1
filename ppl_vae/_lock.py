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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: Name of the lock file inside a claimed directory (left out of "is it empty?" checks).
LOCK_NAME = ".ppl-vae.lock"


class OutputInUseError(RuntimeError):
    """Another live process holds the claim on an output location."""


def lock_path(target: str | os.PathLike, *, directory: bool) -> Path:
    """The lock file of ``target``: inside it (a directory) or beside it (a file)."""
    target = Path(target)
    return target / LOCK_NAME if directory else target.parent / f".{target.name}.lock"


def _describe_holder(path: Path) -> str:
    """``'ppl-vae train (pid 123, since 2026-01-01 10:00:00)'`` from a lock file, as far as it can be read."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    if not isinstance(holder, dict) or "pid" not in holder:
        return "another process (its lock file is still being written)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    argv = f": {holder['argv']}" if holder.get("argv") else ""
    return f"{holder.get('command', 'another process')} (pid {holder['pid']}{where}{argv}, since {since})"


def _acquire(path: Path, command: str, target: Path) -> int:
    """Open and ``flock`` ``path`` without waiting; return the descriptor holding the lock.

    Raises
    ------
    OutputInUseError
        A live process holds it.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise OutputInUseError(f"{target} is in use by {_describe_holder(path)}; wait for it to finish "
                                   "or choose another output") from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
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
        A live process holds the claim; nothing was written.
    """
    target = Path(target)
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
    try:
        yield target
    finally:
        path.unlink(missing_ok=True)  # while still holding the lock: a waiter re-checks the inode
        os.close(fd)
        if created:
            _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
