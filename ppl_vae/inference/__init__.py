"""The training engine: SVI of K >= 1 configurations, checkpoints and run directories.

>>> result = fit(model, bundle, steps=3000, lr=0.02, lr_decay=0.999, run_dir="runs/demo")
>>> result = fit([model_a, model_b], bundle, steps=3000, seed=[0, 1])     # one run, two configurations
>>> model, bundle, info = load_run("runs/demo")
>>> result = fit(my_model, my_guide, x, steps=3000, run_dir="runs/mine")  # a user's Pyro program, x (n, ...)
>>> load_program_state("runs/mine", my_model, my_guide, x)                 # its trained parameters, back

- :mod:`~ppl_vae.inference.trainer`: :func:`fit`, the one training loop.
- :mod:`~ppl_vae.inference.elbo`: the one ELBO (per configuration, from Pyro traces, Pyro's semantics).
- :mod:`~ppl_vae.inference.program`: a user's model / guide pair as the engine trains it.
- :mod:`~ppl_vae.inference.traced`: the loss recorded once per batch shape, checked before it is used.
- :mod:`~ppl_vae.inference.kl_history`: the per-dimension KL history a fit records.
- :mod:`~ppl_vae.inference.randomness`: per-configuration batch order and noise.
- :mod:`~ppl_vae.inference.batched` / :mod:`~ppl_vae.inference.layers`: K models as one.
"""

from __future__ import annotations

from ppl_vae.inference.batched import BatchedConfig, BatchedModel, can_vectorise, clip_per_config_
from ppl_vae.inference.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ppl_vae.inference.elbo import elbo_loss, elbo_terms, estimator_name, per_config_loss, site_estimators
from ppl_vae.inference.kl_history import COLLAPSE_EPSILON
from ppl_vae.inference.layers import BatchedLinear, UnsupportedLayerError, is_stackable, stack_modules, unstack_into
from ppl_vae.inference.program import Program, as_bundle, as_program, check_program, load_program_state
from ppl_vae.inference.randomness import ConfigBatches, ConfigNoise
from ppl_vae.inference.runs import CONFIG_NAME, KL_HISTORY_NAME, LOSS_NAME, METRICS_NAME, linear_theory_metrics, load_run
from ppl_vae.inference.trainer import OPTIMIZERS, FitResult, TrainingDivergedError, fit

__all__ = [
    "BatchedConfig", "BatchedLinear", "BatchedModel", "CHECKPOINT_NAME", "COLLAPSE_EPSILON", "CONFIG_NAME",
    "ConfigBatches", "ConfigNoise", "FitResult", "KL_HISTORY_NAME", "LOSS_NAME", "METRICS_NAME", "OPTIMIZERS",
    "Program", "TrainingDivergedError", "UnsupportedLayerError", "as_bundle", "as_program", "can_vectorise",
    "check_program", "clip_per_config_", "elbo_loss", "elbo_terms", "estimator_name", "fit", "is_stackable",
    "linear_theory_metrics", "load_checkpoint", "load_program_state", "load_run", "per_config_loss",
    "save_checkpoint", "site_estimators", "stack_modules", "unstack_into",
]
