"""Run the analysis scripts of ``analyses/`` and collect their verdicts.

The scientific code lives in the scripts (each runnable on its own as
``python analyses/<name>.py --quick --out DIR``); this module only finds them,
imports each one's ``main(argv)``, times it, and turns an exception into a
failed entry of the summary instead of a crash of the whole job. The scripts run
one after another in this process, or ``jobs`` at once in worker processes
(:mod:`ppl_vae.reproduce.workers`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from tqdm.auto import tqdm

from ppl_vae._io import atomic_write_json, check_path, prepare_run_dir
from ppl_vae._lock import claim_output
from ppl_vae._validate import check_int_range
from ppl_vae.reproduce.analysis import MissingDataError, mnist_available
from ppl_vae.reproduce.outputs import ClaimCheck, read_claim
from ppl_vae.reproduce.settings import Settings
from ppl_vae.reproduce.workers import default_jobs, expected_steps, run_in_workers

#: The experiments of SPEC section 6, in the paper's order: script stem -> what it shows.
EXPERIMENTS: dict[str, str] = {
    "theorem_checks": "6.1 linear CVAE / MHVAE / VAE trained by SVI against the closed forms",
    "cvae_linear_quadrant_beta": "6.2 linear CVAE on the quadrant split: theory vs learned singular values over beta",
    "cvae_mlp_beta_eta": "6.3 ReLU MLP CVAE: collapse, KL, AU and NLL over beta and eta_dec",
    "cvae_completions": "6.3 ReLU MLP CVAE: completions of held-out quadrant inputs over beta and eta_dec (spread "
                        "across prior draws, posterior reconstruction error)",
    "correlation_levels": "6.4 input-output correlation (synthetic): stronger correlation, more collapse",
    "collapse_per_class": "6.5 collapse level per digit class against its x-y correlation",
    "mhvae_beta1_beta2": "6.6 ReLU MLP MHVAE (sigma1 fixed): collapse of z2 over beta1 and beta2, the eta_enc sweep",
    "mhvae_beta_eta_grid": "6.6 (appendix table) ReLU MLP MHVAE: held-out NLL, KL and active units over beta1, beta2 "
                           "and eta_dec",
    "mhvae_reconstruction_grid": "6.6 CNN MHVAE: reconstructions through z2 over beta1 x beta2 (the figure grid), z2 "
                                 "collapse and top-down error along its edges",
    "vae_fixed_vs_learnable_variance": "6.7 VAE with learnable vs fixed encoder variance",
    "mitigations": "6.8 derived predictions, not an experiment of the paper: decorrelated CVAE input, MHVAE skip "
                   "path x -> z2 (learned prior reported)",
    "kl_schedules_free_bits": "derived: KL warm-up, cyclical annealing and free bits against the linear theory",
}

#: Experiments on synthetic data only; every other one reads images (MNIST in full mode).
SYNTHETIC_ONLY = ("theorem_checks", "correlation_levels")

SUMMARY = "summary.json"
#: The settings of the job that writes a results folder (checked before a resume reuses it).
JOB = "job.json"


@dataclasses.dataclass(frozen=True)
class ExperimentOutcome:
    """How one experiment of a reproduce job went.

    ``status`` is ``'agrees'``, ``'disagrees'`` (it ran; the numbers do not
    support the paper's claim), ``'not converged'`` (a run behind the verdict
    did not converge: no verdict, :mod:`ppl_vae.reproduce.gate`) or
    ``'failed'`` (it raised; ``error`` says why).
    """

    name: str
    status: str
    seconds: float
    check: ClaimCheck | None = None
    error: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2),
                "check": None if self.check is None else self.check.to_dict(), "error": self.error}


def default_analyses_dir() -> Path:
    """``analyses/`` next to the package source (an editable install or a source checkout)."""
    import ppl_vae

    return Path(ppl_vae.__file__).resolve().parent.parent / "analyses"


def find_analyses_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding the analysis scripts.

    Raises
    ------
    FileNotFoundError
        It does not exist or holds none of the scripts (e.g. a wheel install
        without the repository: pass the checkout's ``analyses`` folder).
    """
    directory = Path(explicit) if explicit is not None else default_analyses_dir()
    if not directory.is_dir() or not any((directory / f"{name}.py").is_file() for name in EXPERIMENTS):
        raise FileNotFoundError(
            f"no analysis scripts in {directory}: `ppl-vae reproduce` runs the scripts of the repository's "
            "analyses/ folder; install the package from a source checkout (pip install -e .) or pass "
            "--analyses-dir PATH/TO/analyses"
        )
    return directory


