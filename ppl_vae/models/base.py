"""The interface every model family implements."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import pyro
import torch
import xarray as xr
from torch import nn

from ppl_vae.models.config import check_data

if TYPE_CHECKING:
    from ppl_vae.data.bundle import DataBundle
    from ppl_vae.models.config import ModelConfig

_instance_ids = itertools.count()


class LatentVariableModel(nn.Module):
    """A Pyro ``model`` / ``guide`` pair whose networks are ordinary torch modules.

    The parameters live on the module (``.parameters()``, ``.state_dict()``,
    ``.to(device)``); ``model`` and ``guide`` also register them with Pyro's
    parameter store under a name unique to this instance (``pyro_name``), so that
    ``pyro.infer.SVI`` works too and several models can live in one process.

    Both ``model(*batch)`` and ``guide(*batch)`` take ``bundle.tensors()``:
    ``(x,)`` or ``(x, y)``, float32 ``(n, d)``. They use one ``pyro.plate("data",
    n, dim=-1)``, so callers may wrap them in outer plates at ``dim=-2`` and
    beyond (the networks act on the last dimension).

    Attributes
    ----------
    config
        The frozen hyper-parameters the model was built from.
    family
        ``'vae'``, ``'cvae'`` or ``'mhvae'``.
    observed_site
        Name of the observed sample site (``'x'`` or ``'y'``).
    latent_sites
        Names of the latent sample sites, top-down order of the guide.
    latent_dims
        Site name -> latent dimension.
    analytic_kl_sites
        Latent sites whose KL may be taken in closed form: their model factor has no
        parent that the guide draws later (``ppl_vae.inference.elbo`` reads it).
    """

    family: ClassVar[str]
    observed_site: ClassVar[str]
    latent_sites: ClassVar[tuple[str, ...]]
    #: Sites with a closed-form KL (see ``ppl_vae.inference.elbo.site_estimators``); a new variant
    #: declares its own, and the trainer never needs editing.
    analytic_kl_sites: ClassVar[tuple[str, ...]] = ()
    #: Latent site -> suffix of the config fields that control its KL term (``beta{s}``,
    #: ``kl_warmup{s}``, ``free_bits{s}``, ...): ``{"z": ""}``, or ``{"z1": "1", "z2": "2"}``.
    kl_levels: ClassVar[dict[str, str]] = {}

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.family != self.family:
            raise ValueError(f"config must be a {self.family!r} config, got family {config.family!r}")
        self.config = config
        self.pyro_name = f"{self.family}_{next(_instance_ids)}"
        self._register_with_pyro = True

    @property
    def latent_dims(self) -> dict[str, int]:
        raise NotImplementedError

    def check_data(self, bundle: DataBundle) -> None:
        """Raise ``ValueError`` unless ``bundle`` fits this model (see :func:`ppl_vae.models.config.check_data`)."""
        check_data(self.config, bundle)

    @property
    def device(self) -> torch.device:
        """Device of the parameters (and buffers)."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def _register(self) -> None:
        if self._register_with_pyro:
            pyro.module(self.pyro_name, self)

    @contextlib.contextmanager
    def unregistered(self) -> Iterator[LatentVariableModel]:
        """Skip the Pyro parameter-store registration inside the block.

        A caller that optimises ``self.parameters()`` with a plain torch optimiser
        (as :func:`ppl_vae.inference.fit` does) has no use for the param store, and
        ``pyro.module`` walks every parameter on each model and guide call.
        """
        previous, self._register_with_pyro = self._register_with_pyro, False
        try:
            yield self
        finally:
            self._register_with_pyro = previous

    def model(self, *batch: torch.Tensor) -> None:
        """The generative model p(observed, latents); see the family's docstring."""
        raise NotImplementedError

    def guide(self, *batch: torch.Tensor) -> None:
        """The variational posterior q(latents | data); see the family's docstring."""
        raise NotImplementedError

    def linear_readout(self, bundle: DataBundle) -> xr.Dataset:
        """Learned maps in the coordinates of :mod:`ppl_vae.theory` (``arch='linear'`` only)."""
        raise NotImplementedError

    def _require_linear(self) -> None:
        if self.config.arch != "linear":
            raise ValueError(f"linear_readout needs arch='linear', this model has arch={self.config.arch!r}")

    def extra_repr(self) -> str:
        return f"pyro_name={self.pyro_name!r}"
