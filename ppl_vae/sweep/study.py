"""Sweeps as studies on disk: a spec, one run directory per configuration, resumable.

>>> spec = load_spec("sweep.yaml")                   # or SweepSpec.from_dict({...})
>>> summary = run_study(spec, "sweeps/beta_eta")     # backend="ray", address="auto" for a cluster
>>> summary.counts                                   # {'finished': 30, 'failed': 2, 'skipped': 0}
>>> combined = rebuild_combined("sweeps/beta_eta")   # InferenceData, dimension ``run``

A spec (YAML or TOML) names a model family and architecture, the data set, the
model options held fixed, a grid of values (Cartesian product; ``seed`` varies
the seed) and the training / diagnostics options::

    model: cvae
    arch: mlp
    data: {name: digits, split: quadrant}
    model_options: {latent_dim: 8, hidden_dims: [64]}
    grid: {beta: [0.1, 0.5, 1, 2], eta_dec: "0.5,1", seed: "0-3"}
    train: {epochs: 5, batch_size: 128, lr: 0.001}
    diagnostics: {iw_samples: 100}
    execution: {group_size: 8, num_cpus: 1, num_gpus: 0}

Layout of a sweep directory::

    spec.json                  the validated spec; a rerun with another spec is refused
    runs/<name>/               one run directory per configuration, as ppl_vae.inference
                               writes them (config.json, checkpoint.pt, metrics.json) plus
                               diagnostics.nc, a view of the task's store; or error.json if
                               it failed
    store/<task>.nc            a task's diagnostics and losses along ``run``, written once
                               (:mod:`ppl_vae.sweep.store`); a run's training loss is read
                               from here (the report does), not from a file of its own
    combined.nc                every finished run's diagnostics stacked along ``run``
    summary.json               counts and failures of the last invocation

A configuration is finished when its ``metrics.json`` exists: it is written
last, atomically, after everything else of that run. Rerunning skips finished
configurations and redoes the rest.

Configurations that share an architecture are trained together, as one run of
:func:`ppl_vae.inference.fit` over a ``configs`` plate, in tasks of at most
``group_size`` configurations (the unit a backend schedules); the tasks are planned
and run by the same :func:`ppl_vae.sweep.api.plan_tasks` / :func:`~ppl_vae.sweep.api.run_task`
as :func:`~ppl_vae.sweep.api.run_sweep`. Each configuration draws its weights,
minibatches and noise from its own seed, so grouping never changes a number and a
rerun that trains only the missing configurations reproduces them. ``train.test_fraction``
(default 0.1) of the rows is held out before training; diagnostics and metrics are
computed on (at most ``diagnostics.max_points`` of) those rows. With the local
backend a task checkpoints into ``groups/<id>/`` and an interrupted task resumes there.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ppl_vae._io import atomic_write_json, check_path
from ppl_vae._lock import claim_output
from ppl_vae._provenance import check_run_names
from ppl_vae.sweep.api import plan_tasks
from ppl_vae.sweep.backends import Backend, LocalBackend, SweepTask
# The spec, the task runner and the store, re-exported: ``ppl_vae.sweep.study`` stays the one import.
from ppl_vae.sweep.spec import (BACKENDS, DERIVED_FIELDS, EXECUTION_DEFAULTS, FAMILIES, MAX_CONFIGS,  # noqa: F401
                                SPEC_SECTIONS, TRAIN_DEFAULTS, GridTooLargeError, SpecMismatchError, SweepSpec,
                                _check_names, load_spec, parse_values, run_name)
from ppl_vae.sweep.store import (COMBINED_NAME, DIAGNOSTICS_NAME, ERROR_NAME, GROUPS_DIR, RUNS_DIR,  # noqa: F401
                                 SPEC_NAME, STORE_DIR, SUMMARY_NAME, cache_key, prepare_sweep_dir, read_spec,
                                 rebuild_combined, run_diagnostics, run_status, write_combined, write_task)
from ppl_vae.sweep.tasks import (ConfigOutcome, TaskOutcome, diagnose_options, error_record, group_id,  # noqa: F401
                                 run_group)


# --------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class StudySummary:
    """What one invocation of :func:`run_study` did.

    Attributes
    ----------
    out
        The sweep directory.
    finished
        Run names finished in this invocation.
    skipped
        Run names already finished before it (not retrained).
    failed
        Run name -> error record, for configurations that failed now.
    wall_time
        Seconds for the whole invocation.
    backend
        Name of the backend that ran the tasks.
    not_converged
        Run names finished now whose linear model did not converge (``converged:
        false`` in their ``metrics.json``).
    """

    out: Path
    finished: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: dict[str, dict]
    wall_time: float
    backend: str
    not_converged: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return {"finished": len(self.finished), "failed": len(self.failed), "skipped": len(self.skipped)}

    def lines(self) -> list[str]:
        """Human-readable summary."""
        total = sum(self.counts.values())
        lines = [f"{total} configurations: {len(self.finished)} finished, {len(self.failed)} failed, "
                 f"{len(self.skipped)} skipped (already finished) in {self.wall_time:.1f} s on {self.backend}"]
        for name, error in self.failed.items():
            first_line = (error["message"].splitlines() or [""])[0]
            lines.append(f"  failed {name}: {error['type']}: {first_line}")
        if self.failed:
            lines.append("  rerun the same command to retry the failed configurations")
        if self.not_converged:
            shown = ", ".join(self.not_converged[:5]) + (", ..." if len(self.not_converged) > 5 else "")
            lines.append(f"  warning: {len(self.not_converged)} configuration(s) did not converge ({shown}); their "
                         "collapse counts are not reliable (metrics.json: convergence)")
        lines.append(f"results: {self.out}")
        return lines


Runner = Callable[[SweepTask, Any], TaskOutcome]


def _as_completed(backend: Backend, runner: Runner, tasks: Sequence[SweepTask], bundle
                  ) -> Iterator[tuple[SweepTask, TaskOutcome | BaseException]]:
    """Each task's outcomes (or the exception that lost them) as soon as it is done."""
    if hasattr(backend, "as_completed"):
        for position, result in backend.as_completed(runner, tasks, bundle):
            yield tasks[position], result
        return
    for task in tasks:
        try:
            (result,) = backend.map(runner, [task], bundle)
        except Exception as err:  # noqa: BLE001
            result = err
        yield task, result