def load_script(name: str, analyses_dir: str | Path) -> ModuleType:
    """Import ``analyses_dir/<name>.py`` as a module (without touching ``sys.path``)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"name must be one of {', '.join(map(repr, EXPERIMENTS))}, got {name!r}")
    path = Path(analyses_dir) / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"analysis script {path} is missing")
    spec = importlib.util.spec_from_file_location(f"ppl_vae_analyses.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise AttributeError(f"analysis script {path} defines no main(argv)")
    return module


def check_names(names: Sequence[str] | None) -> list[str]:
    """``names`` validated and in the paper's order; None or empty: every experiment."""
    if not names:
        return list(EXPERIMENTS)
    unknown = sorted(set(names) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(EXPERIMENTS)}")
    return [name for name in EXPERIMENTS if name in set(names)]


def run_one(name: str, settings: Settings, analyses_dir: str | Path) -> ExperimentOutcome:
    """Run one script's ``main`` with ``settings``; an exception becomes a failed outcome."""
    start = time.perf_counter()
    try:
        module = load_script(name, analyses_dir)
        check = module.main(settings.to_argv())
        if not isinstance(check, ClaimCheck):
            check = read_claim(settings.out / name)
        if check is None:
            raise RuntimeError(f"{name}.main returned no ClaimCheck and wrote no claim.json")
        return ExperimentOutcome(name, check.status, time.perf_counter() - start, check=check)
    except Exception as err:  # noqa: BLE001 - one experiment's failure must not stop the others
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        trace = traceback.format_exc(limit=-4)
        return ExperimentOutcome(name, "failed", time.perf_counter() - start, error=f"{detail}\n\n{trace}")


def job_settings(settings: Settings) -> dict:
    """What must match for a resumed job to reuse an experiment's results (:data:`JOB`)."""
    record = {"scale": settings.scale, "seed": settings.seed, "seeds": settings.n_seeds,
              "max_steps": settings.max_steps, "objective": settings.objective}
    # Named only when set, so that a job recorded before the cap existed still resumes.
    return record if settings.max_draws is None else record | {"max_draws": settings.max_draws}


def _resumable(settings: Settings) -> None:
    """Refuse to resume into a folder written by a job with other settings (never mix two runs' files)."""
    import json

    path = settings.out / JOB
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} is missing (not a reproduce results folder, or from a "
                                "version without resume); start a new folder")
    saved = json.loads(path.read_text())
    if saved != job_settings(settings):
        raise ValueError(f"cannot resume: the results folder was written with {saved}, this job has "
                         f"{job_settings(settings)}; use the same options or a new folder")


def _finished(settings: Settings, name: str) -> ExperimentOutcome | None:
    """The outcome of an experiment a resumed job already finished (its claim.json), else None."""
    check = read_claim(settings.out / name)
    return None if check is None else ExperimentOutcome(name, check.status, 0.0, check=check)


