"""Resolve the ``device`` argument shared by training, diagnostics and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a device is resolved, not by the command line's --help
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def check_device_name(name: str, what: str = "device") -> str:
    """``name`` if it is ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` (whether or not this machine has CUDA).

    For options that choose a device elsewhere (a sweep's Ray workers), checked
    before any work starts.
    """
    text = str(name)
    if text in DEVICE_CHOICES or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(f"{what} must be one of 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``'auto' | 'cpu' | 'cuda' | 'cuda:N'`` into a :class:`torch.device`.

    ``'auto'`` picks CUDA when present, else the CPU. Asking for CUDA on a machine
    without it raises ``ValueError`` rather than silently falling back.
    """
    import torch

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
