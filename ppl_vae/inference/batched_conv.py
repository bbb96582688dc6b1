"""Batched counterparts of the convolutional blocks: K ConvEncoders / ConvDecoders evaluated as one.

K convolutional networks of one architecture become one network whose
convolutions are *grouped* (``groups=K``): configuration k's channels are the
k-th block of the channel dimension, so one convolution call runs all K and no
channel of one configuration reads another's. The linear parts are
:class:`~ppl_vae.inference.layers.BatchedLinear`.

On small images (at most :data:`DENSE_MAX_POSITIONS` input positions, e.g. the
8 x 8 digits) a convolution is instead one dense matrix product per
configuration: the kernel is spread into the matrix of the layer's linear map
by a fixed tap matrix (:func:`tap_matrix`, read off the layer's own operation),
which the CPU runs several times faster than the grouped convolution kernels
at these sizes. Both give each configuration's convolution, to float rounding.

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


#: Largest input (positions of one channel: 8 x 8) at which a convolution of a batched block runs as one dense
#: matrix product per configuration instead of a grouped convolution. On such small images the convolution
#: kernels cost far more than their arithmetic: on the 2-core development CPU, one thread, K = 3 and 128 rows
#: of 8 x 8 digits, a grouped transposed convolution to 8 x 8 took 1.9 ms forward, where the dense product
#: (7 times the multiply-adds: every output position reads every input position) takes a fraction of that.
#: Larger images (MNIST's 28 x 28) keep the convolutions: there the dense product's extra arithmetic grows
#: with the image.
DENSE_MAX_POSITIONS = 64


def _layer_inputs(shape: tuple[int, int], layers: Sequence[nn.Module]) -> list[tuple[int, int]]:
    """The spatial input shape ``(h, w)`` of each convolution (or transposed convolution) in ``layers``."""
    shapes = [tuple(shape)]
    for layer in layers[:-1]:
        (h, w), k, s, p = shapes[-1], layer.kernel_size, layer.stride, layer.padding
        if isinstance(layer, nn.ConvTranspose2d):
            o = layer.output_padding
            shapes.append(((h - 1) * s[0] - 2 * p[0] + k[0] + o[0], (w - 1) * s[1] - 2 * p[1] + k[1] + o[1]))
        else:
            shapes.append(((h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1))
    return shapes


def tap_matrix(in_shape: tuple[int, int], layer: nn.Conv2d | nn.ConvTranspose2d) -> torch.Tensor:
    """Which input position each kernel tap of ``layer`` carries to which output position.

    Returns ``S`` of shape ``(T, Q, P)`` (float32, 0 / 1): ``T`` kernel taps, ``Q``
    input and ``P`` output positions of one channel. It is read off the layer's
    own operation (stride, padding, output padding) applied to one-hot images
    with one-hot kernels, so the dense product of :func:`_conv_matrix` is that
    operation.
    """
    positions, taps = in_shape[0] * in_shape[1], layer.kernel_size[0] * layer.kernel_size[1]
    images = torch.eye(positions).reshape(positions, 1, *in_shape)
    if isinstance(layer, nn.ConvTranspose2d):
        hits = F.conv_transpose2d(images, torch.eye(taps).reshape(1, taps, *layer.kernel_size), stride=layer.stride,
                                  padding=layer.padding, output_padding=layer.output_padding)
    else:
        hits = F.conv2d(images, torch.eye(taps).reshape(taps, 1, *layer.kernel_size), stride=layer.stride,
                        padding=layer.padding)
    return hits.flatten(2).transpose(0, 1).contiguous()  # (Q, T, P) -> (T, Q, P)


def _register_taps(block: nn.Module, shapes: Sequence[tuple[int, int]], layers: Sequence[nn.Module]) -> None:
    """``block.taps``: each layer's :func:`tap_matrix` where it runs dense, else None (buffers left out of the
    state dict: they follow from the architecture, so checkpoints do not change)."""
    for i, (shape, layer) in enumerate(zip(shapes, layers)):
        dense = shape[0] * shape[1] <= DENSE_MAX_POSITIONS
        block.register_buffer(f"taps_{i}", tap_matrix(shape, layer) if dense else None, persistent=False)


def _taps(block: nn.Module, i: int) -> torch.Tensor | None:
    """Layer i's :func:`tap_matrix` when it runs as a dense product, else None."""
    return getattr(block, f"taps_{i}")


