"""Batched counterparts of the convolutional blocks: K ConvEncoders / ConvDecoders evaluated as one.

K convolutional networks of one architecture become one network whose
convolutions are *grouped* (``groups=K``): configuration k's channels are the
k-th block of the channel dimension, so one convolution call runs all K and no
channel of one configuration reads another's. The linear parts are
:class:`~ppl_vae.inference.layers.BatchedLinear`.

Every parameter keeps the configuration as its leading dimension (a conv
weight is stored ``(K, c_out, c_in, 3, 3)`` and viewed as grouped
``(K c_out, c_in, 3, 3)`` in ``forward``), because the engine's per-configuration
clipping, freezing, convergence check and checkpoint check all slice
parameters along dimension 0.

Shapes: pixels / latents ``(B, d)`` shared by all configurations, or per
configuration ``(..., K, B, d)`` (the trainer's ``(K, B, d)``; the diagnostics'
draws add leading dimensions), always to ``(..., K, B, d_out)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppl_vae.inference.layers import BatchedLinear
from ppl_vae.models.networks import ConvDecoder, ConvEncoder


def _stacked(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())


def _per_config_rows(inputs: torch.Tensor, n_configs: int, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(B, d)`` as is (shared), or ``(..., K, B, d)`` as ``(K, N, d)`` rows with ``N = prod(...) B``.

    Returns the rows and the leading shape in front of ``K`` (restored by :func:`_restore`).
    """
    if inputs.dim() == 2:
        return inputs, ()
    if inputs.dim() < 3 or inputs.shape[-3] != n_configs:
        raise ValueError(f"{name} inputs must have shape (B, d) (shared by the configurations) or "
                         f"(..., {n_configs}, B, d) (one slice per configuration), got {tuple(inputs.shape)}")
    lead = tuple(inputs.shape[:-3])
    return inputs.movedim(-3, 0).reshape(n_configs, -1, inputs.shape[-1]), lead


def _restore(out: torch.Tensor, lead: tuple[int, ...], rows: int) -> torch.Tensor:
    """``(K, N, d)`` back to ``(..., K, B, d)`` with ``N = prod(lead) B``."""
    if not lead:
        return out
    return out.unflatten(1, (*lead, rows)).movedim(0, -3)


