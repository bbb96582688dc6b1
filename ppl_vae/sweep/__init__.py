"""Hyper-parameter sweeps: many configurations of one model, trained as one.

- :func:`run_sweep` / :class:`SweepResult`: the entry point (``api``); :func:`plan_tasks`
  groups configurations and :func:`run_task` trains and diagnoses one group, for
  every kind of sweep.
- :mod:`~ppl_vae.sweep.backends`: where tasks run (``local``, ``ray``).
- :mod:`~ppl_vae.sweep.study`: sweeps on disk, run and resumed (:func:`run_study`), from
  :mod:`~ppl_vae.sweep.spec` (spec files, the grid, run names), :mod:`~ppl_vae.sweep.tasks`
  (what a worker runs) and :mod:`~ppl_vae.sweep.store` (run directories, failure records,
  the combined xarray object).
- :mod:`~ppl_vae.sweep.ray_backend`: :class:`RayBackend` (Ray imported lazily).

The training itself is :func:`ppl_vae.inference.fit`, which trains K >= 1
configurations as one run.
"""

from ppl_vae.sweep.api import (DIAGNOSTICS_DEFAULTS, SweepResult, expand_grid, held_out_rows, plan_tasks, run_sweep,
                               run_task, sweep_dataset)
from ppl_vae.sweep.backends import Backend, LocalBackend, SweepTask, TaskResult, get_backend
from ppl_vae.sweep.spec import SweepSpec, load_spec
from ppl_vae.sweep.store import rebuild_combined, run_status, write_combined
from ppl_vae.sweep.study import run_study

__all__ = [
    "Backend", "DIAGNOSTICS_DEFAULTS", "LocalBackend", "RayBackend", "SweepResult", "SweepSpec", "SweepTask",
    "TaskResult", "expand_grid", "get_backend", "held_out_rows", "load_spec", "plan_tasks", "rebuild_combined",
    "run_status", "run_study", "run_sweep", "run_task", "sweep_dataset", "write_combined",
]


def __getattr__(name: str):
    # RayBackend imports nothing of Ray until used, but keep the module itself lazy too.
    if name == "RayBackend":
        from ppl_vae.sweep.ray_backend import RayBackend

        return RayBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
