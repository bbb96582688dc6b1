"""Stochastic variational inference for the model/guide pairs of :mod:`ppl_vae.models`.

The loop is Pyro's ELBO used as a differentiable torch loss with a plain torch
optimiser (SPEC 7, "lighter pattern"): per step one ``differentiable_loss`` call,
``backward`` and ``optimizer.step``. Compared with ``pyro.infer.SVI`` it skips the
per-parameter ``pyro.optim`` wrappers and the per-step ``.item()`` host sync; the
loss is read back every ``SYNC_EVERY`` steps (progress bar, divergence check,
checkpoints). Data and parameters stay on one device, and minibatches are index
draws on that device from a seeded generator, one permutation per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
import xarray as xr
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.optim.clipped_adam import ClippedAdam

from ppl_vae._device import resolve_device
from ppl_vae._io import prepare_run_dir
from ppl_vae._validate import check_choice, check_int_range, check_positive
from ppl_vae.data import train_test_split
from ppl_vae.inference import runs
from ppl_vae.inference.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint, set_rng_state

OPTIMIZERS = ("adam", "clipped_adam")

#: Steps between host reads of the loss (progress bar, divergence check).
SYNC_EVERY = 50

#: Training options that must match when a run is resumed (``steps`` may grow).
RESUME_KEYS = ("batch_size", "lr", "optimizer", "lr_decay", "clip_norm", "seed", "test_fraction", "split_seed")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; ``step`` is the first step where it was seen."""

    def __init__(self, step: int, loss: float, run_dir: Path | None = None):
        self.step, self.loss, self.run_dir = step, loss, run_dir
        kept = f"; the last good checkpoint is kept in {run_dir}" if run_dir is not None else ""
        super().__init__(f"training diverged at step {step}: the loss is {loss}{kept}. "
                         "Try a smaller learning rate (--lr) or gradient clipping (--clip-norm).")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model
        The trained model (on ``device``).
    loss
        ``xr.DataArray`` over ``step``: per-sample negative beta-ELBO of the batch
        at each step (nats per sample), the whole run including resumed parts.
    final_loss
        Mean of ``loss`` over the last ``min(100, steps)`` steps.
    steps
        Steps done in total.
    wall_time
        Seconds spent in this call.
    device
        Device the model was trained on, e.g. ``'cpu'`` or ``'cuda:0'``.
    run_dir
        The run directory, or None.
    """

    model: Any
    loss: xr.DataArray
    final_loss: float
    steps: int
    wall_time: float
    device: str
    run_dir: Path | None = None


class BatchSampler:
    """Minibatches of row indices drawn on the device, a fresh permutation each epoch.

    ``batch_size=None`` (or >= n) gives the full data set at every step. The
    generator is seeded from ``seed``; :meth:`state_dict` holds its state and the
    current epoch's permutation so that a resumed run draws the same batches.
    """

    def __init__(self, n: int, batch_size: int | None, seed: int, device: torch.device):
        self.n = n
        self.batch_size = n if batch_size is None else min(batch_size, n)
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.device = device
        self.permutation: torch.Tensor | None = None

    @property
    def full_batch(self) -> bool:
        return self.batch_size == self.n

    def indices(self, step: int) -> torch.Tensor | None:
        """Row indices of the batch for ``step`` (None: all rows). Steps must come in order."""
        if self.full_batch:
            return None
        position = step % self.steps_per_epoch
        if position == 0 or self.permutation is None:
            self.permutation = torch.randperm(self.n, generator=self.generator, device=self.device)
        return self.permutation[position * self.batch_size:(position + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(),
                "permutation": None if self.permutation is None else self.permutation.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())
        permutation = state["permutation"]
        self.permutation = None if permutation is None else permutation.to(self.device)


def _total_steps(steps: int | None, epochs: int | None, steps_per_epoch: int) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps (>= 1) or epochs (>= 1)")
    if steps is not None:
        return check_int_range("steps", steps, 1)
    return check_int_range("epochs", epochs, 1) * steps_per_epoch


def _make_optimizer(name: str, parameters, lr: float, clip_norm: float | None) -> torch.optim.Optimizer:
    if name == "clipped_adam":
        # ClippedAdam clamps each gradient element to [-clip_norm, clip_norm] (Pyro's default 10).
        return ClippedAdam(parameters, lr=lr, clip_norm=10.0 if clip_norm is None else clip_norm)
    return torch.optim.Adam(parameters, lr=lr)


def _elbo_for(model) -> pyro.infer.ELBO:
    """TraceMeanField_ELBO (analytic KL) where the guide allows it, else Trace_ELBO (SPEC 7)."""
    return TraceMeanField_ELBO() if model.mean_field else Trace_ELBO()


def _loss_array(history: Sequence[float] | np.ndarray) -> xr.DataArray:
    values = np.asarray(history, dtype=np.float64)
    return xr.DataArray(values, dims="step", coords={"step": np.arange(values.size)}, name="loss",
                        attrs={"long_name": "negative beta-ELBO per sample", "units": "nats"})


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
    seed: int = 0,
    test_fraction: float = 0.0,
    split_seed: int = 0,
    device: str | torch.device = "auto",
    run_dir: str | Path | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, float, Any], None]] | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` by SVI; the loss is the per-sample negative beta-ELBO.

    Parameters
    ----------
    model
        A :class:`ppl_vae.models.LatentVariableModel` (moved to ``device`` in place).
    data
        A :class:`ppl_vae.data.DataBundle` whose ``tensors()`` the model takes.
    steps, epochs
        Length of training, exactly one of them; an epoch is ``ceil(n / batch_size)``
        steps. With ``resume`` they give the total, including steps already done.
    batch_size
        Rows per step; None: the full data set every step.
    lr, optimizer, lr_decay, clip_norm
        Adam learning rate; ``'adam'`` (torch) or ``'clipped_adam'`` (Pyro's,
        element-wise clipping at ``clip_norm``, default 10); per-step exponential
        decay, lr at step t = ``lr * lr_decay**t``; for ``'adam'`` a clip on the
        global gradient norm (None: no clipping).
    seed
        Seeds the ELBO's Monte Carlo draws (torch, Python, NumPy) and the batch order.
        Parameter initialisation happens in ``build_model``: seed before it.
    test_fraction, split_seed
        Hold out this fraction of ``data`` (``ppl_vae.data.train_test_split`` with
        ``split_seed``) and train on the rest; recorded in ``config.json`` so that
        diagnostics and reports evaluate on the held-out part. 0: train on everything.
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
        device; model config and the options in ``RESUME_KEYS`` must match.
    progress
        Show a tqdm progress bar with the running loss.
    callbacks
        Called as ``callback(step, loss, model)`` every ``SYNC_EVERY`` steps and at the end.

    Raises
    ------
    TrainingDivergedError
        The loss became NaN or infinite (the last good checkpoint is kept).
    ValueError
        A bad option (naming it and its allowed range).
    """
    batch_size = None if batch_size is None else check_int_range("batch_size", batch_size, 1)
    lr = check_positive("lr", lr)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    lr_decay = check_positive("lr_decay", lr_decay)
    if lr_decay > 1.0:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    clip_norm = None if clip_norm is None else check_positive("clip_norm", clip_norm)
    seed = check_int_range("seed", seed, 0)
    checkpoint_every = check_int_range("checkpoint_every", checkpoint_every, 1)
    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir")
    test_fraction = float(test_fraction)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    split_seed = check_int_range("split_seed", split_seed, 0)
    torch_device = resolve_device(device)

    model.check_data(data)
    if test_fraction > 0.0:
        data, _ = train_test_split(data, test_fraction, seed=split_seed)
    model.to(torch_device)
    bundle = data.to(torch_device)
    tensors = bundle.tensors()
    sampler = BatchSampler(bundle.n, batch_size, seed, torch_device)
    total_steps = _total_steps(steps, epochs, sampler.steps_per_epoch)
    train_options = {
        "steps": total_steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "lr_decay": lr_decay, "clip_norm": clip_norm, "seed": seed, "checkpoint_every": checkpoint_every,
        "test_fraction": test_fraction, "split_seed": split_seed, "n_train": bundle.n,
        "elbo": type(_elbo_for(model)).__name__,
    }
    opt = _make_optimizer(optimizer, model.parameters(), lr, clip_norm)
    elbo = _elbo_for(model)

    history: list[float] = []
    start_step = 0
    if run_dir is not None:
        run_dir = prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME)
        _check_resumable(state, model, train_options)
        model.load_state_dict(state["model_state"])
        opt.load_state_dict(state["optimizer_state"])
        sampler.load_state_dict(state["sampler_state"])
        set_rng_state(state["rng_state"], torch_device)
        history = [float(v) for v in state["loss_history"]]
        start_step = int(state["step"])
    else:
        pyro.set_rng_seed(seed)
    if run_dir is not None:
        runs.write_config(run_dir, model.config, bundle, train_options, seed, torch_device)

    def checkpoint(step: int) -> None:
        save_checkpoint(run_dir / CHECKPOINT_NAME, {
            "model_state": model.state_dict(), "optimizer_state": opt.state_dict(), "step": step,
            "loss_history": torch.tensor(history, dtype=torch.float64), "sampler_state": sampler.state_dict(),
            "rng_state": rng_state(torch_device), "config": model.config.to_dict(), "train": train_options,
        })

    bar = _progress_bar(progress, start_step, total_steps)
    pending: list[torch.Tensor] = []
    began = time.perf_counter()
    model.train()
    # Argument checks and param-store registration each cost more than a small model's step.
    with pyro.validation_enabled(False), model.unregistered():
        for step in range(start_step, total_steps):
            index = sampler.indices(step)
            batch = tensors if index is None else tuple(t[index] for t in tensors)
            for group in opt.param_groups:
                group["lr"] = lr * lr_decay**step
            opt.zero_grad(set_to_none=True)
            loss = elbo.differentiable_loss(model.model, model.guide, *batch) / batch[0].shape[0]
            loss.backward()
            if clip_norm is not None and optimizer == "adam":
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            pending.append(loss.detach())

            done = step + 1
            at_checkpoint = run_dir is not None and (done % checkpoint_every == 0 or done == total_steps)
            if done % SYNC_EVERY == 0 or at_checkpoint or done == total_steps:
                values = torch.stack(pending).cpu().double().numpy()
                pending.clear()
                first_bad = np.flatnonzero(~np.isfinite(values))
                if first_bad.size:
                    bad_step = done - values.size + int(first_bad[0])
                    raise TrainingDivergedError(bad_step, float(values[first_bad[0]]), run_dir)
                history.extend(values.tolist())
                if bar is not None:
                    bar.update(values.size)
                    bar.set_postfix(loss=f"{np.mean(values):.4g}")
                for callback in callbacks or ():
                    callback(done, float(values[-1]), model)
                if at_checkpoint:
                    checkpoint(done)
    if bar is not None:
        bar.close()
    wall_time = time.perf_counter() - began

    loss = _loss_array(history)
    final_loss = float(np.mean(history[-min(100, len(history)):])) if history else float("nan")
    result = FitResult(model=model, loss=loss, final_loss=final_loss, steps=len(history), wall_time=wall_time,
                       device=str(torch_device), run_dir=run_dir)
    if run_dir is not None:
        runs.write_results(run_dir, result, bundle)
    return result


def _check_resumable(state: dict[str, Any], model, train_options: dict[str, Any]) -> None:
    if state["config"] != model.config.to_dict():
        raise ValueError("cannot resume: the model config differs from the one in the checkpoint")
    changed = [key for key in RESUME_KEYS if state["train"].get(key) != train_options[key]]
    if changed:
        raise ValueError(f"cannot resume: training options {', '.join(changed)} differ from the checkpoint's")
    if train_options["steps"] < int(state["step"]):
        raise ValueError(f"cannot resume: steps={train_options['steps']} is fewer than the "
                         f"{int(state['step'])} steps already done")


def _progress_bar(progress: bool, start: int, total: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="SVI", unit="step", dynamic_ncols=True)
