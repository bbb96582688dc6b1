"""Checkpoints: everything a run needs to continue bit for bit.

A checkpoint holds the model parameters, the optimiser state, the step, the loss
history so far, the batch sampler's state and every random number generator a
step touches (torch CPU and CUDA, Python, NumPy), plus the model config and the
training options it was written under. Files are written atomically, so a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyro.util
import torch

from ppl_vae._io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state(device: torch.device) -> dict[str, Any]:
    """Snapshot of the torch (CPU, and CUDA when used), Python and NumPy generators."""
    state = dict(pyro.util.get_rng_state())
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore a :func:`rng_state` snapshot."""
    pyro.util.set_rng_state({key: state[key] for key in ("torch", "random", "numpy")})
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"].cpu(), device)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with :func:`torch.save`, atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, tensors mapped to ``device``.

    The file holds Python and NumPy RNG states besides tensors, so it is loaded
    with ``weights_only=False``: only load checkpoints you wrote yourself.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=device, weights_only=False)
