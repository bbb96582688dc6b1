"""One sweep task as a worker runs it: train a group of configurations, diagnose them, send them back batched.

:func:`run_group` is the function a backend maps over the tasks (locally or on
Ray). What it returns, a :class:`TaskOutcome`, is plain picklable data: one
:class:`ConfigOutcome` per configuration (weights, loss, metrics or the error)
and the diagnostics of the task's finished configurations as one tree along
``run`` (:func:`ppl_vae.diagnostics.io.stack_runs`), which the driver writes in
one file (:mod:`ppl_vae.sweep.store`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ppl_vae.sweep.api import DIAGNOSTICS_DEFAULTS, held_out_rows, run_task
from ppl_vae.sweep.backends import SweepTask, TaskResult

# --------------------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class ConfigOutcome:
    """What a worker sends back for one configuration (plain, picklable data).

    Attributes
    ----------
    index
        Position in the sweep.
    state_dict
        Trained weights on the CPU (None if training failed).
    loss_history
        ``(steps,)`` per-sample loss, nats (None if training failed).
    metrics
        ``metrics.json`` content (final_loss, steps, wall_time_s, device, theory).
    diagnostics
        ``ppl_vae.diagnostics.diagnose`` output, when sent alone (a :class:`TaskOutcome`
        carries its configurations' diagnostics batched instead; None on failure).
    error
        ``{"type", "message", "traceback"}`` on failure, else None.
    provenance
        The task's training record from ``fit`` (estimator, seeds, K, group, split).
    """

    index: int
    state_dict: dict | None = None
    loss_history: np.ndarray | None = None
    metrics: dict | None = None
    diagnostics: Any = None
    error: dict | None = None
    provenance: dict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    """What a worker sends back for one task.

    Attributes
    ----------
    outcomes
        One :class:`ConfigOutcome` per configuration of the task, in task order.
    diagnostics
        The finished configurations' diagnostics as one ``xarray.DataTree``
        (:func:`ppl_vae.diagnostics.io.stack_runs`) whose ``run`` labels are their
        sweep positions (``"3"``); None when no configuration finished.
    """

    outcomes: tuple[ConfigOutcome, ...]
    diagnostics: Any = None

    @classmethod
    def failed(cls, task: SweepTask, err: BaseException) -> TaskOutcome:
        """Every configuration of ``task`` failed with ``err``."""
        record = error_record(err)
        return cls(tuple(ConfigOutcome(index=k, error=record) for k in task.index))


def error_record(err: BaseException) -> dict[str, str]:
    """``{"type", "message", "traceback"}`` of an exception (a Ray error reports its cause's type)."""
    cause = getattr(err, "cause", None)
    kind = type(cause).__name__ if isinstance(cause, BaseException) else type(err).__name__
    return {"type": kind, "message": str(cause if isinstance(cause, BaseException) else err),
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__))}


