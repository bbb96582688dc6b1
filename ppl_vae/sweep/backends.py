"""Where sweep tasks run.

A sweep is planned as a list of :class:`SweepTask` (one batched task holding
all configurations, or one task per configuration) and handed to a backend,
which maps :func:`ppl_vae.sweep.api.run_task` over them. Tasks and their
results are plain picklable data (configs, seeds, options, CPU state dicts),
so a backend may ship them to other processes or machines: a Ray backend only
has to implement :meth:`Backend.map` with ``ray.remote`` and ``ray.put`` for
the bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class SweepTask:
    """Configurations trained together (``vectorised``) or one alone.

    Attributes
    ----------
    configs
        Model configs (one, or several sharing an architecture).
    seeds
        One seed per configuration: its initial weights, minibatch order and
        Monte Carlo noise (so a task's grouping never changes a number).
    fit_options
        Keyword arguments of the training loop (steps, batch_size, lr, ...).
    vectorised
        Train the configurations as one batched model.
    index
        Positions of the configurations in the sweep.
    """

    configs: tuple[Any, ...]
    seeds: tuple[int, ...]
    fit_options: dict[str, Any]
    vectorised: bool
    index: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """Trained weights and loss curves of one task (CPU tensors and numpy only).

    Attributes
    ----------
    index
        Positions of the configurations in the sweep.
    state_dicts
        One ``state_dict`` per configuration, on the CPU.
    loss_history
        ``(len(index), steps)`` per-sample loss (nats), as ``fit`` records it
        (NaN after a configuration diverged).
    wall_time
        Seconds spent training.
    diverged
        Position in ``index`` -> first step with a non-finite loss.
    diagnostics
        One ``InferenceData`` per configuration (held-out rows; None where it
        diverged), or None when the task was run without diagnostics.
    provenance
        ``fit``'s training record (estimator, seeds, K, group, data split).
    convergence
        ``fit``'s convergence verdict per configuration (None: not judged, a diverged configuration).
    """

    index: tuple[int, ...]
    state_dicts: tuple[dict, ...]
    loss_history: np.ndarray
    wall_time: float
    diverged: dict[int, int] = dataclasses.field(default_factory=dict)
    diagnostics: tuple[Any, ...] | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    convergence: tuple[Any, ...] = ()


class Backend(Protocol):
    """Runs tasks; the results come back in task order."""

    name: str

    def map(self, fn: Callable[[SweepTask, Any], TaskResult], tasks: Sequence[SweepTask],
            bundle: Any) -> list[TaskResult]: ...


class LocalBackend:
    """Runs every task in this process, one after the other."""

    name = "local"

    def map(self, fn: Callable[[SweepTask, Any], TaskResult], tasks: Sequence[SweepTask],
            bundle: Any) -> list[TaskResult]:
        return [fn(task, bundle) for task in tasks]


def _ray_backend() -> Backend:
    # Imported on demand: Ray is an optional extra (pip install 'ppl-vae[ray]').
    from ppl_vae.sweep.ray_backend import RayBackend

    return RayBackend()


BACKENDS: dict[str, Callable[[], Backend]] = {"local": LocalBackend, "ray": _ray_backend}


def get_backend(backend: str | Backend) -> Backend:
    """A backend by name (``'local'`` or ``'ray'``), or ``backend`` itself if it already is one."""
    if not isinstance(backend, str):
        if not callable(getattr(backend, "map", None)):
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))} or have a map method, "
                             f"got {backend!r}")
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return BACKENDS[backend]()
