"""What the benchmark measures: data sets, models, and one training step per variant.

A *case* is a data set, a model (family, architecture) and a batch size. For
each case the same freshly seeded model is stepped by several *variants*:

``plain``
    The loss of :mod:`ppl_vae.bench.reference` (no Pyro) and ``torch.optim.Adam``.
``pyro``
    Pyro's ELBO as a differentiable loss (``TraceMeanField_ELBO`` for the
    VAE/CVAE, ``Trace_ELBO`` for the MHVAE) and ``torch.optim.Adam``: the
    lean pattern of SPEC 7.
``pyro_svi``
    The classic pattern: ``pyro.infer.SVI`` with ``pyro.optim.Adam`` (one
    optimiser per parameter tensor, a ``.item()`` per step).
``fit``
    :func:`ppl_vae.inference.fit` end to end (its set-up included).

All variants draw device-resident minibatches the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.bench.reference import plain_loss
from ppl_vae.data import DataBundle, load, synthetic_pairs

VARIANTS = ("plain", "pyro", "pyro_svi", "fit")

#: The MNIST quadrant split's shape: x = one 14x14 quadrant, y = the other three.
MNIST_SHAPE = {"x_dim": 196, "y_dim": 588}


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case.

    Attributes
    ----------
    data
        ``'digits'`` (bundled 8x8 digits, quadrant split 16 -> 48) or
        ``'mnist_shaped'`` (synthetic pairs, 196 -> 588).
    family, arch
        ``'cvae'`` / ``'mhvae'`` and ``'linear'`` / ``'mlp'``.
    batch_size
        Minibatch size, or None for full batch.
    """

    data: str
    family: str
    arch: str
    batch_size: int | None

    @property
    def label(self) -> str:
        batch = "full" if self.batch_size is None else str(self.batch_size)
        return f"{self.data}/{self.family}-{self.arch}/b{batch}"


def bench_data(name: str, *, n_synthetic: int = 60000, seed: int = 0) -> DataBundle:
    """The paired data set ``name``: ``'digits'`` or ``'mnist_shaped'`` (``n_synthetic`` pairs)."""
    if name == "digits":
        return load("digits", paired=True)
    if name == "mnist_shaped":
        return synthetic_pairs(n_synthetic, MNIST_SHAPE["x_dim"], y_dim=MNIST_SHAPE["y_dim"], seed=seed)
    raise ValueError(f"data must be 'digits' or 'mnist_shaped', got {name!r}")


def family_bundle(bundle: DataBundle, family: str) -> DataBundle:
    """The bundle a family trains on: CVAE pairs as is; for the (M)HVAE the whole image ``[x, y]``."""
    if family == "cvae":
        return bundle
    return DataBundle(bundle.name, torch.cat([bundle.x, bundle.y], dim=-1), labels=bundle.labels,
                      attrs=dict(bundle.attrs))


def bench_config(case: Case, bundle: DataBundle):
    """The model config of ``case``: latent 8 (digits) or 16 (MNIST-shaped), one hidden layer."""
    from ppl_vae.models import CVAEConfig, MHVAEConfig

    small = case.data == "digits"
    latent, hidden = (8, (64,)) if small else (16, (256,))
    if case.family == "cvae":
        return CVAEConfig(x_dim=bundle.x.shape[1], y_dim=bundle.y.shape[1], latent_dim=latent, arch=case.arch,
                          hidden_dims=hidden)
    if case.family == "mhvae":
        return MHVAEConfig(input_dim=bundle.x.shape[1], latent_dims=(latent, latent // 2), arch=case.arch,
                           hidden_dims=hidden)
    raise ValueError(f"family must be 'cvae' or 'mhvae', got {case.family!r}")


def seeded_model(config, device: torch.device, seed: int = 0):
    """``build_model(config)`` with weights drawn from ``seed``, on ``device``."""
    from ppl_vae.models import build_model

    torch.manual_seed(seed)
    return build_model(config).to(device)


class DeviceBatches:
    """Minibatches drawn on the data's device: a fresh permutation per epoch, no host round trip.

    Parameters
    ----------
    tensors
        ``bundle.tensors()`` already on the device.
    batch_size
        Rows per batch; None or >= n: every call returns the whole data.
    seed
        Seeds the permutation generator.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int | None, seed: int = 0):
        self.tensors = tensors
        self.n = tensors[0].shape[0]
        self.full = batch_size is None or batch_size >= self.n
        self.batch_size = self.n if self.full else batch_size
        self.generator = torch.Generator(device=tensors[0].device).manual_seed(seed)
        self._order: torch.Tensor | None = None
        self._position = 0

    def __call__(self) -> tuple[torch.Tensor, ...]:
        if self.full:
            return self.tensors
        if self._order is None or self._position + self.batch_size > self.n:
            # Drop the ragged tail: fixed shapes, and every batch the same size.
            self._order = torch.randperm(self.n, device=self.tensors[0].device, generator=self.generator)
            self._position = 0
        index = self._order[self._position:self._position + self.batch_size]
        self._position += self.batch_size
        return tuple(t.index_select(0, index) for t in self.tensors)


def _elbo(family: str):
    return TraceMeanField_ELBO() if family in ("vae", "cvae") else Trace_ELBO()


def make_step(variant: str, model, batches: DeviceBatches, *, lr: float = 1e-3) -> Callable[[], object]:
    """One optimisation step of ``model`` in the given variant (``'plain'``, ``'pyro'``, ``'pyro_svi'``)."""
    n = batches.n
    if variant == "plain":
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            plain_loss(model, *batches(), data_size=n).backward()
            optimiser.step()

        return step
    if variant == "pyro":
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = _elbo(model.family).differentiable_loss

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            batch = batches()
            with pyro.poutine.scale(scale=n / batch[0].shape[0]):
                loss = loss_fn(model.model, model.guide, *batch)
            loss.backward()
            optimiser.step()

        return step
    if variant == "pyro_svi":
        pyro.clear_param_store()
        svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": lr}), loss=_elbo(model.family))

        def step() -> None:
            batch = batches()
            with pyro.poutine.scale(scale=n / batch[0].shape[0]):
                svi.step(*batch)

        return step
    raise ValueError(f"variant must be one of 'plain', 'pyro', 'pyro_svi', got {variant!r}")
