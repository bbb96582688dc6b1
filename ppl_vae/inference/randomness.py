"""Per-configuration randomness: each configuration's batches and noise come from its own seed.

A run of K configurations draws, for configuration k, its minibatch order and the
guide's reparameterisation noise from generators seeded by ``seeds[k]`` alone, so
configuration k of a K-run sees exactly the batches and noise of a separate run
with that seed: grouping configurations cannot change a number. (Initial weights
come from the seed too; the caller seeds ``torch`` before building each model.)

Two independent streams are derived from one seed with NumPy's ``SeedSequence``
(batch order and noise must not share a stream).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pyro.distributions import Independent, Normal
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

BATCH_STREAM, NOISE_STREAM = 0, 1


def stream_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one stream (``BATCH_STREAM``, ``NOISE_STREAM``) of ``seed``."""
    child = np.random.SeedSequence(int(seed)).spawn(stream + 1)[stream]
    return int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def make_generators(seeds: Sequence[int], stream: int, device: torch.device) -> list[torch.Generator]:
    """One generator per seed on ``device``, for the given stream."""
    generators = []
    for seed in seeds:
        generator = torch.Generator(device=device)
        generator.manual_seed(stream_seed(seed, stream))
        generators.append(generator)
    return generators


class ConfigBatches:
    """Minibatch row indices for K configurations, each from its own generator.

    One permutation per epoch and configuration; ``batch_size=None`` (or >= n)
    gives every row at every step (then the order is irrelevant and no index is
    drawn).

    Parameters
    ----------
    n
        Rows in the training data.
    batch_size
        Rows per step, or None for full batch.
    seeds
        K seeds (the batch stream of each is used).
    device
        Where the indices live (the data's device).
    """

    def __init__(self, n: int, batch_size: int | None, seeds: Sequence[int], device: torch.device):
        self.n = n
        self.batch_size = n if batch_size is None else min(batch_size, n)
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.device = device
        self.generators = make_generators(seeds, BATCH_STREAM, device)
        self.permutations: torch.Tensor | None = None

    @property
    def full_batch(self) -> bool:
        return self.batch_size == self.n

    def indices(self, step: int) -> torch.Tensor | None:
        """``(K, B)`` row indices for ``step`` (steps must come in order), or None for all rows."""
        if self.full_batch:
            return None
        position = step % self.steps_per_epoch
        if position == 0 or self.permutations is None:
            self.permutations = torch.stack([torch.randperm(self.n, generator=g, device=self.device)
                                             for g in self.generators])
        return self.permutations[:, position * self.batch_size:(position + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators],
                "permutations": None if self.permutations is None else self.permutations.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for generator, saved in zip(self.generators, state["generators"]):
            generator.set_state(saved.cpu())
        saved = state["permutations"]
        self.permutations = None if saved is None else saved.to(self.device)


class ConfigNoise(Messenger):
    """Draw every latent site's value as ``loc + scale * eps`` with eps from per-configuration generators.

    The draw is the usual reparameterised Normal sample (gradients flow to
    ``loc`` and ``scale``); only the source of ``eps`` changes: slice k of a
    ``(K, B, d)`` site uses generator k, and an unbatched ``(B, d)`` site
    (one ordinary model) uses generator 0.

    Parameters
    ----------
    generators
        K generators on the model's device (see :func:`make_generators`).
    """

    def __init__(self, generators: Sequence[torch.Generator]):
        super().__init__()
        self.generators = list(generators)

    def _pyro_sample(self, msg) -> None:
        base = _latent_normal(msg)
        if base is not None:
            msg["value"] = base.loc + base.scale * self.draw(msg["fn"].shape(), msg["name"], base.loc)

    def draw(self, shape: torch.Size, name: str, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of one site: ``(B, ...)`` from generator 0, or ``(K, B, ...)``, slice k from
        generator k.

        Parameters
        ----------
        shape
            The site's full shape (batch and event).
        name
            The site (for the error message).
        like
            A tensor of the device and dtype to draw in.
        """
        if len(self.generators) == 1 and (len(shape) < 3 or shape[0] != 1):
            return torch.randn(shape, generator=self.generators[0], device=like.device, dtype=like.dtype)
        if shape[0] != len(self.generators):
            raise ValueError(f"site {name!r} has {shape[0]} configurations, expected {len(self.generators)}")
        if like.device.type != "cpu":  # the in-place fill below is checked bit for bit on the CPU only
            return torch.stack([torch.randn(shape[1:], generator=g, device=like.device, dtype=like.dtype)
                                for g in self.generators])
        # Slice k is filled in place by generator k: the values torch.stack of K separate randn draws gives
        # (a slice of a contiguous (K, ...) tensor is contiguous, so normal_ takes the path a fresh tensor
        # takes), without the K draws' allocations and the stack's copy.
        noise = torch.empty(shape, device=like.device, dtype=like.dtype)
        for slice_, generator in zip(noise, self.generators):
            slice_.normal_(generator=generator)
        return noise

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for generator, saved in zip(self.generators, state["generators"]):
            generator.set_state(saved.cpu())


class GivenNoise(Messenger):
    """Draw every latent site's value as ``loc + scale * eps`` with ``eps`` given, by site name.

    The same draw as :class:`ConfigNoise` with the noise made outside the program
    (a traced loss takes it as an input; see :mod:`ppl_vae.inference.traced`).
    """

    def __init__(self, noise: dict[str, torch.Tensor]):
        super().__init__()
        self.noise = noise

    def _pyro_sample(self, msg) -> None:
        base = _latent_normal(msg)
        if base is not None:
            msg["value"] = base.loc + base.scale * self.noise[msg["name"]]


def _latent_normal(msg) -> Normal | None:
    """The Normal inside a latent site still to be drawn; None for observed, drawn or subsample sites."""
    if msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
        return None
    base = msg["fn"]
    while isinstance(base, Independent):
        base = base.base_dist
    if not isinstance(base, Normal):
        raise NotImplementedError(f"per-configuration noise needs a Normal latent; site {msg['name']!r} "
                                  f"is {type(base).__name__}")
    return base


class _NoiseShapes(Messenger):
    """Record each latent site's noise shape in program order, drawing nothing (the value is the mean)."""

    def __init__(self):
        super().__init__()
        self.shapes: dict[str, torch.Size] = {}

    def _pyro_sample(self, msg) -> None:
        base = _latent_normal(msg)
        if base is not None:
            self.shapes[msg["name"]] = msg["fn"].shape()
            msg["value"] = base.loc.expand(msg["fn"].shape())


def noise_shapes(guide, *args, **kwargs) -> dict[str, torch.Size]:
    """Latent site -> the shape of the noise :class:`ConfigNoise` draws for it, in the order it draws them.

    Runs ``guide`` once without gradients and without touching any generator.
    """
    with torch.no_grad(), _NoiseShapes() as probe:
        guide(*args, **kwargs)
    return probe.shapes
