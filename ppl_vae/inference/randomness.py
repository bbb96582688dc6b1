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
        if msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        fn = msg["fn"]
        base = fn
        while isinstance(base, Independent):
            base = base.base_dist
        if not isinstance(base, Normal):
            raise NotImplementedError(f"per-configuration noise needs a Normal latent; site {msg['name']!r} "
                                      f"is {type(base).__name__}")
        shape = fn.shape()
        loc = base.loc
        if len(self.generators) == 1 and (len(shape) < 3 or shape[0] != 1):
            eps = torch.randn(shape, generator=self.generators[0], device=loc.device, dtype=loc.dtype)
        else:
            if shape[0] != len(self.generators):
                raise ValueError(f"site {msg['name']!r} has {shape[0]} configurations, "
                                 f"expected {len(self.generators)}")
            eps = torch.stack([torch.randn(shape[1:], generator=g, device=loc.device, dtype=loc.dtype)
                               for g in self.generators])
        msg["value"] = loc + base.scale * eps

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for generator, saved in zip(self.generators, state["generators"]):
            generator.set_state(saved.cpu())
