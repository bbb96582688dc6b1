"""What a training run is made of besides its loop: the K models as one, their KL controls, the result.

Split from :mod:`~ppl_vae.inference.trainer` (which re-exports the public names):
:class:`FitResult` and :class:`TrainingDivergedError` (what :func:`~ppl_vae.inference.fit`
returns or raises), the K models as one Pyro program (``_Trainee``) and the KL schedules
and free-bits floors their configs ask for (:func:`kl_controls`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ppl_vae.inference import convergence
from ppl_vae.inference.batched import BatchedModel, can_vectorise, clip_per_config_


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; ``step`` is the first step where it was seen."""

    def __init__(self, step: int, loss: float, run_dir: Path | None = None, checkpoint_step: int | None = None,
                 config: int | None = None):
        self.step, self.loss, self.run_dir, self.config = step, loss, run_dir, config
        which = "" if config is None else f" (configuration {config})"
        if run_dir is not None and checkpoint_step is not None:
            kept = f"; the last good checkpoint (step {checkpoint_step}) is kept in {run_dir}"
        elif run_dir is not None:
            kept = f"; no checkpoint had been written yet in {run_dir}"
        else:
            kept = ""
        super().__init__(f"training diverged at step {step}{which}: the loss is {loss}{kept}. "
                         "Try a smaller learning rate (--lr) or gradient clipping (--clip-norm).")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    models
        The K trained models (on ``device``), in the order given.
    loss
        Per-sample negative beta-ELBO of each step's batch (nats per sample), the
        whole run including resumed parts: ``xr.DataArray`` over ``step`` when one
        model was given, over ``(config, step)`` when a sequence was. A diverged
        configuration's entries after its divergence are NaN.
    final_loss
        Mean of ``loss`` over the last ``min(100, steps)`` steps: a float for one
        model, a ``(K,)`` array for a sequence.
    steps
        Steps done in total.
    wall_time
        Seconds spent in this call.
    device
        Device the models were trained on, e.g. ``'cpu'`` or ``'cuda:0'``.
    run_dir
        The run directory, or None.
    diverged
        Configuration index -> first step with a non-finite loss (those stopped).
    provenance
        The training options as written to ``config.json`` (``train``): estimator,
        seeds, K, data split, ...
    convergence
        One verdict per configuration (:func:`ppl_vae.inference.convergence.judge`:
        ``converged`` True, False or None when not judged, and why; parameters moved,
        loss and per-dimension KL settled); None for a diverged one or a user's program.
    """

    models: tuple[Any, ...]
    loss: xr.DataArray
    final_loss: float | np.ndarray
    steps: int
    wall_time: float
    device: str
    run_dir: Path | None = None
    diverged: dict[int, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    convergence: list[dict[str, Any] | None] = field(default_factory=list)
    kl_history: xr.Dataset | None = None

    @property
    def model(self):
        """The trained model of a one-configuration run."""
        if len(self.models) != 1:
            raise AttributeError(f"this run trained {len(self.models)} configurations: use .models")
        return self.models[0]


class _Trainee:
    """The K models as one Pyro model/guide pair: the model itself (K = 1) or a :class:`BatchedModel`."""

    def __init__(self, models: Sequence[Any]):
        self.models = tuple(models)
        self.n_configs = len(models)
        self.program = getattr(models[0].config, "family", None) == "program"
        if self.n_configs == 1:
            self.module = models[0]
        else:
            possible, reason = can_vectorise([m.config for m in models], models)
            if not possible:
                raise ValueError(f"these {self.n_configs} models cannot be trained as one run: {reason}; "
                                 "train them one at a time")
            self.module = BatchedModel(models)
        self.parameters = [p for p in self.module.parameters() if p.requires_grad]
        self.linear = models[0].config.arch == "linear"

    def batch(self, tensors: tuple[torch.Tensor, ...], index: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Rows of this step: shared ``(n, d)`` (full batch), ``(K, B, d)``, or ``(B, d)`` for one model."""
        if index is None:
            return tensors
        # index_select on the flat index: the same rows as t[index], several times faster on the CPU
        flat = index.reshape(-1)
        shape = (index.shape[-1],) if self.n_configs == 1 else tuple(index.shape)
        return tuple(torch.index_select(t, 0, flat).reshape(*shape, *t.shape[1:]) for t in tensors)

    def clip(self, max_norm: float) -> None:
        if self.n_configs == 1:
            torch.nn.utils.clip_grad_norm_(self.parameters, max_norm)
        else:
            clip_per_config_(self.parameters, max_norm)

    def freeze(self, stopped: torch.Tensor) -> None:
        """Zero the gradients of stopped configurations (their losses are already masked out)."""
        for p in self.parameters:
            if p.grad is not None:
                p.grad.masked_fill_(stopped.reshape(-1, *([1] * (p.dim() - 1))), 0.0)

    def write_back(self) -> None:
        if self.n_configs > 1:
            self.module.unstack_into(self.models)