def run_experiments(settings: Settings, names: Sequence[str] | None = None, *,
                    analyses_dir: str | Path | None = None, progress: bool = True,
                    finish: Callable[[list[ExperimentOutcome]], None] | None = None,
                    resume: bool = False, jobs: int | None = 1) -> list[ExperimentOutcome]:
    """Run the experiments into ``settings.out`` and write ``summary.json`` there.

    Parameters
    ----------
    settings
        Scale, results root, seed, device, MNIST folder, overwrite.
    names
        Experiments to run (default: all, see :data:`EXPERIMENTS`).
    analyses_dir
        Folder of the scripts (default: :func:`default_analyses_dir`).
    progress
        A tqdm bar over experiments, with each one's time.
    finish
        Called with the outcomes while the results folder is still claimed (the
        command line writes ``index.html`` and ``RESULTS.md`` there).
    resume
        Continue a job in ``settings.out`` started with the same settings
        (:data:`JOB`): an experiment that wrote its ``claim.json`` is read back
        (time 0), the others (never started, or interrupted) run again into
        their own folders. Full mode runs for hours: it resumes per experiment.
    jobs
        Experiments run at once, each in a process of its own with an equal
        share of this process's torch threads (:mod:`ppl_vae.reproduce.workers`);
        None: one per core at the tiny and quick scales, one at the full scale.
        1 runs them one after another in this process.

    Raises
    ------
    MissingDataError
        Full scale, an image experiment selected and no MNIST files (checked first).
    ppl_vae._io.RunDirectoryExistsError
        ``settings.out`` is not empty and ``settings.overwrite`` is False
        (checked before anything runs).
    ppl_vae._lock.OutputInUseError
        Another process is writing to ``settings.out`` (the folder is claimed for the whole job).
    """
    names = check_names(names)
    jobs = default_jobs(settings) if jobs is None else check_int_range("jobs", jobs, 1)
    directory = find_analyses_dir(analyses_dir)
    needs_mnist = [name for name in names if name not in SYNTHETIC_ONLY]
    if settings.scale == "full" and needs_mnist and not mnist_available(settings.mnist_dir):
        raise MissingDataError(
            f"full mode runs {', '.join(needs_mnist)} on MNIST, whose IDX files are not in {settings.mnist_dir} "
            "(nothing is downloaded): place them there, pass --mnist-dir, or run with --quick (bundled data)"
        )
    with claim_output(check_path(settings.out, "the results folder"), "ppl-vae reproduce"):
        if resume:
            prepare_run_dir(settings.out, resume=True)
            _resumable(settings)
        else:
            prepare_run_dir(settings.out, overwrite=settings.overwrite, hint="pass --overwrite to reuse it")
            atomic_write_json(settings.out / JOB, job_settings(settings))
        rerun = dataclasses.replace(settings, overwrite=True) if resume else settings  # an interrupted folder
        kept = {name: outcome for name in names if resume and (outcome := _finished(settings, name))}
        todo = [name for name in names if name not in kept]
        jobs = min(jobs, len(todo) or 1)
        bar = tqdm(total=len(names), initial=len(kept), desc="reproduce", unit="experiment", disable=not progress)
        if jobs == 1:
            ran = {name: _run_logged(name, rerun, directory, bar) for name in todo}
        else:
            ran = _run_parallel(todo, rerun, directory, jobs, bar)
        bar.close()
        outcomes = [kept[name] if name in kept else ran[name] for name in names]
        atomic_write_json(settings.out / SUMMARY, {"scale": settings.scale, "seed": settings.seed,
                                                    "seeds": settings.seeds,
                                                    "device": settings.device,
                                                    "experiments": [o.to_dict() for o in outcomes]})
        if finish is not None:
            finish(outcomes)
    return outcomes


def _run_logged(name: str, settings: Settings, directory: Path, bar) -> ExperimentOutcome:
    """:func:`run_one`, its name on the progress bar and its status written under it."""
    bar.set_postfix_str(name)
    outcome = run_one(name, settings, directory)
    _log(outcome, bar)
    return outcome


def _log(outcome: ExperimentOutcome, bar) -> None:
    bar.write(f"{outcome.name}: {outcome.status} in {outcome.seconds:.1f} s"
              + (f" ({outcome.error.splitlines()[0]})" if outcome.error else ""))
    bar.update(1)


def _run_parallel(names: Sequence[str], settings: Settings, directory: Path, jobs: int,
                  bar) -> dict[str, ExperimentOutcome]:
    """:func:`run_one` of every name in worker processes, ``jobs`` at once, the longest first."""
    import torch

    cost = expected_steps(settings, names, directory)
    order = sorted(names, key=lambda name: -cost[name])  # stable: ties keep the paper's order
    threads = max(1, torch.get_num_threads() // jobs)
    bar.write(f"{jobs} experiments at once, {threads} torch thread(s) each, the longest first")
    return run_in_workers(run_one, order, settings, directory, jobs=jobs, threads=threads,
                          crashed=lambda name, why: ExperimentOutcome(name, "failed", 0.0, error=why),
                          done=lambda outcome: _log(outcome, bar),
                          running_now=lambda names: bar.set_postfix_str(", ".join(names)))
