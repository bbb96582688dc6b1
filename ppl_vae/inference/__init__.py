"""SVI training of the model/guide pairs, checkpoints and run directories.

>>> result = fit(model, bundle, steps=3000, lr=0.02, lr_decay=0.999, run_dir="runs/demo")
>>> model, bundle, info = load_run("runs/demo")
"""

from __future__ import annotations

from ppl_vae.inference.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ppl_vae.inference.runs import CONFIG_NAME, LOSS_NAME, METRICS_NAME, linear_theory_metrics, load_run
from ppl_vae.inference.trainer import OPTIMIZERS, BatchSampler, FitResult, TrainingDivergedError, fit

__all__ = [
    "BatchSampler", "CHECKPOINT_NAME", "CONFIG_NAME", "FitResult", "LOSS_NAME", "METRICS_NAME", "OPTIMIZERS",
    "TrainingDivergedError", "fit", "linear_theory_metrics", "load_checkpoint", "load_run", "save_checkpoint",
]
