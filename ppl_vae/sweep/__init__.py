"""Hyper-parameter sweeps: many configurations of one model, trained as one.

- :func:`run_sweep` / :class:`SweepResult`: the entry point (``api``).
- :mod:`~ppl_vae.sweep.vectorised`: K configurations in one SVI run, via a
  plate over configurations and batched weights.
- :mod:`~ppl_vae.sweep.layers`: :class:`BatchedLinear`, stacking K networks.
- :mod:`~ppl_vae.sweep.elbo`: the ELBO of each configuration from Pyro traces.
- :mod:`~ppl_vae.sweep.backends`: where tasks run (``local``, ``ray``).
- :mod:`~ppl_vae.sweep.study`: sweeps on disk (spec files, one run directory per
  configuration, resume, failure records, the combined xarray object).
- :mod:`~ppl_vae.sweep.ray_backend`: :class:`RayBackend` (Ray imported lazily).
"""

from ppl_vae.sweep.api import SweepResult, expand_grid, plan_tasks, run_sweep, run_task, sweep_dataset
from ppl_vae.sweep.backends import Backend, LocalBackend, SweepTask, TaskResult, get_backend
from ppl_vae.sweep.elbo import elbo_loss, elbo_terms, per_config_loss
from ppl_vae.sweep.study import SweepSpec, load_spec, rebuild_combined, run_study
from ppl_vae.sweep.layers import BatchedLinear, UnsupportedLayerError, is_stackable, stack_modules, unstack_into
from ppl_vae.sweep.vectorised import BatchedConfig, BatchedModel, can_vectorise, clip_per_config_, train_batched

__all__ = [
    "Backend", "BatchedConfig", "BatchedLinear", "BatchedModel", "LocalBackend", "RayBackend", "SweepResult",
    "SweepSpec", "SweepTask", "load_spec", "rebuild_combined", "run_study",
    "TaskResult", "UnsupportedLayerError", "can_vectorise", "clip_per_config_", "elbo_loss", "elbo_terms",
    "expand_grid", "get_backend",
    "is_stackable", "per_config_loss", "plan_tasks", "run_sweep", "run_task", "stack_modules", "sweep_dataset",
    "train_batched", "unstack_into",
]


def __getattr__(name: str):
    # RayBackend imports nothing of Ray until used, but keep the module itself lazy too.
    if name == "RayBackend":
        from ppl_vae.sweep.ray_backend import RayBackend

        return RayBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