class BatchedConvEncoder(nn.Module):
    """K :class:`~ppl_vae.models.networks.ConvEncoder` as one: ``(B, H W)`` or ``(..., K, B, H W)`` -> ``(..., K, B, out)``.

    Build with :meth:`from_encoders`; ``copy_slice_to`` writes slice k back.

    Attributes
    ----------
    conv_weights, conv_biases
        Per convolution ``(K, c_out, c_in, 3, 3)`` and ``(K, c_out)``.
    head
        :class:`BatchedLinear` from the flattened ``(c, h, w)`` features.
    """

    def __init__(self, source: ConvEncoder, n_configs: int):
        super().__init__()
        self.n_configs = n_configs
        self.image_shape = tuple(source.image_shape)
        convs = [m for m in source.conv if isinstance(m, nn.Conv2d)]
        self.strides = [c.stride for c in convs]
        self.paddings = [c.padding for c in convs]
        self.conv_weights = nn.ParameterList([nn.Parameter(torch.empty(n_configs, *c.weight.shape)) for c in convs])
        self.conv_biases = nn.ParameterList([nn.Parameter(torch.empty(n_configs, *c.bias.shape)) for c in convs])
        self.head = BatchedLinear(n_configs, source.head[1].in_features, source.head[1].out_features)

    @classmethod
    def from_encoders(cls, encoders: Sequence[ConvEncoder]) -> BatchedConvEncoder:
        """Stack K encoders of equal shape (their current values are copied)."""
        batched = cls(encoders[0], len(encoders)).to(encoders[0].head[1].weight)
        convs = [[m for m in e.conv if isinstance(m, nn.Conv2d)] for e in encoders]
        for i in range(len(batched.conv_weights)):
            batched.conv_weights[i] = _stacked([c[i].weight for c in convs])
            batched.conv_biases[i] = _stacked([c[i].bias for c in convs])
        batched.head = BatchedLinear.from_linears([e.head[1] for e in encoders])
        return batched

    def copy_slice_to(self, k: int, encoder: ConvEncoder) -> None:
        """Write configuration ``k``'s weights into an ordinary encoder."""
        convs = [m for m in encoder.conv if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv, weight, bias in zip(convs, self.conv_weights, self.conv_biases):
                conv.weight.copy_(weight[k])
                conv.bias.copy_(bias[k])
        self.head.copy_slice_to(k, encoder.head[1])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        rows, lead = _per_config_rows(pixels, self.n_configs, "ConvEncoder")
        k, shared = self.n_configs, pixels.dim() == 2
        # shared: (B, 1, H, W), and the first convolution runs all K filters on it (groups=1);
        # per configuration: (N, K, H, W), configuration k's image is input channel k (groups=K).
        hidden = (rows if shared else rows.transpose(0, 1)).reshape(-1, 1 if shared else k, *self.image_shape)
        for i, (weight, bias) in enumerate(zip(self.conv_weights, self.conv_biases)):
            groups = 1 if (shared and i == 0) else k
            hidden = F.relu(F.conv2d(hidden, weight.flatten(0, 1), bias.flatten(), stride=self.strides[i],
                                     padding=self.paddings[i], groups=groups))
        # (N, K c, h, w) -> (K, N, c h w): the flatten order of nn.Flatten within each configuration
        flat = hidden.reshape(hidden.shape[0], k, -1).transpose(0, 1)
        return _restore(self.head(flat), lead, pixels.shape[-2])


class BatchedConvDecoder(nn.Module):
    """K :class:`~ppl_vae.models.networks.ConvDecoder` as one: ``(B, in)`` or ``(..., K, B, in)`` -> ``(..., K, B, H W)``.

    Attributes
    ----------
    head
        :class:`BatchedLinear` to the coarse ``(c, h, w)`` grid.
    deconv_weights, deconv_biases
        Per transposed convolution ``(K, c_in, c_out, 3, 3)`` and ``(K, c_out)``.
    """

    def __init__(self, source: ConvDecoder, n_configs: int):
        super().__init__()
        self.n_configs = n_configs
        self.image_shape = tuple(source.image_shape)
        self.coarse = tuple(source.coarse)
        self.first_channels = source.channels[0]
        deconvs = [m for m in source.deconv if isinstance(m, nn.ConvTranspose2d)]
        self.strides = [d.stride for d in deconvs]
        self.paddings = [d.padding for d in deconvs]
        self.output_paddings = [d.output_padding for d in deconvs]
        self.head = BatchedLinear(n_configs, source.head.in_features, source.head.out_features)
        self.deconv_weights = nn.ParameterList([nn.Parameter(torch.empty(n_configs, *d.weight.shape))
                                                for d in deconvs])
        self.deconv_biases = nn.ParameterList([nn.Parameter(torch.empty(n_configs, *d.bias.shape)) for d in deconvs])

    @classmethod
    def from_decoders(cls, decoders: Sequence[ConvDecoder]) -> BatchedConvDecoder:
        """Stack K decoders of equal shape (their current values are copied)."""
        batched = cls(decoders[0], len(decoders)).to(decoders[0].head.weight)
        deconvs = [[m for m in d.deconv if isinstance(m, nn.ConvTranspose2d)] for d in decoders]
        batched.head = BatchedLinear.from_linears([d.head for d in decoders])
        for i in range(len(batched.deconv_weights)):
            batched.deconv_weights[i] = _stacked([d[i].weight for d in deconvs])
            batched.deconv_biases[i] = _stacked([d[i].bias for d in deconvs])
        return batched

    def copy_slice_to(self, k: int, decoder: ConvDecoder) -> None:
        """Write configuration ``k``'s weights into an ordinary decoder."""
        self.head.copy_slice_to(k, decoder.head)
        deconvs = [m for m in decoder.deconv if isinstance(m, nn.ConvTranspose2d)]
        with torch.no_grad():
            for deconv, weight, bias in zip(deconvs, self.deconv_weights, self.deconv_biases):
                deconv.weight.copy_(weight[k])
                deconv.bias.copy_(bias[k])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rows, lead = _per_config_rows(features, self.n_configs, "ConvDecoder")
        k = self.n_configs
        # the head gives (K, N, c h w) either way; as (N, K c, h, w) configuration k owns channel block k
        grid = self.head(rows)
        n_rows = grid.shape[1]
        hidden = grid.reshape(k, n_rows, self.first_channels, *self.coarse).transpose(0, 1)
        hidden = hidden.reshape(n_rows, k * self.first_channels, *self.coarse)
        for i, (weight, bias) in enumerate(zip(self.deconv_weights, self.deconv_biases)):
            hidden = F.conv_transpose2d(F.relu(hidden), weight.flatten(0, 1), bias.flatten(), stride=self.strides[i],
                                        padding=self.paddings[i], output_padding=self.output_paddings[i], groups=k)
        out = hidden.reshape(n_rows, k, math.prod(self.image_shape)).transpose(0, 1)
        return _restore(out, lead, features.shape[-2])


#: Ordinary block -> its batched counterpart (exact types: a subclass may change ``forward``).
BATCHED_BLOCKS = {ConvEncoder: BatchedConvEncoder.from_encoders, ConvDecoder: BatchedConvDecoder.from_decoders}