def kl_controls(module) -> tuple[dict[str, tuple], dict[str, torch.Tensor]]:
    """The KL schedules and free-bits floors a model's config asks for, by latent site.

    Returns
    -------
    (dict, dict)
        Site -> ``(warmup_steps, cycle_steps, cycle_ratio)`` for the sites with a
        schedule, and site -> floor (nats per dimension) for those with free bits;
        plain numbers for one model, ``(K, 1)`` tensors for a batched one. Sites
        whose every configuration has the control off are left out, so a model
        without controls pays nothing per step.
    """
    config = module.config
    schedules, floors = {}, {}
    for site, level in module.kl_levels.items():
        warmup, cycle = getattr(config, f"kl_warmup{level}"), getattr(config, f"kl_cycle{level}")
        if bool(torch.as_tensor(warmup).gt(0).any() | torch.as_tensor(cycle).gt(0).any()):
            schedules[site] = (warmup, cycle, getattr(config, f"kl_cycle_ratio{level}"))
        floor = getattr(config, f"free_bits{level}")
        if bool(torch.as_tensor(floor).gt(0).any()):
            floors[site] = torch.as_tensor(floor, dtype=torch.float32)
    return schedules, floors


def _convergence(snapshots: list[list], history: np.ndarray, diverged: dict[int, int], trainee: _Trainee,
                 moved: np.ndarray) -> list[dict[str, Any] | None]:
    """:func:`ppl_vae.inference.convergence.judge` of each configuration (None: a user's program, or diverged); warns."""
    if trainee.program:
        return [None] * trainee.n_configs
    verdicts = convergence.judge(snapshots, history, trainee.n_configs, moved)
    verdicts = [None if k in diverged else verdict for k, verdict in enumerate(verdicts)]
    line = convergence.summary_line(verdicts)
    if line is not None:
        warnings.warn(line, convergence.NotConvergedWarning, stacklevel=3)
    return verdicts


def _newly_diverged(values: np.ndarray, done: int, diverged: dict[int, int]) -> dict[int, int]:
    """Configurations whose first non-finite loss falls in ``values`` ``(S, K)``: index -> step."""
    newly = {}
    for k in range(values.shape[1]):
        if k in diverged:
            continue
        bad = np.flatnonzero(~np.isfinite(values[:, k]))
        if bad.size:
            newly[k] = done - len(values) + int(bad[0])
    return newly


def _loss_array(history: np.ndarray, single: bool) -> xr.DataArray:
    """``(steps, K)`` history as a labelled array: over ``step`` (one model) or ``(config, step)``."""
    attrs = {"long_name": "negative beta-ELBO per sample", "units": "nats"}
    steps = np.arange(history.shape[0])
    if single:
        return xr.DataArray(history[:, 0], dims="step", coords={"step": steps}, name="loss", attrs=attrs)
    return xr.DataArray(history.T, dims=("config", "step"),
                        coords={"config": np.arange(history.shape[1]), "step": steps}, name="loss", attrs=attrs)
