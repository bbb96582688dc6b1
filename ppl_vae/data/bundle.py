"""The container every data loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class DataBundle:
    """A data set ready for a model family.

    Attributes
    ----------
    name
        Data set name (``'synthetic'``, ``'digits'``, ``'mnist'``, ...).
    x
        ``(n, d_x)`` float32. The data for a VAE/MHVAE, the condition for a CVAE.
    y
        ``(n, d_y)`` float32 CVAE output, or ``None`` for single-input data.
    labels
        ``(n,)`` int64 class labels for image data, else ``None``.
    image_shape
        ``(height, width)`` of the full image for image data, else ``None``.
    split
        ``'quadrant'`` or ``'half'`` for CVAE image splits, else ``None``.
    attrs
        Provenance (seed, spectrum, correlation level, class filter, ...);
        JSON-serialisable values only.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    image_shape: tuple[int, int] | None = None
    split: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.x.shape[0])

    @property
    def is_paired(self) -> bool:
        """True when the bundle holds CVAE pairs ``(x, y)``."""
        return self.y is not None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The model's positional data arguments: ``(x,)`` or ``(x, y)``."""
        return (self.x,) if self.y is None else (self.x, self.y)

    def to(self, device: torch.device | str) -> DataBundle:
        """A copy with every tensor on ``device``."""
        moved = {
            key: (getattr(self, key).to(device) if getattr(self, key) is not None else None)
            for key in ("x", "y", "labels")
        }
        return DataBundle(self.name, image_shape=self.image_shape, split=self.split, attrs=dict(self.attrs), **moved)

    def subset(self, index: torch.Tensor | slice) -> DataBundle:
        """A copy holding the rows ``index`` of every tensor."""
        pick = {
            key: (getattr(self, key)[index] if getattr(self, key) is not None else None)
            for key in ("x", "y", "labels")
        }
        return DataBundle(self.name, image_shape=self.image_shape, split=self.split, attrs=dict(self.attrs), **pick)
