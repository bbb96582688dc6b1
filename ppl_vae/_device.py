"""Resolve the ``device`` argument shared by training, diagnostics and benchmarks."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``'auto' | 'cpu' | 'cuda' | 'cuda:N'`` into a :class:`torch.device`.

    ``'auto'`` picks CUDA when present, else the CPU. Asking for CUDA on a machine
    without it raises ``ValueError`` rather than silently falling back.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for but CUDA is not available on this machine; "
                "use device='cpu' or device='auto'"
            )
        return torch.device(device)
    raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
