"""The training engine: SVI for K >= 1 configurations of one architecture, as one run.

``fit(model, data)`` trains one model; ``fit([m_1, ..., m_K], data, seed=[s_1, ..., s_K])``
trains K models that share an architecture (they may differ in hyper-parameters and
initial weights) as ONE run over a ``configs`` plate (:class:`~ppl_vae.inference.batched.BatchedModel`).
Everything a run does is written once here and holds for every K: the held-out split,
minibatches and Monte Carlo noise drawn per configuration from its own seed
(:mod:`~ppl_vae.inference.randomness`), the learning-rate schedule, gradient clipping on
each configuration's own norm, divergence handling, progress, checkpoints and
bit-for-bit resume. The loss is :mod:`~ppl_vae.inference.elbo`'s, the suite's one ELBO,
run as a record traced once per batch shape (:class:`~ppl_vae.inference.traced.TracedLoss`:
the same numbers bit for bit, without Pyro's Python on every step). The optimiser is
torch's fused Adam (or Pyro's ``ClippedAdam`` on request).

Configuration k of a K-run therefore equals a separate run of model k with seed
``s_k`` (to float tolerance: batched matrix products sum in another order), so
grouping configurations cannot change a result.

Per step the loop does no host read: losses stay on the device and are read back
every ``SYNC_EVERY`` steps (progress, divergence check, callbacks) and at checkpoints.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
import xarray as xr
from pyro.optim.clipped_adam import ClippedAdam

from ppl_vae._device import resolve_device
from ppl_vae._io import check_path, prepare_run_dir
from ppl_vae._lock import claim_output
from ppl_vae._validate import check_choice, check_int_range, check_positive
from ppl_vae.data import train_test_split
from ppl_vae.inference import convergence, runs
from ppl_vae.inference.batched import BatchedModel, can_vectorise, clip_per_config_
from ppl_vae.inference.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ppl_vae.inference.elbo import estimator_name, site_estimators
from ppl_vae.inference.randomness import NOISE_STREAM, ConfigBatches, ConfigNoise, make_generators
from ppl_vae.inference.schedules import kl_weight
from ppl_vae.inference.traced import TracedLoss
from ppl_vae.models.config import as_training_data

OPTIMIZERS = ("adam", "clipped_adam")
DIVERGENCE_CHOICES = ("raise", "stop")

#: Steps between host reads of the loss (progress bar, divergence check).
SYNC_EVERY = 50

#: Training options that must match when a run is resumed (``steps`` may grow).
RESUME_KEYS = ("batch_size", "lr", "optimizer", "lr_decay", "clip_norm", "seeds", "test_fraction", "split_seed")


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
        loss and per-dimension KL settled); None for a diverged one.
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

    @property
    def model(self):
        """The trained model of a one-configuration run."""
        if len(self.models) != 1:
            raise AttributeError(f"this run trained {len(self.models)} configurations: use .models")
        return self.models[0]


def _total_steps(steps: int | None, epochs: int | None, steps_per_epoch: int) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps (>= 1) or epochs (>= 1)")
    if steps is not None:
        return check_int_range("steps", steps, 1)
    return check_int_range("epochs", epochs, 1) * steps_per_epoch


def _make_optimizer(name: str, parameters, lr: float, clip_norm: float | None) -> torch.optim.Optimizer:
    if name == "clipped_adam":
        # ClippedAdam clamps each gradient element to [-clip_norm, clip_norm] (Pyro's default 10);
        # element-wise, so it never mixes configurations.
        return ClippedAdam(parameters, lr=lr, clip_norm=10.0 if clip_norm is None else clip_norm)
    # The fused kernel updates every tensor in one pass: the same Adam, a fraction of the per-step cost.
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def _seeds(seed: int | Sequence[int], n_configs: int) -> tuple[int, ...]:
    seeds = [seed] * n_configs if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != n_configs:
        raise ValueError(f"seed must be one integer or one per configuration ({n_configs}), got {len(seeds)}")
    return tuple(check_int_range("seed", int(s), 0) for s in seeds)


class _Trainee:
    """The K models as one Pyro model/guide pair: the model itself (K = 1) or a :class:`BatchedModel`."""

    def __init__(self, models: Sequence[Any]):
        self.models = tuple(models)
        self.n_configs = len(models)
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
        return tuple(torch.index_select(t, 0, flat).reshape(*shape, t.shape[-1]) for t in tensors)

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


def fit(
    model,
    data,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    optimizer: str = "adam",
    lr_decay: float = 1.0,
    clip_norm: float | None = None,
    seed: int | Sequence[int] = 0,
    test_fraction: float = 0.0,
    split_seed: int = 0,
    device: str | torch.device = "auto",
    run_dir: str | Path | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_divergence: str = "raise",
    callbacks: Sequence[Callable[[int, Any, Any], None]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> FitResult:
    """Train one model, or K models of one architecture as one run, by SVI.

    Parameters
    ----------
    model
        A :class:`ppl_vae.models.LatentVariableModel`, or a sequence of K of them
        sharing their architecture (moved to ``device`` in place; trained weights
        are written back into them).
    data
        A :class:`ppl_vae.data.DataBundle` whose ``tensors()`` the models take.
    steps, epochs
        Length of training, exactly one of them; an epoch is ``ceil(n / batch_size)``
        steps. With ``resume`` they give the total, including steps already done.
    batch_size
        Rows per step; None: the full data set every step.
    lr, optimizer, lr_decay, clip_norm
        Adam learning rate; ``'adam'`` (torch) or ``'clipped_adam'`` (Pyro's,
        element-wise clipping at ``clip_norm``, default 10); per-step exponential
        decay, lr at step t = ``lr * lr_decay**t``; for ``'adam'`` a clip on each
        configuration's own global gradient norm (None: no clipping).
    seed
        One integer, or one per configuration: seeds configuration k's minibatch
        order and Monte Carlo noise (two streams of it). Initial weights come from
        ``build_model``: seed torch before building each model.
    test_fraction, split_seed
        Hold out this fraction of ``data`` (``ppl_vae.data.train_test_split`` with
        ``split_seed``, the same rows for every configuration) and train on the
        rest; recorded in ``config.json`` so that diagnostics evaluate on the
        held-out rows. 0: train on everything.
    device
        ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    run_dir
        Directory for ``config.json``, ``checkpoint.pt``, ``loss_history.nc`` and
        ``metrics.json``; None writes nothing. An existing non-empty directory needs
        ``overwrite`` or ``resume``.
    checkpoint_every
        Steps between checkpoints (with ``run_dir``); the last step always writes one.
    resume
        Continue the run in ``run_dir`` from its checkpoint, bit for bit on the same
        device; model configs and the options in ``RESUME_KEYS`` must match.
    progress
        Show a tqdm progress bar with the running loss.
    on_divergence
        ``'raise'``: a non-finite loss raises :class:`TrainingDivergedError`.
        ``'stop'``: that configuration is stopped and recorded in
        ``FitResult.diverged`` with its step; the others go on (if every
        configuration diverges the error is raised).
    callbacks
        Called as ``callback(step, losses, models)`` every ``SYNC_EVERY`` steps and
        at the end, with ``losses`` the ``(K,)`` per-sample losses of that step.
    provenance
        Extra entries for ``config.json``'s ``train`` section (a sweep's group id).

    Raises
    ------
    TrainingDivergedError
        The loss became NaN or infinite (``on_divergence='raise'``, or every configuration).
    ValueError
        A bad option (naming it and its allowed range).
    """
    single = not isinstance(model, (list, tuple))
    models = [model] if single else list(model)
    if not models:
        raise ValueError("model must be a model or a non-empty sequence of models")
    seeds = _seeds(seed, len(models))
    batch_size = None if batch_size is None else check_int_range("batch_size", batch_size, 1)
    lr = check_positive("lr", lr)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    on_divergence = check_choice("on_divergence", on_divergence, DIVERGENCE_CHOICES)
    lr_decay = check_positive("lr_decay", lr_decay)
    if lr_decay > 1.0:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    clip_norm = None if clip_norm is None else check_positive("clip_norm", clip_norm)
    checkpoint_every = check_int_range("checkpoint_every", checkpoint_every, 1)
    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir")
    if resume and not Path(check_path(run_dir, "run_dir")).is_dir():
        raise FileNotFoundError(f"cannot resume: run directory {run_dir} does not exist")
    test_fraction = float(test_fraction)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    split_seed = check_int_range("split_seed", split_seed, 0)
    torch_device = resolve_device(device)

    data = as_training_data(data)
    for m in models:
        m.check_data(data)
    n_rows = data.n
    if test_fraction > 0.0:
        data, _ = train_test_split(data, test_fraction, seed=split_seed)
    for m in models:
        m.to(torch_device)
    trainee = _Trainee(models)
    n_configs = trainee.n_configs
    bundle = data.to(torch_device)
    tensors = bundle.tensors()
    sampler = ConfigBatches(bundle.n, batch_size, seeds, torch_device)
    noise = ConfigNoise(make_generators(seeds, NOISE_STREAM, torch_device))
    estimators = site_estimators(models[0])
    schedules, floors = kl_controls(trainee.module)
    total_steps = _total_steps(steps, epochs, sampler.steps_per_epoch)
    train_options = {
        "steps": total_steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "lr_decay": lr_decay, "clip_norm": clip_norm, "seeds": list(seeds), "checkpoint_every": checkpoint_every,
        "test_fraction": test_fraction, "split_seed": split_seed, "n_rows": n_rows, "n_train": bundle.n,
        "n_test": n_rows - bundle.n, "estimator": estimator_name(estimators), "site_estimators": estimators,
        "n_configs": n_configs, "engine": "one model" if n_configs == 1 else "configs plate",
        **(provenance or {}),
    }
    opt = _make_optimizer(optimizer, trainee.parameters, lr, clip_norm)
    loss_fn = TracedLoss(trainee.module, trainee.parameters, estimators=estimators, free_bits=floors or None,
                         noise=noise)

    with _claimed(run_dir):
        history: list[np.ndarray] = []
        stopped = torch.zeros(n_configs, dtype=torch.bool, device=torch_device)
        diverged: dict[int, int] = {}
        start_step, last_checkpoint = 0, None
        configs = [m.config.to_dict() for m in models]
        if run_dir is not None:
            run_dir = prepare_run_dir(run_dir, overwrite=overwrite, resume=resume, layout=runs.RUN_FILES)
        if resume:
            state = load_checkpoint(run_dir / CHECKPOINT_NAME)
            _check_resumable(state, configs, train_options)
            train_options["resumed"] = [*state["train"].get("resumed", []),
                                        {"from_step": int(state["step"]), "steps": total_steps}]
            runs.clear_results(run_dir)  # they describe the old end; rewritten when this run ends
            trainee.module.load_state_dict(state["model_state"])
            opt.load_state_dict(state["optimizer_state"])
            sampler.load_state_dict(state["sampler_state"])
            noise.load_state_dict(state["noise_state"])
            history = list(state["loss_history"].numpy())
            stopped = state["stopped"].to(torch_device)
            diverged = {int(k): int(v) for k, v in state["diverged"].items()}
            start_step = last_checkpoint = int(state["step"])
        if run_dir is not None:
            runs.write_config(run_dir, configs if not single else configs[0], bundle, train_options, seeds,
                              torch_device)

        def checkpoint(step: int) -> None:
            save_checkpoint(run_dir / CHECKPOINT_NAME, {
                "model_state": trainee.module.state_dict(), "optimizer_state": opt.state_dict(), "step": step,
                "loss_history": torch.as_tensor(np.asarray(history, dtype=np.float64).reshape(-1, n_configs)),
                "sampler_state": sampler.state_dict(), "noise_state": noise.state_dict(),
                "stopped": stopped.cpu(), "diverged": {str(k): v for k, v in diverged.items()},
                "configs": configs, "train": train_options,
            })

        watch = set(convergence.snapshot_steps(total_steps, start_step))
        initial = convergence.parameter_copy(trainee.parameters)  # a frozen model is never settled
        snapshots: list[list] = []
        bar = _progress_bar(progress, start_step, total_steps, n_configs)
        pending: list[torch.Tensor] = []
        began = time.perf_counter()
        trainee.module.train()
        # Argument checks and param-store registration each cost more than a small model's step.
        with pyro.validation_enabled(False), _unregistered(trainee.module):
            for step in range(start_step, total_steps):
                batch = trainee.batch(tensors, sampler.indices(step))
                for group in opt.param_groups:
                    group["lr"] = lr * lr_decay**step
                opt.zero_grad(set_to_none=True)
                multipliers = {site: kl_weight(step, *schedule, validate=False)
                               for site, schedule in schedules.items()}
                losses = loss_fn(batch, multipliers)
                if diverged:
                    torch.where(stopped, 0.0, losses).sum().backward()
                    trainee.freeze(stopped)
                else:
                    losses.sum().backward()
                if clip_norm is not None and optimizer == "adam":
                    trainee.clip(clip_norm)
                opt.step()
                pending.append(losses.detach())

                done = step + 1
                if done in watch:
                    trainee.write_back()
                    snapshots.append(convergence.take_snapshot(models, bundle, len(snapshots)))
                at_checkpoint = run_dir is not None and (done % checkpoint_every == 0 or done == total_steps)
                if done % SYNC_EVERY == 0 or at_checkpoint or done == total_steps:
                    values = torch.stack(pending).cpu().double().numpy()  # (S, K)
                    pending.clear()
                    newly = _newly_diverged(values, done, diverged)
                    if newly and (on_divergence == "raise" or len(diverged) + len(newly) == n_configs):
                        k, bad_step = next(iter(newly.items()))
                        raise TrainingDivergedError(bad_step, float(values[bad_step - done + len(values), k]), run_dir,
                                                    last_checkpoint, None if single else k)
                    for k in diverged:  # stopped before this block: their masked losses mean nothing
                        values[:, k] = np.nan
                    for k, bad_step in newly.items():
                        diverged[k] = bad_step
                        stopped[k] = True
                        values[bad_step - done + len(values):, k] = np.nan
                    history.extend(values)
                    if bar is not None:
                        bar.update(len(values))
                        bar.set_postfix(loss=f"{np.nanmean(values[-1]):.4g}")
                    for callback in callbacks or ():
                        callback(done, values[-1], models if not single else models[0])
                    if at_checkpoint:
                        checkpoint(done)
                        last_checkpoint = done
        if bar is not None:
            bar.close()
        wall_time = time.perf_counter() - began
        trainee.write_back()

        history_array = np.asarray(history, dtype=np.float64).reshape(-1, n_configs)
        loss = _loss_array(history_array, single)
        tail = history_array[-min(100, len(history_array)):] if len(history_array) else np.full((1, n_configs), np.nan)
        with np.errstate(all="ignore"):
            final = np.array([np.nan if k in diverged else float(np.mean(tail[:, k])) for k in range(n_configs)])
        moved = convergence.parameter_movement(initial, trainee.parameters, n_configs)
        verdicts = _convergence(snapshots, history_array, diverged, trainee, moved)
        result = FitResult(models=tuple(models), loss=loss, final_loss=float(final[0]) if single else final,
                           steps=len(history_array), wall_time=wall_time, device=str(torch_device), run_dir=run_dir,
                           diverged=diverged, provenance=train_options, convergence=verdicts)
        if run_dir is not None:
            runs.write_results(run_dir, result, bundle)
        return result


def _convergence(snapshots: list[list], history: np.ndarray, diverged: dict[int, int], trainee: _Trainee,
                 moved: np.ndarray) -> list[dict[str, Any] | None]:
    """:func:`ppl_vae.inference.convergence.judge` of each configuration (None: diverged); warns."""
    verdicts = convergence.judge(snapshots, history, trainee.n_configs, moved)
    verdicts = [None if k in diverged else verdict for k, verdict in enumerate(verdicts)]
    line = convergence.summary_line(verdicts)
    if line is not None:
        warnings.warn(line, convergence.NotConvergedWarning, stacklevel=3)
    return verdicts


def _claimed(run_dir: str | Path | None):
    """The claim on ``run_dir`` (:func:`ppl_vae._lock.claim_output`) for the run's duration; none without one."""
    if run_dir is None:
        return contextlib.nullcontext()
    return claim_output(check_path(run_dir, "run_dir"), "training")


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


