"""Building blocks shared by the model families: maps and diagonal-Gaussian heads.

Every module here acts on the last dimension and broadcasts over any leading
batch dimensions, so that the Pyro models can be wrapped in extra plates
(posterior samples, importance samples, configurations). Convolutional blocks
flatten the leading dimensions, run on ``(N, C, H, W)`` and restore them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear``: ``len(hidden_dims)`` hidden ReLU layers."""
    widths = [in_dim, *hidden_dims]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


def map_for(arch: str, in_dim: int, out_dim: int, hidden_dims: Sequence[int]) -> nn.Module:
    """The map of architecture ``arch`` from ``in_dim`` to ``out_dim`` (linear: no bias, as in the theory)."""
    if arch == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    return mlp(in_dim, hidden_dims, out_dim)


def _conv_out(size: int) -> int:
    """Output size of a 3x3, stride-2, padding-1 convolution."""
    return (size + 1) // 2


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions and a linear layer: ``(..., H W) -> (..., out_dim)``."""

    def __init__(self, image_shape: tuple[int, int], out_dim: int, channels: tuple[int, int] = (16, 32)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        height, width = self.image_shape
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], 3, stride=2, padding=1), nn.ReLU(),
        )
        flat = channels[1] * _conv_out(_conv_out(height)) * _conv_out(_conv_out(width))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, out_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        lead = pixels.shape[:-1]
        images = pixels.reshape(-1, 1, *self.image_shape)
        return self.head(self.conv(images)).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """A linear layer and two stride-2 transposed convolutions: ``(..., in_dim) -> (..., H W)``."""

    def __init__(self, in_dim: int, image_shape: tuple[int, int], channels: tuple[int, int] = (32, 16)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        height, width = self.image_shape
        mid = (_conv_out(height), _conv_out(width))
        self.coarse = (_conv_out(mid[0]), _conv_out(mid[1]))
        self.channels = channels
        self.head = nn.Linear(in_dim, channels[0] * self.coarse[0] * self.coarse[1])

        def up(c_in: int, c_out: int, size_in: tuple[int, int], size_out: tuple[int, int]) -> nn.ConvTranspose2d:
            # output_padding picks the exact target size (each side grows to 2 s - 1 or 2 s)
            padding = tuple(t - (2 * s - 1) for s, t in zip(size_in, size_out))
            return nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=padding)

        self.deconv = nn.Sequential(
            nn.ReLU(), up(channels[0], channels[1], self.coarse, mid),
            nn.ReLU(), up(channels[1], 1, mid, self.image_shape),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lead = features.shape[:-1]
        grid = self.head(features).reshape(-1, self.channels[0], *self.coarse)
        return self.deconv(grid).reshape(*lead, math.prod(self.image_shape))


class DiagonalGaussian(nn.Module):
    """Turns features into the ``(loc, scale)`` of a diagonal Gaussian.

    Parameters
    ----------
    body
        Module mapping the inputs to ``feature_dim`` features; ``None`` for the
        linear architecture, where the location is a bias-free linear map of the
        input itself.
    feature_dim
        Width of the body's output (the input width when ``body`` is None).
    out_dim
        Dimension of the Gaussian.
    std
        ``None``: learnable std (a head on the features for a body, a free vector
        when ``body`` is None). A number or one number per dimension: fixed std.
    """

    def __init__(self, body: nn.Module | None, feature_dim: int, out_dim: int,
                 std: float | Sequence[float] | None = None):
        super().__init__()
        self.body = body
        self.loc = nn.Linear(feature_dim, out_dim, bias=body is not None)
        self.log_std: nn.Module | nn.Parameter | None = None
        if std is None and body is None:
            self.log_std = nn.Parameter(torch.zeros(out_dim))
        elif std is None:
            self.log_std = nn.Linear(feature_dim, out_dim)
        else:
            fixed = torch.as_tensor(std, dtype=torch.float32).expand(out_dim).clone()
            self.register_buffer("fixed_std", fixed)

    @property
    def learnable_std(self) -> bool:
        return self.log_std is not None

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.body is not None:
            features = self.body(features)
        loc = self.loc(features)
        if isinstance(self.log_std, nn.Module):
            scale = self.log_std(features).exp()
        elif self.log_std is not None:
            scale = self.log_std.exp().expand_as(loc)
        else:
            scale = self.fixed_std.expand_as(loc)
        return loc, scale


def feature_body(arch: str, in_dim: int, hidden_dims: Sequence[int],
                 image_shape: tuple[int, int] | None = None) -> tuple[nn.Module | None, int]:
    """The shared trunk of an encoder and the width of its output.

    linear: none (the head is the bias-free map itself); mlp: ReLU layers ending
    in a ReLU; cnn: :class:`ConvEncoder` followed by a ReLU.
    """
    if arch == "linear":
        return None, in_dim
    if arch == "mlp":
        trunk = mlp(in_dim, hidden_dims[:-1], hidden_dims[-1])
        return nn.Sequential(trunk, nn.ReLU()), hidden_dims[-1]
    if image_shape is None:
        raise ValueError("image_shape must be given for arch='cnn'")
    return nn.Sequential(ConvEncoder(image_shape, hidden_dims[-1]), nn.ReLU()), hidden_dims[-1]


def decoder_for(arch: str, in_dim: int, out_dim: int, hidden_dims: Sequence[int],
                image_shape: tuple[int, int] | None = None) -> nn.Module:
    """Map a latent to an output mean: linear (no bias), ReLU MLP (hidden widths reversed) or conv decoder."""
    if arch == "cnn":
        if image_shape is None:
            raise ValueError("image_shape must be given for arch='cnn'")
        return ConvDecoder(in_dim, image_shape)
    return map_for(arch, in_dim, out_dim, tuple(reversed(tuple(hidden_dims))))
