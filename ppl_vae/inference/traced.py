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

A record cannot follow a program whose operations depend on the values of its tensors
(a Python branch on the batch or on a latent draw, a ``numpy.random`` draw, a latent
width read off the data): it keeps what happened when it was recorded. So a record is
trusted only after two checks, and otherwise the loss runs eagerly (with one warning
naming the reason):

1. the tracer's own warnings: a tensor converted to a Python value (``bool``, ``int``,
   ``float``) outside torch, Pyro and this package (so in the user's program) means the
   record baked in one batch's branch or size;
2. on a second, fresh batch with fresh noise (the record is made from the first batch
   a shape was seen with and its noise), the record must reproduce the eager loss and
   the gradient of every parameter exactly, from the same random state.

The record runs in TorchScript's plain interpreter (``torch.jit.optimized_execution(False)``):
the same kernels as eager code, differentiated by eager autograd, so the losses and
gradients equal those of ``per_config_loss`` bit for bit, and a resumed run repeats an
uninterrupted one exactly. One record is kept per batch shape (an epoch's last, shorter
minibatch gets its own unless another shape's record reproduces it). ``jit=False``
runs every step eagerly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pyro
import torch

import ppl_vae
from ppl_vae.inference.elbo import per_config_loss
from ppl_vae.inference.randomness import ConfigNoise, GivenNoise, noise_shapes

#: Code whose tensor-to-Python conversions are about shapes only (a record is kept per batch shape).
_LIBRARY_DIRS = tuple(os.path.dirname(module.__file__) + os.sep for module in (torch, pyro, ppl_vae))


_TRACE_SEED = 20_240_519


@dataclasses.dataclass(frozen=True)
class _Record:
    """How the loss of one batch shape is computed: a function of the record's inputs.

    ``loss`` takes ``(*parameters, *batch, *noise, *kl_weights)`` and returns
    ``(losses, *per-dimension KL of each site in noise_shapes order)`` (the KL only
    when ``with_kl``); ``noise_shapes`` is each latent site's noise shape in the
    guide's drawing order, ``sites`` the sites with a KL weight, ``recorded`` tells a
    checked trace (or one adopted from another shape) from the eager function, and
    ``example`` holds the first batch's non-parameter inputs, to record from.
    """

    loss: Callable
    noise_shapes: dict[str, torch.Size]
    sites: tuple[str, ...]
    with_kl: bool = False
    recorded: bool = False
    example: tuple[torch.Tensor, ...] | None = None


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
    jit
        False: never record; every step runs the program eagerly.
    row_dim
        The dimension of the batch tensors that holds the rows (B divides the loss):
        -2 for the suite's ``(B, d)`` / ``(K, B, d)`` batches, 0 for a user's program.
    """

    def __init__(self, module, parameters: Sequence[torch.Tensor], *, estimators: Mapping[str, str],
                 free_bits: Mapping[str, torch.Tensor] | None, noise: ConfigNoise, jit: bool = True,
                 row_dim: int = -2):
        self.module = module
        self.parameters = list(parameters)
        self.estimators = dict(estimators)
        self.free_bits = free_bits
        self.noise = noise
        self.row_dim = row_dim
        #: False when the loss runs eagerly: ``jit=False``, or a record failed a check (``fallback_reason``).
        self.traced = bool(jit)
        self.fallback_reason: str | None = None
        self._records: dict[tuple, _Record] = {}  # (batch shapes, weighted sites, with KL) -> record

    @property
    def recorded_shapes(self) -> list[tuple[torch.Size, ...]]:
        """The batch shapes whose loss runs from a checked record (traced, or adopted from another shape)."""
        if not self.traced:
            return []
        return sorted({shapes for (shapes, _, _), record in self._records.items() if record.recorded})

    def __call__(self, batch: Sequence[torch.Tensor], kl_multipliers: Mapping[str, torch.Tensor] | None = None,
                 kl_out: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The ``(K,)`` losses of this step per batch row (nats per sample); draws this step's noise.

        Parameters
        ----------
        batch
            The model's arguments, tensors.
        kl_multipliers
            Latent site -> this step's KL weight (a tensor); the same sites at every step.
        kl_out
            If given, filled with latent site -> per-dimension KL averaged over the rows,
            ``(d,)`` or ``(K, d)``, detached (see :func:`~ppl_vae.inference.elbo.elbo_terms`).
        """
        batch = tuple(batch)
        multipliers = dict(kl_multipliers or {})
        if not self.traced:
            return self._eager_step(batch, multipliers, kl_out)
        key = (tuple(t.shape for t in batch), tuple(sorted(multipliers)), kl_out is not None)
        record = self._records.get(key)
        if record is None:
            # Seen once, a shape runs eagerly: a record costs several steps' time, which a shape that
            # never comes back (a short run's ragged last batch) would not repay.
            with _same_random_state():
                shapes = noise_shapes(self.module.guide, *batch)
            record = self._eager(shapes, key[1], key[2])
            inputs = self._inputs(record, batch, multipliers)
            outputs = record.loss(*inputs)
            self._records[key] = dataclasses.replace(record, example=tuple(t.detach() for t in
                                                                           inputs[len(self.parameters):]))
            self._adopt(key, inputs, outputs)
            return self._unpack(self._records[key], outputs, kl_out)
        if not record.recorded:
            return self._record_and_check(key, record, batch, multipliers, kl_out)
        with torch.jit.optimized_execution(False):
            return self._unpack(record, record.loss(*self._inputs(record, batch, multipliers)), kl_out)

    def _eager_step(self, batch: tuple[torch.Tensor, ...], multipliers: dict[str, torch.Tensor],
                    kl_out: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """One step of the program run eagerly, its noise drawn at each site (any shape)."""
        with self.noise:
            total = per_config_loss(self.module.model, self.module.guide, *batch, estimators=self.estimators,
                                    kl_multipliers=multipliers or None, free_bits=self.free_bits or None,
                                    kl_out=kl_out)
        return total / batch[0].shape[self.row_dim]

    def _inputs(self, record: _Record, batch: tuple[torch.Tensor, ...], multipliers: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, ...]:
        """A record's inputs for this step: parameters, batch, fresh noise, KL weights."""
        like = next((t for t in batch if t.is_floating_point()), batch[0])
        eps = [self.noise.draw(shape, name, like) for name, shape in record.noise_shapes.items()]
        return (*self.parameters, *batch, *eps, *(multipliers[site] for site in record.sites))

    @staticmethod
    def _unpack(record: _Record, outputs: tuple[torch.Tensor, ...], kl_out: dict | None) -> torch.Tensor:
        if kl_out is not None:
            kl_out.update(zip(record.noise_shapes, outputs[1:]))
        return outputs[0]

    def _eager(self, shapes: dict[str, torch.Size], sites: tuple[str, ...], with_kl: bool) -> _Record:
        """The loss of one batch shape as a plain function of the record's inputs."""
        n_params, n_noise = len(self.parameters), len(shapes)

        def loss(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            # The parameters arrive as inputs but the program reads them from the module:
            # the tracer knows them by identity, which makes them inputs of the record.
            n_batch = len(inputs) - n_params - n_noise - len(sites)
            args = inputs[n_params:n_params + n_batch]
            eps = inputs[n_params + n_batch:n_params + n_batch + n_noise]
            weights = inputs[n_params + n_batch + n_noise:]
            kl: dict[str, torch.Tensor] | None = {} if with_kl else None
            with GivenNoise(dict(zip(shapes, eps))):
                total = per_config_loss(self.module.model, self.module.guide, *args, estimators=self.estimators,
                                        kl_multipliers=dict(zip(sites, weights)) or None,
                                        free_bits=self.free_bits or None, kl_out=kl)
            return (total / args[0].shape[self.row_dim], *((kl[site] for site in shapes) if with_kl else ()))

        return _Record(loss, shapes, sites, with_kl)

    def _grads(self, losses: torch.Tensor, *, retain_graph: bool) -> list[torch.Tensor | None]:
        """Gradients of ``losses.sum()`` for a check: the parameters' own hooks (the user's) do not see them."""
        hooks = [(p._backward_hooks, dict(p._backward_hooks)) for p in self.parameters if p._backward_hooks]
        for live, _ in hooks:
            live.clear()
        try:
            return list(torch.autograd.grad(losses.sum(), self.parameters, retain_graph=retain_graph,
                                            allow_unused=True))
        finally:
            for live, saved in hooks:
                live.update(saved)

    def _adopt(self, key: tuple, inputs: tuple[torch.Tensor, ...], outputs: tuple[torch.Tensor, ...]) -> None:
        """Serve ``key`` with another shape's checked record if it gives this step's losses and gradients exactly.

        The suite's programs read batch sizes off their tensors, so one record usually serves
        every batch shape (an epoch's ragged last batch needs no trace of its own).
        """
        for (shapes, sites, with_kl), other in self._records.items():
            if other.recorded and (sites, with_kl) == key[1:] and len(shapes) == len(key[0]):
                expected = self._grads(outputs[0], retain_graph=True)
                try:
                    with _same_random_state(), torch.jit.optimized_execution(False):
                        theirs = other.loss(*inputs)
                        same = _mismatch(theirs, self._grads(theirs[0], retain_graph=False),
                                         outputs, expected) is None
                except RuntimeError:
                    same = False
                if same:
                    mine = self._records[key]
                    self._records[key] = dataclasses.replace(other, noise_shapes=mine.noise_shapes, example=None)
                return

    def _record_and_check(self, key: tuple, record: _Record, batch: tuple[torch.Tensor, ...],
                          multipliers: dict[str, torch.Tensor], kl_out: dict | None) -> torch.Tensor:
        """Record ``key``'s loss from its first batch, check it on this one; this step's losses (eager's)."""
        with _same_random_state():
            shapes = noise_shapes(self.module.guide, *batch)
        if shapes != record.noise_shapes:
            return self._fall_back(f"the latent sites' shapes differ between two batches of one shape "
                                   f"({dict(record.noise_shapes)} then {dict(shapes)})", batch, multipliers, kl_out)
        graph, reason = _trace(record.loss, (*self.parameters, *record.example))
        if reason is not None:
            return self._fall_back(reason, batch, multipliers, kl_out)
        inputs = self._inputs(record, batch, multipliers)
        try:
            with _same_random_state(), torch.jit.optimized_execution(False):
                recorded = graph(*inputs)
                recorded_grads = self._grads(recorded[0], retain_graph=False)
        except RuntimeError as err:
            recorded, recorded_grads, reason = None, None, f"the record failed on a second batch ({err})"
        outputs = record.loss(*inputs)
        if reason is None:
            reason = _mismatch(recorded, recorded_grads, outputs, self._grads(outputs[0], retain_graph=True))
        if reason is not None:
            self._warn(reason)
            return self._unpack(record, outputs, kl_out)
        self._records[key] = dataclasses.replace(record, loss=graph, recorded=True, example=None)
        return self._unpack(record, outputs, kl_out)

    def _warn(self, reason: str) -> None:
        """Give up tracing for this run, with one warning naming ``reason``."""
        self.traced, self.fallback_reason = False, reason
        self._records.clear()
        warnings.warn(f"the loss is not traced: {reason}; it runs eagerly (correct, more slowly). "
                      "fit(..., jit=False) skips the attempt", RuntimeWarning, stacklevel=4)

    def _fall_back(self, reason: str, batch: tuple[torch.Tensor, ...], multipliers: dict[str, torch.Tensor],
                   kl_out: dict | None) -> torch.Tensor:
        self._warn(reason)
        return self._eager_step(batch, multipliers, kl_out)


def _mismatch(recorded: tuple[torch.Tensor, ...], recorded_grads: list, eager: tuple[torch.Tensor, ...],
              eager_grads: list) -> str | None:
    """Why a record's outputs and gradients differ from the eager ones on the same inputs; None if identical."""
    if not _identical(recorded[0], eager[0]):
        gap = (recorded[0].detach() - eager[0].detach()).abs().max().item()
        return f"on a second batch with fresh noise the record's loss differs from the eager loss (by {gap:.3g})"
    for index, (ours, theirs) in enumerate(zip(recorded_grads, eager_grads)):
        if (ours is None) != (theirs is None) or (ours is not None and not _identical(ours, theirs)):
            return (f"on a second batch with fresh noise the record's gradient of parameter {index} differs "
                    "from the eager gradient")
    return None


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal values, NaN equal to NaN (a diverging step is reproduced too)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _trace(function: Callable, examples: tuple[torch.Tensor, ...]) -> tuple[Callable | None, str | None]:
    """``torch.jit.trace(function, examples)`` and None, or None and why the record cannot be trusted."""
    try:
        with warnings.catch_warnings(record=True) as caught, _same_random_state():
            warnings.simplefilter("always", torch.jit.TracerWarning)
            # torch 2.x marks torch.jit as deprecated in favour of torch.compile, whose compile time
            # (seconds per graph) would cost more than a short run takes.
            warnings.simplefilter("ignore", DeprecationWarning)
            # Other random states than the check's: a NumPy or Python draw the record keeps as a
            # constant then differs from the one the eager loss makes when the record is checked.
            np.random.seed(_TRACE_SEED)
            random.seed(_TRACE_SEED)
            graph = torch.jit.trace(function, examples, check_trace=False)
    except (AttributeError, RuntimeError, TypeError, ValueError) as err:
        return None, f"the loss could not be traced ({type(err).__name__}: {err})"
    for warning in caught:
        if not issubclass(warning.category, torch.jit.TracerWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif (str(warning.message).startswith("Converting a tensor to a Python")
              and not os.path.abspath(warning.filename).startswith(_LIBRARY_DIRS)):
            # Python numbers in torch, Pyro and this package are sizes (a record is kept per shape);
            # in the user's program they may be a branch on values or a size read off the data.
            what = str(warning.message).split(" might")[0]
            return None, (f"{what} at {warning.filename}:{warning.lineno}, so a record would keep the value "
                          "of the batch it was made from")
    return graph, None


@contextlib.contextmanager
def _same_random_state() -> Iterator[None]:
    """Run a block without moving the global random states (torch, CUDA, NumPy, Python) the program may draw from."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
