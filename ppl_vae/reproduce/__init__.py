"""Reproduce the paper's experiments (SPEC section 6): the machinery behind ``ppl-vae reproduce``.

The experiments themselves are the scripts of the repository's ``analyses/``
folder; each parses :func:`parse_settings`, writes through
:class:`ExperimentOutput` and returns a :class:`ClaimCheck`.
:func:`run_experiments` runs them (side by side in worker processes on a machine
with several cores, :mod:`ppl_vae.reproduce.workers`) and :func:`write_index`
writes the one-page report.

Convergence gate.  Every run a verdict uses carries ``fit``'s convergence record
(parameters moved from their initial values; loss and per-dimension KL stable
over the last fifth of the steps): a verdict is "agrees", "disagrees" or "not
converged" (:mod:`ppl_vae.reproduce.gate`), never a verdict on unconverged runs.
The learning-rate decay is stated per run (``final_lr_fraction``) and rescaled
to whatever steps an experiment or ``--max-steps`` sets (:func:`fit_options`).

Objective.  The authors' ReLU scripts (e.g. ``MNIST_CVAE_Relu.py``) minimise
``||y - mu||^2 / eta_dec^2 + beta * KL`` with the KL summed with its 1/2 and
clip the gradient norm at 0.01. Up to constants that is twice the standard
negative ELBO at a KL weight of ``beta / 2``, so the paper's non-linear
experiments carry half the KL weight their "beta" reads as in the standard
ELBO. Their linear scripts use the standard weight. ``--objective authors``
trains the non-linear experiments that way (:func:`authors_objective`: KL
weights halved, clip 0.005 on the standard per-sample loss, the tables keep the
authors' beta); the default, ``standard``, trains every experiment on the
beta-ELBO. RESULTS.md states which one a job used.
"""

from ppl_vae.reproduce.analysis import (
    MissingDataError,
    RunCollector,
    authors_objective,
    collapse_table,
    combine_runs,
    diagnose_runs,
    diagnose_options,
    diagnose_sweep,
    fit_options,
    image_data,
    mlp_schedule,
    mhvae_theory_counts,
    mnist_available,
    quick_overrides,
    relative_error_above_floor,
    replicates,
    run_name,
    run_replicates,
    select_runs,
    subsample,
    training_options,
)
from ppl_vae.reproduce import gate
from ppl_vae.reproduce.figures import seed_trends, series
from ppl_vae.reproduce.outputs import ClaimCheck, ExperimentOutput, read_claim, read_manifest
from ppl_vae.reproduce.report import write_index
from ppl_vae.reproduce.runner import (
    EXPERIMENTS,
    ExperimentOutcome,
    check_names,
    default_analyses_dir,
    find_analyses_dir,
    load_script,
    run_experiments,
    run_one,
)
from ppl_vae.reproduce.verdicts import (Check, Verdict, allowance, bound_check, close_check, order_check,
                                       seed_summary, spearman_check, trend_checks)
from ppl_vae.reproduce.settings import (SCALES, Settings, compute_threads, experiment_parser, image_batch_threads,
                                       parse_settings,
                                       run_script)

__all__ = [
    "EXPERIMENTS", "SCALES", "gate", "fit_options", "authors_objective", "ClaimCheck", "ExperimentOutcome", "ExperimentOutput", "MissingDataError", "RunCollector",
    "Settings",
    "check_names", "collapse_table", "compute_threads", "image_batch_threads", "mhvae_theory_counts", "quick_overrides", "default_analyses_dir", "diagnose_options", "diagnose_sweep",
    "experiment_parser", "find_analyses_dir", "image_data", "load_script", "mnist_available",
    "run_script", "relative_error_above_floor", "combine_runs", "diagnose_runs", "replicates", "run_replicates", "Check", "Verdict", "allowance", "bound_check", "close_check",
    "order_check", "seed_summary", "spearman_check", "trend_checks",
    "parse_settings", "read_claim", "read_manifest", "run_experiments", "run_name", "run_one", "select_runs",
    "seed_trends", "series", "subsample", "training_options", "write_index", "mlp_schedule",
]