def _conv_matrix(weight: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Per configuration, a convolution ``(K, c_out, c_in, kh, kw)`` as the matrix ``(K, c_in Q, c_out P)``."""
    return _tap_product(weight.transpose(1, 2), taps)


def _deconv_matrix(weight: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Per configuration, a transposed convolution ``(K, c_in, c_out, kh, kw)`` as ``(K, c_in Q, c_out P)``."""
    return _tap_product(weight, taps)


def _tap_product(weight: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``(K, c_in, c_out, kh, kw)`` kernels and ``(T, Q, P)`` taps -> ``(K, c_in Q, c_out P)``: entry
    ``(c, q), (o, p)`` sums kernel ``(c, o)``'s taps that carry position q to p."""
    k, c_in, c_out = weight.shape[:3]
    n_taps, n_in, n_out = taps.shape
    dense = (weight.reshape(-1, n_taps) @ taps.reshape(n_taps, -1)).reshape(k, c_in, c_out, n_in, n_out)
    return dense.transpose(2, 3).reshape(k, c_in * n_in, c_out * n_out)


def _dense_layer(rows: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor, positions: int) -> torch.Tensor:
    """``(K, N, c_in Q)`` or shared ``(N, Q)`` rows through ``(K, c_in Q, c_out P)`` plus the ``(K, c_out)`` bias,
    to ``(K, N, c_out P)`` (channel-major, as a flattened ``(c, h, w)`` grid)."""
    # expand, not repeat_interleave: the latter's gradient sums in another order traced than eager
    bias_rows = bias.unsqueeze(-1).expand(*bias.shape, positions).reshape(bias.shape[0], 1, -1)
    if rows.dim() == 2:  # one GEMM against the K matrices side by side
        flat = rows @ matrix.transpose(0, 1).reshape(rows.shape[1], -1)
        return flat.reshape(rows.shape[0], matrix.shape[0], -1).transpose(0, 1) + bias_rows
    return torch.baddbmm(bias_rows, rows, matrix)


def _rows_to_grid(rows: torch.Tensor, n_configs: int, channels: int, shape: tuple[int, int]) -> torch.Tensor:
    """``(K, N, c h w)`` -> ``(N, K c, h, w)``: configuration k's channels are block k of a grouped convolution."""
    return rows.reshape(n_configs, -1, channels, *shape).transpose(0, 1).reshape(-1, n_configs * channels, *shape)


def _grid_to_rows(grid: torch.Tensor, n_configs: int) -> torch.Tensor:
    """``(N, K c, h, w)`` -> ``(K, N, c h w)``."""
    return grid.reshape(grid.shape[0], n_configs, -1).transpose(0, 1)


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
        self.in_shapes = _layer_inputs(self.image_shape, convs)
        _register_taps(self, self.in_shapes, convs)
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
        k = self.n_configs
        hidden, grid = rows, False  # rows (K, N, c h w), shared (N, H W); or a grid (N, K c, h, w)
        for i, (weight, bias) in enumerate(zip(self.conv_weights, self.conv_biases)):
            channels, shape = weight.shape[2], self.in_shapes[i]
            taps = _taps(self, i)
            if taps is not None:
                if grid:
                    hidden, grid = _grid_to_rows(hidden, k), False
                hidden = F.relu(_dense_layer(hidden, _conv_matrix(weight, taps), bias, taps.shape[2]))
                continue
            # shared (N, 1, H, W): the first convolution runs all K filters on it (groups=1); else
            # (N, K c, h, w), configuration k's channels are block k (groups=K)
            shared = hidden.dim() == 2
            if not grid:
                hidden = (hidden.reshape(-1, 1, *shape) if shared else _rows_to_grid(hidden, k, channels, shape))
                grid = True
            hidden = F.relu(F.conv2d(hidden, weight.flatten(0, 1), bias.flatten(), stride=self.strides[i],
                                     padding=self.paddings[i], groups=1 if shared else k))
        # -> (K, N, c h w): the flatten order of nn.Flatten within each configuration
        flat = _grid_to_rows(hidden, k) if grid else hidden
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
        deconvs = [m for m in source.deconv if isinstance(m, nn.ConvTranspose2d)]
        self.strides = [d.stride for d in deconvs]
        self.paddings = [d.padding for d in deconvs]
        self.output_paddings = [d.output_padding for d in deconvs]
        self.in_shapes = _layer_inputs(self.coarse, deconvs)
        _register_taps(self, self.in_shapes, deconvs)
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
        hidden, grid = self.head(rows), False  # rows (K, N, c h w) or a grid (N, K c, h, w)
        for i, (weight, bias) in enumerate(zip(self.deconv_weights, self.deconv_biases)):
            taps = _taps(self, i)
            if taps is not None:
                if grid:
                    hidden, grid = _grid_to_rows(hidden, k), False
                hidden = _dense_layer(F.relu(hidden), _deconv_matrix(weight, taps), bias, taps.shape[2])
                continue
            if not grid:  # configuration k owns channel block k
                hidden, grid = _rows_to_grid(hidden, k, weight.shape[1], self.in_shapes[i]), True
            hidden = F.conv_transpose2d(F.relu(hidden), weight.flatten(0, 1), bias.flatten(), stride=self.strides[i],
                                        padding=self.paddings[i], output_padding=self.output_paddings[i], groups=k)
        out = _grid_to_rows(hidden, k) if grid else hidden
        return _restore(out, lead, features.shape[-2])


#: Ordinary block -> its batched counterpart (exact types: a subclass may change ``forward``).
BATCHED_BLOCKS = {ConvEncoder: BatchedConvEncoder.from_encoders, ConvDecoder: BatchedConvDecoder.from_decoders}