def _unregistered(module):
    """Skip a suite model's Pyro param-store registration (a batched model has none)."""
    return module.unregistered() if hasattr(module, "unregistered") else contextlib.nullcontext()


def _loss_array(history: np.ndarray, single: bool) -> xr.DataArray:
    """``(steps, K)`` history as a labelled array: over ``step`` (one model) or ``(config, step)``."""
    attrs = {"long_name": "negative beta-ELBO per sample", "units": "nats"}
    steps = np.arange(history.shape[0])
    if single:
        return xr.DataArray(history[:, 0], dims="step", coords={"step": steps}, name="loss", attrs=attrs)
    return xr.DataArray(history.T, dims=("config", "step"),
                        coords={"config": np.arange(history.shape[1]), "step": steps}, name="loss", attrs=attrs)


def _check_resumable(state: dict[str, Any], configs: list[dict], train_options: dict[str, Any]) -> None:
    if state["configs"] != configs:
        raise ValueError("cannot resume: the model config differs from the one in the checkpoint")
    changed = [key for key in RESUME_KEYS if state["train"].get(key) != train_options[key]]
    if changed:
        raise ValueError(f"cannot resume: training options {', '.join(changed)} differ from the checkpoint's")
    if train_options["steps"] < int(state["step"]):
        raise ValueError(f"cannot resume: steps={train_options['steps']} is fewer than the "
                         f"{int(state['step'])} steps already done")


def _progress_bar(progress: bool, start: int, total: int, n_configs: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    desc = "SVI" if n_configs == 1 else f"SVI x{n_configs}"
    return tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)
