"""Batched layers: K independent networks evaluated as one.

A sweep over K configurations of one architecture trains K networks whose
weights are stacked along a leading *configuration* dimension, so that one
batched matrix product replaces K small ones. :class:`BatchedLinear` is the
building block; :func:`stack_modules` turns K ordinary networks (any nesting
of ``nn.Linear``, element-wise layers, free parameters and the suite's
convolutional blocks, :mod:`~ppl_vae.inference.batched_conv`) into one batched
network, and :func:`unstack_into` writes the trained slices back.

Shapes: a batched layer maps a shared input ``(B, in)`` or a per-configuration
input ``(K, B, in)`` to ``(K, B, out)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from ppl_vae._validate import check_int_range


class BatchedLinear(nn.Module):
    """K independent affine maps ``y_k = x_k W_k^T + b_k``.

    Parameters
    ----------
    n_configs
        K, the number of independent maps (>= 1).
    in_features, out_features
        Input and output widths.
    bias
        Learn a bias per configuration.
    seeds
        K integer seeds; slice k is initialised like ``nn.Linear`` (uniform on
        ``+-1/sqrt(in_features)``) from a generator seeded with ``seeds[k]``.
        ``None``: seeds ``0 .. K-1``.

    Attributes
    ----------
    weight
        ``(K, out_features, in_features)``.
    bias
        ``(K, 1, out_features)`` or ``None``; the singleton dimension broadcasts
        over the data batch.
    """

    def __init__(self, n_configs: int, in_features: int, out_features: int, *, bias: bool = True,
                 seeds: Sequence[int] | None = None, device=None, dtype=None):
        super().__init__()
        self.n_configs = check_int_range("n_configs", n_configs, 1)
        self.in_features = check_int_range("in_features", in_features, 1)
        self.out_features = check_int_range("out_features", out_features, 1)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(n_configs, out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(n_configs, 1, out_features, **factory)) if bias else None
        self.reset_parameters(seeds)

    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """Initialise slice k from its own seed, with ``nn.Linear``'s bounds."""
        seeds = range(self.n_configs) if seeds is None else list(seeds)
        if len(seeds) != self.n_configs:
            raise ValueError(f"seeds must hold n_configs = {self.n_configs} integers, got {len(seeds)}")
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for k, seed in enumerate(seeds):
                generator = torch.Generator().manual_seed(int(seed))
                # Drawn on the CPU then copied: identical values on every device.
                self.weight[k].copy_(torch.empty(self.weight.shape[1:]).uniform_(-bound, bound, generator=generator))
                if self.bias is not None:
                    self.bias[k].copy_(torch.empty(self.bias.shape[1:]).uniform_(-bound, bound, generator=generator))

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> BatchedLinear:
        """Stack K ``nn.Linear`` layers of equal shape (their current values are copied)."""
        first = linears[0]
        if any(layer.weight.shape != first.weight.shape or (layer.bias is None) != (first.bias is None)
               for layer in linears):
            raise ValueError("linears must all have the same in_features, out_features and bias setting")
        batched = cls(len(linears), first.in_features, first.out_features, bias=first.bias is not None,
                      device=first.weight.device, dtype=first.weight.dtype)
        with torch.no_grad():
            batched.weight.copy_(torch.stack([layer.weight for layer in linears]))
            if batched.bias is not None:
                batched.bias.copy_(torch.stack([layer.bias for layer in linears]).unsqueeze(1))
        return batched

    def copy_slice_to(self, k: int, linear: nn.Linear) -> None:
        """Write configuration ``k``'s weights into an ordinary ``nn.Linear``."""
        with torch.no_grad():
            linear.weight.copy_(self.weight[k])
            if self.bias is not None:
                linear.bias.copy_(self.bias[k, 0])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, in)`` (shared by all configurations) or ``(K, B, in)`` -> ``(K, B, out)``."""
        if inputs.dim() == 2:
            # One GEMM against all K weight matrices side by side: (B, in) @ (in, K out). Its (K, B, out) view
            # is copied to contiguous memory: element-wise kernels on the strided view (and on everything
            # computed from it, which inherits its layout) ran 5-6x slower on the CPU.
            flat = inputs @ self.weight.reshape(-1, self.in_features).T
            out = flat.reshape(inputs.shape[0], self.n_configs, self.out_features).transpose(0, 1).contiguous()
            return out if self.bias is None else out + self.bias
        if inputs.dim() != 3 or inputs.shape[0] != self.n_configs:
            raise ValueError(f"inputs must have shape (B, {self.in_features}) or "
                             f"({self.n_configs}, B, {self.in_features}), got {tuple(inputs.shape)}")
        if self.bias is None:
            return torch.bmm(inputs, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias, inputs, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return (f"n_configs={self.n_configs}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class UnsupportedLayerError(TypeError):
    """A network holds a layer that has no batched counterpart (e.g. a bare convolution)."""


#: Layers that mix more than the last dimension, so a leading configuration
#: dimension would be misread as a batch of images or normalised over. The
#: convolutions inside the suite's ConvEncoder / ConvDecoder are batched as
#: whole blocks (:func:`_batched_blocks`); anywhere else they are refused.
_NOT_BATCHABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.BatchNorm1d,
                  nn.BatchNorm2d, nn.LayerNorm, nn.Flatten, nn.Unflatten)


def _batched_blocks() -> dict:
    """Ordinary block type -> the function stacking K of them (imported here: batched_conv imports this module)."""
    from ppl_vae.inference.batched_conv import BATCHED_BLOCKS

    return BATCHED_BLOCKS


def is_stackable(module: nn.Module) -> bool:
    """True when :func:`stack_modules` can batch ``module`` over configurations.

    That is: every sub-module is an ``nn.Linear``, a suite
    :class:`~ppl_vae.models.networks.ConvEncoder` / ``ConvDecoder`` (exactly those
    types: they have batched counterparts), or holds only 1-D free tensors (a
    learnable log-std vector, a fixed std buffer); no other convolution,
    normalisation or reshaping layer.
    """
    if type(module) in _batched_blocks() or isinstance(module, nn.Linear):
        return True
    if isinstance(module, _NOT_BATCHABLE):
        return False
    own = [*module.parameters(recurse=False), *(b for b in module.buffers(recurse=False) if b is not None)]
    return all(tensor.dim() == 1 for tensor in own) and all(is_stackable(child) for child in module.children())


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One batched network from K networks of identical structure.

    Each ``nn.Linear`` becomes a :class:`BatchedLinear`, each ``ConvEncoder`` /
    ``ConvDecoder`` its grouped-convolution counterpart; each free parameter or
    buffer of shape ``s`` becomes ``(K, 1, *s)`` (a configuration dimension
    and a singleton that broadcasts over the data batch; 1-D tensors only).
    The result runs the first network's ``forward`` code on batched tensors,
    so networks must act on the last dimension and broadcast over leading ones.

    Parameters
    ----------
    modules
        K >= 1 networks with the same structure and parameter shapes.

    Returns
    -------
    torch.nn.Module
        A deep copy of ``modules[0]`` with batched layers holding copies of all
        K networks' current values.

    Raises
    ------
    UnsupportedLayerError
        A network holds a layer without a batched counterpart (a convolution
        outside the suite's conv blocks, normalisation layers).
    """
    if not modules:
        raise ValueError("modules must hold at least one network")
    if not is_stackable(modules[0]):
        raise UnsupportedLayerError(f"{type(modules[0]).__name__} holds layers that cannot be batched "
                                    "over configurations (only Linear, element-wise layers and the suite's "
                                    "ConvEncoder / ConvDecoder blocks can)")
    blocks = _batched_blocks()
    if type(modules[0]) in blocks:
        return blocks[type(modules[0])](list(modules))
    if isinstance(modules[0], nn.Linear):
        return BatchedLinear.from_linears(list(modules))
    template = copy.deepcopy(modules[0])
    _stack_into(template, list(modules))
    return template