def make_backend(spec: SweepSpec) -> Backend:
    """The backend ``spec.execution`` asks for (Ray imported only here, only if asked)."""
    if spec.execution["backend"] == "ray":
        from ppl_vae.sweep.ray_backend import RayBackend

        return RayBackend(address=spec.execution["address"], num_cpus=spec.execution["num_cpus"],
                          num_gpus=spec.execution["num_gpus"], max_retries=spec.execution["max_retries"])
    return LocalBackend()


def run_study(spec: SweepSpec, out: str | os.PathLike, *, backend: Backend | None = None, overwrite: bool = False,
              runner: Runner | None = None, echo: Callable[[str], None] | None = None,
              yes: bool = False) -> StudySummary:
    """Run (or resume) the sweep ``spec`` into the directory ``out``.

    Parameters
    ----------
    spec
        The validated sweep.
    out
        Sweep directory (created; reused if it holds the same spec).
    backend
        Where tasks run; default from ``spec.execution`` (``local`` or ``ray``).
    overwrite
        Discard the results of a different spec found in ``out``.
    runner
        The task function, default :func:`run_group` with the spec's
        diagnostics options (tests wrap it to inject failures).
    echo
        Called with one line per finished task (progress), e.g. ``click.echo``.
    yes
        Run a grid larger than ``spec.execution['max_configs']`` (else refused, see
        :meth:`SweepSpec.check_size`).

    Returns
    -------
    StudySummary
        Also written to ``out/summary.json``; ``out/combined.nc`` holds every
        finished configuration's diagnostics along ``run``.

    Raises
    ------
    GridTooLargeError
        The grid is over the limit and ``yes`` is False (nothing is created).
    ppl_vae._lock.OutputInUseError
        Another process is writing to ``out`` (nothing is written).
    SpecMismatchError
        ``out`` holds a sweep of another spec and ``overwrite`` is False.
    """
    start = time.perf_counter()
    spec.check_size(yes)  # before the grid is expanded
    out = check_path(out, "the sweep directory")
    bundle = spec.load_data()
    configs, seeds, names = spec.expand(bundle)  # every config is valid before any work starts
    check_run_names(out, names)  # a name the file system cannot hold fails now, not after training
    with claim_output(out, "ppl-vae sweep"):
        prepare_sweep_dir(out, spec, overwrite=overwrite, bundle=bundle)
        return _run_claimed(spec, out, bundle, (configs, seeds, names), backend=backend, runner=runner, echo=echo,
                            start=start)


