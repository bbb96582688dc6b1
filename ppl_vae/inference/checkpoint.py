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

import json
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
    with open(path, "rb"):  # PermissionError names the file; not a damaged checkpoint
        pass
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


#: What a checkpoint written by :func:`ppl_vae.inference.fit` holds (a resume reads every entry).
FIT_KEYS = ("model_state", "optimizer_state", "step", "loss_history", "sampler_state", "noise_state", "stopped",
            "diverged", "configs", "train")


def check_state(state: dict[str, Any], path: str | os.PathLike, module: torch.nn.Module | None = None, *,
                keys: tuple[str, ...] = ("model_state", "step")) -> int:
    """Check a loaded checkpoint before anything is built on it; return its step.

    Every check runs before a caller removes or replaces any file, so a
    malformed checkpoint costs nothing but the error.

    Parameters
    ----------
    state
        What :func:`load_checkpoint` returned.
    path
        The checkpoint file (named in every error).
    module
        The model (or batched model) the parameters are for: the names and shapes
        of ``model_state`` must match its ``state_dict()``. None: not checked.
    keys
        Entries the caller reads (:data:`FIT_KEYS` for a resume).

    Returns
    -------
    int
        The step (>= 0) the checkpoint was written at.

    Raises
    ------
    CheckpointError
        A missing entry, a step that is not a non-negative integer, parameters
        that are not tensors, that do not fit ``module``, or non-finite weights of
        a configuration that had not diverged.
    """
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: it is damaged or was not written by "
                              "this version of ppl_vae")
    step = _step(state.get("step"), path)
    weights = state["model_state"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"checkpoint {path}: model_state is not a mapping of parameter names to tensors")
    if module is not None:
        _check_fits(weights, module.state_dict(), path)
    stopped = state.get("stopped")
    live = None if not isinstance(stopped, torch.Tensor) or stopped.ndim != 1 else ~stopped.bool()
    for name, value in weights.items():
        if not value.is_floating_point():
            continue
        rows = value
        if live is not None and len(live) > 1 and value.ndim >= 1 and value.shape[0] == len(live):
            rows = value[live]  # a diverged (stopped) configuration of a batched run may hold NaN
        if not bool(torch.isfinite(rows).all()):
            raise CheckpointError(f"checkpoint {path}: parameter {name!r} holds NaN or infinite values; it is not a "
                                  "usable checkpoint (retrain, or resume from an earlier copy)")
    if "configs" in keys and not (isinstance(state["configs"], list)
                                  and all(isinstance(c, dict) for c in state["configs"])):
        raise CheckpointError(f"checkpoint {path}: configs is not a list of model configs")
    if "train" in keys and not isinstance(state["train"], dict):
        raise CheckpointError(f"checkpoint {path}: train is not a mapping of training options")
    return step


def _step(value: Any, path: str | os.PathLike) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"checkpoint {path}: step must be a non-negative integer, got {value!r}")
    return value


def _check_fits(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path) -> None:
    """Refuse parameters whose names or shapes differ from the model's, naming the first few."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"] if missing else []) + \
                ([f"unexpected {', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}"] if extra else [])
        raise CheckpointError(f"checkpoint {path} does not hold this model's parameters ({'; '.join(parts)}); "
                              "it belongs to another model or is damaged")
    wrong = [f"{name} {tuple(weights[name].shape)} (the model has {tuple(value.shape)})"
             for name, value in expected.items() if tuple(weights[name].shape) != tuple(value.shape)]
    if wrong:
        raise CheckpointError(f"checkpoint {path}: parameter shapes differ from the model's: {'; '.join(wrong[:3])}")


#: ``train`` entries that fix which rows were trained on and how: ``config.json`` must agree with the checkpoint.
PROVENANCE_KEYS = ("test_fraction", "split_seed", "n_rows", "n_train", "n_test", "test_rows_sha256", "seeds",
                   "batch_size", "lr", "optimizer", "lr_decay", "clip_norm")


def check_split_matches(info: dict[str, Any], state: dict[str, Any], config_path: Path,
                        checkpoint_path: Path) -> None:
    """Refuse a ``config.json`` whose training section (split, seeds, options) disagrees with the checkpoint's.

    The checkpoint's record is the one trusted: it was written with the weights.
    An edited ``test_fraction`` would otherwise put training rows into the
    "held-out" metrics. Entries the checkpoint does not record are not compared.

    Raises
    ------
    DamagedFileError
        Naming both files and the first differing entries.
    """
    saved = state.get("train")
    if not isinstance(saved, dict):
        return
    given = info.get("train")
    if not isinstance(given, dict):
        raise DamagedFileError(f"{config_path}: 'train' is not a mapping of training options")
    plain = lambda value: json.loads(json.dumps(value, default=str))  # noqa: E731  (tuples vs lists)
    changed = [key for key in PROVENANCE_KEYS if key in saved and plain(given.get(key)) != plain(saved[key])]
    if changed:
        shown = "; ".join(f"{key} is {given.get(key)!r} in config.json, {saved[key]!r} in the checkpoint"
                          for key in changed[:3])
        raise DamagedFileError(f"{config_path} does not match {checkpoint_path}: {shown}; the run directory was "
                               "edited or mixed with another run")