def _stack_into(target: nn.Module, sources: list[nn.Module]) -> None:
    blocks = _batched_blocks()
    for name, child in list(target.named_children()):
        children = [getattr(source, name) for source in sources]
        if type(child) in blocks:
            setattr(target, name, blocks[type(child)](children))
        elif isinstance(child, nn.Linear):
            setattr(target, name, BatchedLinear.from_linears(children))
        else:
            _stack_into(child, children)
    for name, param in list(target.named_parameters(recurse=False)):
        stacked = torch.stack([getattr(source, name).detach() for source in sources])
        setattr(target, name, nn.Parameter(_with_batch_axis(stacked, name), requires_grad=param.requires_grad))
    for name, buffer in list(target.named_buffers(recurse=False)):
        if buffer is None:
            continue
        stacked = torch.stack([getattr(source, name) for source in sources])
        target.register_buffer(name, _with_batch_axis(stacked, name))


def _with_batch_axis(stacked: torch.Tensor, name: str) -> torch.Tensor:
    if stacked.dim() != 2:
        raise UnsupportedLayerError(f"free tensor {name!r} must be 1-D to be batched over configurations, "
                                    f"got shape {tuple(stacked.shape[1:])}")
    return stacked.unsqueeze(1).clone()


def unstack_into(batched: nn.Module, modules: Sequence[nn.Module]) -> None:
    """Copy slice k of a network made by :func:`stack_modules` into ``modules[k]``."""
    for k, module in enumerate(modules):
        if hasattr(batched, "copy_slice_to"):  # BatchedLinear or a batched conv block
            batched.copy_slice_to(k, module)
        else:
            _copy_slice(batched, module, k)


def _copy_slice(batched: nn.Module, target: nn.Module, k: int) -> None:
    for name, child in batched.named_children():
        if hasattr(child, "copy_slice_to"):
            child.copy_slice_to(k, getattr(target, name))
        else:
            _copy_slice(child, getattr(target, name), k)
    with torch.no_grad():
        for name, param in batched.named_parameters(recurse=False):
            getattr(target, name).copy_(param[k, 0])
        for name, buffer in batched.named_buffers(recurse=False):
            if buffer is not None:
                getattr(target, name).copy_(buffer[k, 0])
