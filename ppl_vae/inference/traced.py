"""The engine's loss as a traced graph: Pyro's model and guide recorded once, replayed every step.

On a small model the Python around each tensor operation (Pyro's messengers and
plates, distribution objects, the site bookkeeping of :mod:`~ppl_vae.inference.elbo`)
costs more than the arithmetic. :class:`TracedLoss` records the tensor operations of one
evaluation of :func:`~ppl_vae.inference.elbo.per_config_loss` with ``torch.jit.trace``
(what Pyro's ``JitTrace_ELBO`` does) and runs that record afterwards. Everything that
changes between steps is an input of the record: the parameters, the batch, the guide's
noise and the KL-schedule weights. The noise is drawn outside, from the same
per-configuration generators and in the same order as
:class:`~ppl_vae.inference.randomness.ConfigNoise` draws it inside the program.

The record runs in TorchScript's plain interpreter (``torch.jit.optimized_execution(False)``):
the same kernels as eager code, differentiated by eager autograd, so the losses and
gradients equal those of ``per_config_loss`` bit for bit (a test), and a resumed run
repeats an uninterrupted one exactly. One record is kept per batch shape (an epoch's
last, shorter minibatch gets its own).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch

from ppl_vae.inference.elbo import per_config_loss
from ppl_vae.inference.randomness import ConfigNoise, GivenNoise, noise_shapes


@dataclasses.dataclass(frozen=True)
class _Record:
    """How the loss of one batch shape is computed: a function of the record's inputs.

    ``loss`` takes ``(*parameters, *batch, *noise, *kl_weights)``; ``noise_shapes`` is
    each latent site's noise shape in the guide's drawing order, ``sites`` the sites
    with a KL weight, and ``recorded`` tells a trace (or a trace adopted from another
    shape) from the eager function.
    """

    loss: Callable
    noise_shapes: dict[str, torch.Size]
    sites: tuple[str, ...]
    recorded: bool = False


class TracedLoss:
    """``per_config_loss(module.model, module.guide, *batch, ...) / B``, noise from ``noise``, traced per batch shape.

    Parameters
    ----------
    module
        The model being trained: ``model`` and ``guide`` methods, Normal latent sites.
    parameters
        Every tensor of ``module`` that training changes (the optimiser's parameters).
        Other tensors the program reads are recorded as constants.
    estimators, free_bits
        As :func:`~ppl_vae.inference.elbo.per_config_loss` (the floors are constants).
    noise
        The per-configuration generators the guide's noise comes from.

    Notes
    -----
    A program whose operations depend on the values of its tensors (not only on their
    shapes) cannot be recorded faithfully; the suite's models do not.
    """

    def __init__(self, module, parameters: Sequence[torch.Tensor], *, estimators: Mapping[str, str],
                 free_bits: Mapping[str, torch.Tensor] | None, noise: ConfigNoise):
        self.module = module
        self.parameters = list(parameters)
        self.estimators = dict(estimators)
        self.free_bits = free_bits
        self.noise = noise
        #: False once a batch shape could not be traced and its loss runs eagerly.
        self.traced = True
        self._records: dict[tuple, _Record] = {}  # (batch shapes, weighted sites) -> record

    @property
    def recorded_shapes(self) -> list[tuple[torch.Size, ...]]:
        """The batch shapes whose loss runs from a record (traced, or adopted from another shape)."""
        return [shapes for (shapes, _), record in self._records.items() if record.recorded]

    def __call__(self, batch: Sequence[torch.Tensor], kl_multipliers: Mapping[str, torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """The ``(K,)`` losses of this step per batch row (nats per sample); draws this step's noise.

        Parameters
        ----------
        batch
            The model's arguments, tensors.
        kl_multipliers
            Latent site -> this step's KL weight (a tensor); the same sites at every step.
        """
        batch = tuple(batch)
        multipliers = dict(kl_multipliers or {})
        key = (tuple(t.shape for t in batch), tuple(sorted(multipliers)))
        record = self._records.get(key)
        if record is None:
            # Seen once, a shape runs eagerly: a record costs several steps' time, which a shape that
            # never comes back (a short run's ragged last batch) would not repay.
            record = self._records[key] = self._eager(batch, key[1])
            inputs = self._inputs(record, batch, multipliers)
            losses = record.loss(*inputs)
            self._adopt(key, inputs, losses)
            return losses
        if not record.recorded:
            record = self._records[key] = self._trace(record, batch, multipliers)
        with torch.jit.optimized_execution(False):
            return record.loss(*self._inputs(record, batch, multipliers))

    def _inputs(self, record: _Record, batch: tuple[torch.Tensor, ...], multipliers: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, ...]:
        """A record's inputs for this step: parameters, batch, fresh noise, KL weights."""
        eps = [self.noise.draw(shape, name, batch[0]) for name, shape in record.noise_shapes.items()]
        return (*self.parameters, *batch, *eps, *(multipliers[site] for site in record.sites))

    def _adopt(self, key: tuple, inputs: tuple[torch.Tensor, ...], losses: torch.Tensor) -> None:
        """Serve ``key`` with another shape's record if it gives this step's ``losses`` bit for bit.

        The suite's programs read batch sizes off their tensors, so one record usually serves
        every batch shape (an epoch's ragged last batch needs no trace of its own).
        """
        for (shapes, sites), other in self._records.items():
            if other.recorded and sites == key[1] and len(shapes) == len(key[0]):
                with torch.no_grad(), torch.jit.optimized_execution(False):
                    if torch.equal(other.loss(*inputs), losses):
                        self._records[key] = dataclasses.replace(other, noise_shapes=self._records[key].noise_shapes)
                return

    def _eager(self, batch: tuple[torch.Tensor, ...], sites: tuple[str, ...]) -> _Record:
        """The loss of ``batch``'s shape as a plain function of the record's inputs."""
        shapes = noise_shapes(self.module.guide, *batch)
        n_params, n_batch, n_noise = len(self.parameters), len(batch), len(shapes)

        def loss(*inputs: torch.Tensor) -> torch.Tensor:
            # The parameters arrive as inputs but the program reads them from the module:
            # the tracer knows them by identity, which makes them inputs of the record.
            args = inputs[n_params:n_params + n_batch]
            eps = inputs[n_params + n_batch:n_params + n_batch + n_noise]
            weights = inputs[n_params + n_batch + n_noise:]
            with GivenNoise(dict(zip(shapes, eps))):
                total = per_config_loss(self.module.model, self.module.guide, *args, estimators=self.estimators,
                                        kl_multipliers=dict(zip(sites, weights)) or None,
                                        free_bits=self.free_bits or None)
            return total / args[0].shape[-2]

        return _Record(loss, shapes, sites)

    def _trace(self, record: _Record, batch: tuple[torch.Tensor, ...], multipliers: dict[str, torch.Tensor]
               ) -> _Record:
        """``record``'s loss traced on this step's inputs (zero noise); itself, eagerly, where tracing fails."""
        examples = (*self.parameters, *batch, *(torch.zeros(shape, dtype=batch[0].dtype, device=batch[0].device)
                                                 for shape in record.noise_shapes.values()),
                    *(multipliers[site] for site in record.sites))
        try:
            with warnings.catch_warnings():
                # Python numbers in the program (a beta, a plate size) become constants of the record,
                # which is what a fixed configuration and batch shape mean.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # torch 2.x marks torch.jit as deprecated in favour of torch.compile, whose compile time
                # (seconds per graph) would cost more than a short run takes; should tracing go away or
                # fail, the loss runs eagerly below, with the same numbers.
                warnings.simplefilter("ignore", DeprecationWarning)
                graph = torch.jit.trace(record.loss, examples, check_trace=False)
        except (AttributeError, RuntimeError) as err:
            warnings.warn(f"the loss could not be traced ({type(err).__name__}: {err}); it runs eagerly, "
                          "with the same numbers, more slowly", RuntimeWarning, stacklevel=3)
            self.traced = False
            graph = record.loss
        return dataclasses.replace(record, loss=graph, recorded=True)
