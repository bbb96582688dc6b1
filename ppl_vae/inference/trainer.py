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
torch's fused Adam kernel (:class:`~ppl_vae.inference.adam.FusedAdam`), or Pyro's ``ClippedAdam`` on request.

Configuration k of a K-run therefore equals a separate run of model k with seed
``s_k`` (to float tolerance: batched matrix products sum in another order), so
grouping configurations cannot change a result.

Per step the loop does no host read: losses stay on the device and are read back
every ``SYNC_EVERY`` steps (progress, divergence check, callbacks) and at checkpoints.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam

from ppl_vae._device import resolve_device
from ppl_vae._io import check_path, prepare_run_dir
from ppl_vae._lock import claim_output
from ppl_vae._validate import check_choice, check_int_range, check_positive
from ppl_vae.inference.adam import FusedAdam
from ppl_vae.data import train_test_split
from ppl_vae.inference import convergence, kl_history, runs
from ppl_vae.inference.checkpoint import (CHECKPOINT_NAME, FIT_KEYS, CheckpointError, check_state, load_checkpoint,
                                          save_checkpoint)
from ppl_vae.inference.elbo import estimator_name, site_estimators
from ppl_vae.inference.program import as_bundle, as_program
from ppl_vae.inference.randomness import NOISE_STREAM, ConfigBatches, ConfigNoise, make_generators
from ppl_vae.inference.run_parts import (FitResult, TrainingDivergedError, _convergence, _loss_array,
                                         _newly_diverged, _Trainee, kl_controls)
from ppl_vae.inference.schedules import StepWeights
from ppl_vae.inference.traced import TracedLoss
from ppl_vae.models.base import LatentVariableModel
from ppl_vae.models.config import as_training_data

OPTIMIZERS = ("adam", "clipped_adam")
DIVERGENCE_CHOICES = ("raise", "stop")

#: Steps between host reads of the loss (progress bar, divergence check).
SYNC_EVERY = 50

#: Training options that must match when a run is resumed (``steps`` may grow).
RESUME_KEYS = ("batch_size", "lr", "optimizer", "lr_decay", "clip_norm", "seeds", "test_fraction", "split_seed")


def _total_steps(steps: int | None, epochs: int | None, steps_per_epoch: int) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps (>= 1) or epochs (>= 1)")
    if steps is not None:
        return check_int_range("steps", steps, 1)
    return check_int_range("epochs", epochs, 1) * steps_per_epoch


def _make_optimizer(name: str, parameters, lr: float, clip_norm: float | None) -> torch.optim.Optimizer | FusedAdam:
    if name == "clipped_adam":
        # ClippedAdam clamps each gradient element to [-clip_norm, clip_norm] (Pyro's default 10);
        # element-wise, so it never mixes configurations.
        return ClippedAdam(parameters, lr=lr, clip_norm=10.0 if clip_norm is None else clip_norm)
    # The fused kernel updates every tensor in one pass: the same Adam, a fraction of the per-step cost. It is
    # called as torch.optim.Adam(fused=True) calls it, minus torch.optim's import of torch._dynamo (~1.3 s).
    # The kernel is private: a torch without it gets torch's own fused Adam (the same update, slower start).
    if not hasattr(torch, "_fused_adam_"):
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    return FusedAdam(parameters, lr=lr)


def _seeds(seed: int | Sequence[int], n_configs: int) -> tuple[int, ...]:
    seeds = [seed] * n_configs if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != n_configs:
        raise ValueError(f"seed must be one integer or one per configuration ({n_configs}), got {len(seeds)}")
    return tuple(check_int_range("seed", int(s), 0) for s in seeds)


