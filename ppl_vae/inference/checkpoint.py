"""Checkpoints: everything a run needs to continue bit for bit, in a format that cannot carry code.

A checkpoint holds the model parameters, the optimiser state, the step, the loss
history so far, the state of every per-configuration generator (minibatch order
and Monte Carlo noise, see :mod:`~ppl_vae.inference.randomness`), plus the model
configs and the training options it was written under: tensors, numbers,
strings, lists and dictionaries only. It is read back with
``torch.load(weights_only=True)``, which refuses anything else, so a run
directory received from someone else cannot run code when it is resumed or
reported on. Files are written atomically, so a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ppl_vae._io import DamagedFileError, atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(DamagedFileError):
    """A checkpoint file that cannot be read safely: corrupted, truncated, empty, or holding code."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain data) with :func:`torch.save`, atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, tensors mapped to ``device``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        The file is empty, truncated or corrupted, or holds objects other than
        tensors and plain data (e.g. a pickled callable): it is refused unread.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is damaged
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read (not an archive)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        what = lines[0] if lines else "an object that is not a tensor or plain data"
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain data and was refused "
                              f"unread (only load checkpoints written by ppl_vae): {what}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read "
                              f"({type(err).__name__})") from None
    if not isinstance(state, dict) or "model_state" not in state:
        raise CheckpointError(f"checkpoint {path} is not a ppl_vae checkpoint (no model_state)")
    return state