def _run_claimed(spec: SweepSpec, out: Path, bundle, grid: tuple[list, list, list[str]], *, backend: Backend | None,
                 runner: Runner | None, echo: Callable[[str], None] | None, start: float) -> StudySummary:
    """:func:`run_study` once ``out`` is claimed and prepared: train what is missing, write the results."""
    configs, seeds, names = grid
    runs = out / RUNS_DIR
    finished_before = [run_status(runs / name) == "finished" for name in names]
    skipped = [k for k, done in enumerate(finished_before) if done]
    todo = [k for k, done in enumerate(finished_before) if not done]
    fit_options = {key: spec.train[key] for key in TRAIN_DEFAULTS} | {"device": spec.execution["device"]}
    tasks = plan_tasks(configs, seeds, fit_options, index=todo, group_size=spec.execution["group_size"],
                        vectorise=spec.execution["vectorise"])
    backend = backend or make_backend(spec)
    # Group checkpoints live on the driver's disk: only where the tasks run in this process.
    groups_dir = str(out / GROUPS_DIR) if isinstance(backend, LocalBackend) else None
    runner = runner or functools.partial(run_group, diagnostics=dict(spec.diagnostics), groups_dir=groups_dir)
    data_spec = bundle.attrs.get("spec")
    finished, failed, not_converged, fresh = [], {}, [], {}
    for done, (task, result) in enumerate(_as_completed(backend, runner, tasks, bundle), start=1):
        if isinstance(result, BaseException):
            result = TaskOutcome.failed(task, result)
        fresh.update(write_task(out, spec, names, (configs, seeds), data_spec, result, task.vectorised,
                                group_id(task)))
        for outcome in result.outcomes:
            name = names[outcome.index]
            if outcome.ok:
                finished.append(name)
                if (outcome.metrics or {}).get("converged") is False:
                    not_converged.append(name)
            else:
                failed[name] = outcome.error
        if echo is not None:
            echo(f"task {done}/{len(tasks)}: {len(task.index)} configuration(s), "
                 f"{sum(o.ok for o in result.outcomes)} finished")
    if groups_dir is not None and Path(groups_dir).is_dir() and not any(Path(groups_dir).iterdir()):
        Path(groups_dir).rmdir()  # every group finished and was written out
    if finished or skipped:
        write_combined(out, fresh)  # this invocation's runs from memory, earlier ones from their stores
    summary = StudySummary(out, tuple(finished), tuple(names[k] for k in skipped), failed,
                           time.perf_counter() - start, getattr(backend, "name", type(backend).__name__),
                           tuple(not_converged))
    atomic_write_json(out / SUMMARY_NAME, {**summary.counts, "finished": list(summary.finished),
                                           "skipped": list(summary.skipped), "failed": summary.failed,
                                           "wall_time_s": summary.wall_time, "backend": summary.backend})
    return summary