def fit(
    model,
    guide=None,
    data=None,
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
    jit: bool = True,
    kl_every: int | None = None,
    estimator: str = "auto",
    hyper: dict[str, Any] | None = None,
) -> FitResult:
    """Train one model, or K models of one architecture as one run, or a user's Pyro program, by SVI.

    ``fit(model, data, ...)`` trains the suite's models; ``fit(model, guide, data, ...)``
    (two Pyro callables) or ``fit(program, data, ...)`` (an object with ``.model`` and
    ``.guide``, e.g. a ``PyroModule``) trains a user's program
    (:mod:`ppl_vae.inference.program`) with the same checkpoints, resume, held-out
    split, divergence handling and provenance.

    Parameters
    ----------
    model
        A :class:`ppl_vae.models.LatentVariableModel`, or a sequence of K of them
        sharing their architecture (moved to ``device`` in place; trained weights
        are written back into them); or a Pyro model callable (with ``guide``), or an
        object with ``.model`` / ``.guide`` methods. A program's parameters (every
        ``pyro.param``, ``pyro.module`` included, optimised unconstrained as in Pyro)
        are trained in place.
    guide
        The Pyro guide of a model callable; None otherwise. (Passed positionally in
        the place of ``data``, a bundle is taken as ``data``: ``fit(model, bundle)``.)
    data
        A :class:`ppl_vae.data.DataBundle` whose ``tensors()`` the models take; for a
        program also a tensor or NumPy array ``(n, ...)`` (rows first: the program's
        one argument) or a tuple ``(x, y)`` of two (float64 is cast to float32).
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
    jit
        Record the loss once per batch shape and replay it
        (:class:`~ppl_vae.inference.traced.TracedLoss`, checked against the eager loss
        before it is used); False runs every step eagerly.
    kl_every
        Steps between records of the per-dimension KL history (``FitResult.kl_history``,
        ``kl_history.nc``); None: every 1% of the run; 0: none.
    estimator
        A program's estimator (:class:`~ppl_vae.inference.program.Program`):
        ``'auto'``, ``'Trace_ELBO'`` or ``'TraceMeanField_ELBO'``. The suite's models
        choose their own.
    hyper
        A program's hyper-parameters, recorded as its config (JSON-able).

    Raises
    ------
    TrainingDivergedError
        The loss became NaN or infinite (``on_divergence='raise'``, or every configuration).
    ValueError
        A bad option (naming it and its allowed range).
    """
    if data is None and guide is not None and not callable(guide):
        guide, data = None, guide  # fit(model, data)
    if data is None:
        raise ValueError("data is missing: fit(model, data) or fit(model, guide, data)")
    single = not isinstance(model, (list, tuple))
    program = as_program(model, guide, estimator=estimator, hyper=hyper) if single else None
    models = [program or model] if single else list(model)
    if not models:
        raise ValueError("model must be a model or a non-empty sequence of models")
    if not single and any(as_program(m) is not None for m in models if not isinstance(m, LatentVariableModel)):
        raise ValueError("a sequence of models must hold the suite's models; a user's program trains one at a time: "
                         "fit(model, guide, data)")
    if program is not None:
        data = as_bundle(data)
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
    kl_every = None if kl_every is None else check_int_range("kl_every", kl_every, 0)
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
    test_rows = None
    if test_fraction > 0.0:
        data, held_out = train_test_split(data, test_fraction, seed=split_seed)
        test_rows = held_out.attrs["holdout"]["test_rows_sha256"]
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
    kl_every = kl_history.kl_every_default(total_steps) if kl_every is None else kl_every
    train_options = {
        "steps": total_steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "lr_decay": lr_decay, "clip_norm": clip_norm, "seeds": list(seeds), "checkpoint_every": checkpoint_every,
        "test_fraction": test_fraction, "split_seed": split_seed, "n_rows": n_rows, "n_train": bundle.n,
        "n_test": n_rows - bundle.n, "test_rows_sha256": test_rows, "estimator": estimator_name(estimators),
        "site_estimators": estimators,
        "n_configs": n_configs, "engine": "one model" if n_configs == 1 else "configs plate", "jit": bool(jit),
        "kl_every": kl_every, **({"data_source": bundle.attrs["source"]} if "source" in bundle.attrs else {}),
        **(provenance or {}),
    }
    opt = _make_optimizer(optimizer, trainee.parameters, lr, clip_norm)
    loss_fn = TracedLoss(trainee.module, trainee.parameters, estimators=estimators, free_bits=floors or None,
                         noise=noise, jit=jit, row_dim=0 if trainee.program else -2)

    with _claimed(run_dir):
        history: list[np.ndarray] = []
        kl_steps: list[int] = []
        kl_records: list[dict[str, torch.Tensor]] = []
        stopped = torch.zeros(n_configs, dtype=torch.bool, device=torch_device)
        diverged: dict[int, int] = {}
        start_step, last_checkpoint = 0, None
        configs = [m.config.to_dict() for m in models]
        if run_dir is not None:
            run_dir = prepare_run_dir(run_dir, overwrite=overwrite, resume=resume, layout=runs.RUN_FILES)
        if resume:
            path = run_dir / CHECKPOINT_NAME
            state = load_checkpoint(path)
            check_state(state, path, trainee.module, keys=FIT_KEYS)  # before anything is removed
            _check_resumable(state, configs, train_options)
            train_options["resumed"] = [*state["train"].get("resumed", []),
                                        {"from_step": int(state["step"]), "steps": total_steps}]
            try:
                trainee.module.load_state_dict(state["model_state"])
                opt.load_state_dict(state["optimizer_state"])
                sampler.load_state_dict(state["sampler_state"])
                noise.load_state_dict(state["noise_state"])
                history = list(state["loss_history"].numpy())
                stopped = state["stopped"].to(torch_device)
                diverged = {int(k): int(v) for k, v in state["diverged"].items()}
            except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
                raise CheckpointError(f"checkpoint {path} cannot be resumed: {type(err).__name__}: "
                                      f"{' '.join(str(err).split())[:200]}") from None
            start_step = last_checkpoint = int(state["step"])
            kl_steps = [int(s) for s in state.get("kl_steps", torch.zeros(0, dtype=torch.int64)).tolist()]
            saved_kl = state.get("kl_history", {})
            kl_records = [{site: values[i].to(torch_device) for site, values in saved_kl.items()}
                          for i in range(len(kl_steps))]
            if trainee.program and "global_rng" in state:
                torch.set_rng_state(state["global_rng"])  # a program's own draws (e.g. subsample plates)
            runs.clear_results(run_dir)  # they describe the old end; rewritten when this run ends
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
                "kl_steps": torch.as_tensor(kl_steps, dtype=torch.int64),
                "kl_history": {site: torch.stack([r[site] for r in kl_records]).cpu()
                               for site in (kl_records[0] if kl_records else {})},
                **({"global_rng": torch.get_rng_state()} if trainee.program else {}),
            })

        # A short run computes the KL at every step (its record outputs it; a few small kernels a step)
        # rather than pay for a second record of the loss for the steps that keep it.
        kl_each_step = kl_history.kl_at_every_step(kl_every, total_steps - start_step)
        # a user's program is not judged: its readout (KL of a suite model on probe rows) does not apply
        watch = set(convergence.snapshot_steps(total_steps, start_step) if not trainee.program else ())
        initial = convergence.parameter_copy(trainee.parameters)  # a frozen model is never settled
        snapshots: list[list] = []
        bar = _progress_bar(progress, start_step, total_steps, n_configs)
        kl_weights = StepWeights(schedules)  # the schedules' weights a block of steps at a time
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
                multipliers = kl_weights.at(step)
                record_kl = kl_history.is_record_step(step + 1, kl_every, total_steps)
                kl_out = {} if record_kl or kl_each_step else None
                losses = loss_fn(batch, multipliers, kl_out) if kl_out is not None else loss_fn(batch, multipliers)
                if record_kl:
                    kl_steps.append(step + 1)
                    kl_records.append(kl_out)
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
        kl = (kl_history.as_dataset(kl_steps, kl_history.stack_records(kl_records), single, diverged)
              if kl_every > 0 else None)
        result = FitResult(models=tuple(models), loss=loss, final_loss=float(final[0]) if single else final,
                           steps=len(history_array), wall_time=wall_time, device=str(torch_device), run_dir=run_dir,
                           diverged=diverged, provenance=train_options, convergence=verdicts, kl_history=kl)
        if run_dir is not None:
            runs.write_results(run_dir, result, bundle)
        return result


def _claimed(run_dir: str | Path | None):
    """The claim on ``run_dir`` (:func:`ppl_vae._lock.claim_output`) for the run's duration; none without one."""
    if run_dir is None:
        return contextlib.nullcontext()
    return claim_output(check_path(run_dir, "run_dir"), "training")


def _unregistered(module):
    """Skip a suite model's Pyro param-store registration (a batched model has none)."""
    return module.unregistered() if hasattr(module, "unregistered") else contextlib.nullcontext()


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