def diagnose_options(diagnostics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``diagnose`` keyword options (besides ``iw_samples`` and ``seed``) that differ from its defaults.

    ``ppl-vae report`` keys its diagnostics cache on the options it passes; a
    sweep using the defaults thus writes a ``diagnostics.nc`` the report reuses.
    """
    import inspect

    from ppl_vae.diagnostics import diagnose

    defaults = inspect.signature(diagnose).parameters
    return {key: diagnostics[key] for key in ("n_obs", "n_draws", "kl_samples")
            if diagnostics[key] != defaults[key].default}


def group_id(task: SweepTask) -> str:
    """A name for a task's checkpoint folder: a digest of its configurations and seeds."""
    payload = json.dumps([[c.to_dict() for c in task.configs], list(task.seeds), task.fit_options],
                         sort_keys=True, default=str)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def run_group(task: SweepTask, bundle, *, diagnostics: Mapping[str, Any] | None = None,
              groups_dir: str | None = None) -> TaskOutcome:
    """Train one task (via :func:`ppl_vae.sweep.api.run_task`), diagnosing each configuration on held-out rows.

    This is what a worker runs. A failure of the whole task (an exception in
    training) is returned as an error for each of its configurations; a
    configuration whose loss diverged, or whose diagnostics failed, is an error
    of its own while the others of the task finish. With ``groups_dir`` the task
    checkpoints into ``groups_dir/<group_id>`` and resumes from it.
    """
    from ppl_vae._provenance import discard_damaged_group
    from ppl_vae.inference import TrainingDivergedError
    from ppl_vae.inference.checkpoint import CheckpointError
    from ppl_vae.inference.convergence import NotConvergedWarning
    from ppl_vae.inference.runs import convergence_metrics, linear_theory_metrics
    from ppl_vae.models import build_model

    options = {**DIAGNOSTICS_DEFAULTS, **(diagnostics or {})}
    checkpoint_dir = None if groups_dir is None else str(Path(groups_dir) / group_id(task))
    discard_damaged_group(checkpoint_dir)  # a damaged group checkpoint is retrained, not failed on every rerun
    try:
        with warnings.catch_warnings():  # recorded per run and summed up in the sweep's summary instead
            warnings.simplefilter("ignore", NotConvergedWarning)
            try:
                result: TaskResult = run_task(task, bundle, diagnostics=options, checkpoint_dir=checkpoint_dir)
            except CheckpointError as err:  # e.g. parameter shapes only the model can check
                if not discard_damaged_group(checkpoint_dir, err):
                    raise
                result = run_task(task, bundle, diagnostics=options, checkpoint_dir=checkpoint_dir)
    except Exception as err:  # noqa: BLE001 - recorded per configuration, the sweep goes on
        return TaskOutcome.failed(task, err)
    # The rows the task trained on (as fit split them): what the linear theory describes.
    train, _ = held_out_rows(bundle, task.fit_options.get("test_fraction", 0.0), task.fit_options.get("split_seed", 0),
                             None)
    outcomes, finished = [], []
    for row, (k, config, state) in enumerate(zip(task.index, task.configs, result.state_dicts)):
        history = np.asarray(result.loss_history[row], dtype=np.float64)
        if row in result.diverged:
            step = result.diverged[row]
            err = TrainingDivergedError(step, float(history[step]) if step < history.size else float("nan"))
            outcomes.append(ConfigOutcome(index=k, loss_history=history,
                                          error={"type": type(err).__name__, "message": str(err), "traceback": ""},
                                          provenance=result.provenance))
            continue
        try:
            model = build_model(config)
            model.load_state_dict(state)
            metrics: dict[str, Any] = {
                "final_loss": float(np.mean(history[-min(100, history.size):])),
                "steps": int(history.size),
                "wall_time_s": float(result.wall_time),
                "configs_in_task": len(task.index),
                "vectorised": bool(task.vectorised),
                "metrics_data": "test",
                "n_train": train.n,
            }
            theory = linear_theory_metrics(model, train.to("cpu"))
            if theory is not None:
                metrics["theory"] = theory
            if row < len(result.convergence):
                metrics.update(convergence_metrics([result.convergence[row]]))
            idata = result.diagnostics[row]
            metrics["device"] = str(idata.attrs.get("device", task.fit_options.get("device", "cpu")))
            outcomes.append(ConfigOutcome(index=k, state_dict=state, loss_history=history, metrics=metrics,
                                          provenance=result.provenance))
            finished.append(idata)
        except Exception as err:  # noqa: BLE001
            outcomes.append(ConfigOutcome(index=k, error=error_record(err)))
    if checkpoint_dir is not None and all(outcome.ok for outcome in outcomes):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: the run directories hold everything
    return TaskOutcome(tuple(outcomes), batch_diagnostics(outcomes, finished))


def batch_diagnostics(outcomes: list[ConfigOutcome], idatas: list[Any]):
    """The finished configurations' diagnostics as one tree along ``run`` (labels: sweep positions), or None."""
    from ppl_vae.diagnostics.io import stack_runs

    labels = [str(outcome.index) for outcome in outcomes if outcome.ok]
    return stack_runs(idatas, labels) if labels else None
