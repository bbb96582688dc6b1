"""``ppl-vae train|sweep --program PATH.py:build``: train and sweep a user's own Pyro program.

The program file is imported (its code runs, as ``python PATH.py`` would) and
``build(**settings)`` returns the model and guide (:mod:`ppl_vae.models.program`).
A run directory of a program holds what a suite model's holds (``config.json``
with the program's path, builder and SHA-256 under ``train.program``,
``checkpoint.pt``, ``loss_history.nc``, ``kl_history.nc``, ``metrics.json``)
plus ``diagnostics.nc``, the held-out diagnostics written right after training:
the report reads those and never imports the program again.

A sweep of a program trains its configurations one after another (a user's
program is not batched across configurations), each in its own run directory
under ``OUT/runs/``; ``OUT/combined.nc`` stacks their diagnostics along ``run``
as a suite sweep's does. Rerunning skips finished runs and refuses a changed
program file or other settings.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

#: Held-out diagnostics of a program's run (importance samples of the held-out NLL).
PROGRAM_IW_SAMPLES = 100
PROGRAM_SPEC_NAME = "program_sweep.json"


def program_options(func):
    """Attach ``--program`` and ``--set`` (shared by train and sweep)."""
    func = click.option("--set", "settings", multiple=True, metavar="NAME=V[,V...]",
                        help="With --program: a keyword argument of the builder; train takes one value, sweep a "
                             "comma-separated list (the grid is their product). Numbers, true/false, else text.")(func)
    return click.option("--program", default=None, metavar="PATH.py[:build]",
                        help="Train your own Pyro program: PATH.py's function (default build) is called with the "
                             "--set values and returns (model, guide) or an object with .model/.guide. LOADING "
                             "THE FILE RUNS ITS CODE: name only files you trust. Model options (--model, --arch, "
                             "--beta, ...) do not apply.")(func)


def takes_pairs(model) -> bool:
    """Whether the program's model takes ``(x, y)`` (CVAE pairs) rather than ``x``."""
    parameters = [p for p in inspect.signature(model).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(parameters) not in (1, 2):
        raise click.UsageError(f"the program's model takes {len(parameters)} data arguments; it must take x, or "
                               "x and y (CVAE pairs)")
    return len(parameters) == 2


def _built(ref, builder, hyper: Mapping[str, Any], seed: int):
    """The program built with ``hyper``, its weights drawn from ``seed``; ``(source, model, guide)``."""
    import pyro
    import torch

    from ppl_vae.models.program import build_program

    pyro.clear_param_store()  # each run starts from its own parameters
    torch.manual_seed(seed)
    return build_program(builder, dict(hyper), ref.label)


def _fit_and_diagnose(source, model, guide, bundle, run_dir: Path, *, ref, hyper: Mapping[str, Any],
                      fit_options: Mapping[str, Any], progress: bool, resume: bool = False, overwrite: bool = False):
    """Train the program into ``run_dir``, then diagnose it on the held-out rows into ``diagnostics.nc``."""
    from ppl_vae.diagnostics import diagnose, save
    from ppl_vae.inference import fit
    from ppl_vae.inference.runs import DIAGNOSTICS_NAME
    from ppl_vae.data.holdout import held_out_split

    target = (source, None) if source is not None else (model, guide)
    result = fit(*target, bundle, run_dir=run_dir, hyper=dict(hyper), provenance={"program": ref.to_dict()},
                 progress=progress, resume=resume, overwrite=overwrite, **fit_options)
    train, test = held_out_split(bundle, fit_options)
    idata = diagnose(model, guide, train, test_data=test, iw_samples=PROGRAM_IW_SAMPLES,
                     seed=int(fit_options.get("seed", 0)), data_spec=bundle.attrs.get("spec"), progress=False,
                     converged=result.convergence[0] if result.convergence else None)
    idata.attrs["program"] = ref.label
    save(idata, run_dir / DIAGNOSTICS_NAME)
    return result, idata


def _check_resumed_program(run_dir: Path, ref) -> None:
    """Refuse to resume a program's run with a program file other than the one it was trained with."""
    from ppl_vae._io import read_json
    from ppl_vae.inference.runs import CONFIG_NAME

    saved = ((read_json(run_dir / CONFIG_NAME).get("train") or {}).get("program") or {})
    if saved.get("sha256") != ref.sha256:
        raise click.UsageError(f"{run_dir} was trained with program {saved.get('path', '?')} (SHA-256 "
                               f"{str(saved.get('sha256'))[:12]}...); {ref.path} has SHA-256 {ref.sha256[:12]}...: "
                               "a changed program cannot resume the run")


def train_program(*, program: str, settings: Sequence[str], load, run_dir: Path, fit_options: dict[str, Any],
                  resume: bool, overwrite: bool, progress: bool) -> list[str]:
    """``ppl-vae train --program``: one run of a program; returns the summary lines.

    ``load(paired)`` loads the data the command's options name.
    """
    from ppl_vae.models.program import ProgramError, load_builder, parse_program, settings_grid
    from ppl_vae.report.summary import headline

    try:
        ref = parse_program(program)
        grid = settings_grid(list(settings))
        several = [name for name, values in grid.items() if len(values) > 1]
        if several:
            raise ProgramError(f"train takes one value per --set ({', '.join(several)} has several); sweep a grid "
                               "with ppl-vae sweep --program")
        hyper = {name: values[0] for name, values in grid.items()}
        if resume:
            _check_resumed_program(run_dir, ref)
        source, model, guide = _built(ref, load_builder(ref), hyper, int(fit_options.get("seed", 0)))
    except ProgramError as err:
        raise click.UsageError(str(err)) from None
    bundle = load(takes_pairs(model))
    result, idata = _fit_and_diagnose(source, model, guide, bundle, run_dir, ref=ref, hyper=hyper,
                                      fit_options=fit_options, progress=progress, resume=resume,
                                      overwrite=overwrite)
    return [f"{ref.label} {hyper}", f"final loss {result.final_loss:.6g} nats/sample after {result.steps} steps "
            f"({result.wall_time:.1f} s on {result.device})", headline(idata), f"run directory: {run_dir}"]


def program_run_name(hyper: Mapping[str, Any], seed: int) -> str:
    """``beta=0.5_latent_dim=8_seed=0``: a run's directory name from its settings."""
    from ppl_vae.sweep.spec import run_name

    return run_name({**hyper, "seed": seed})


def sweep_program(*, program: str, settings: Sequence[str], seeds: Sequence[int], load, out: Path,
                  fit_options: dict[str, Any], overwrite: bool, echo) -> tuple[int, int, int, float]:
    """``ppl-vae sweep --program``: every grid point x seed, one after another; ``(finished, skipped, failed, s)``.

    The sweep directory is claimed for the whole invocation; ``program_sweep.json``
    records the program (path, builder, SHA-256), the grid, the seeds and the
    training options, and a rerun with anything else is refused.
    """
    from ppl_vae._io import atomic_write_json, read_json
    from ppl_vae._lock import LOCK_NAME, claim_output
    from ppl_vae.diagnostics import combine, load as load_idata, save
    from ppl_vae.inference.runs import DIAGNOSTICS_NAME, METRICS_NAME
    from ppl_vae.models.program import ProgramError, load_builder, parse_program, settings_grid
    from ppl_vae.sweep.store import COMBINED_NAME, ERROR_NAME, RUNS_DIR
    from ppl_vae.sweep.tasks import error_record

    started = time.perf_counter()
    try:
        ref = parse_program(program)
        grid = settings_grid(list(settings))
        builder = load_builder(ref)
    except ProgramError as err:
        raise click.UsageError(str(err)) from None
    record = {"program": ref.to_dict(), "grid": {k: list(v) for k, v in grid.items()}, "seeds": list(seeds),
              "train": dict(fit_options)}
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    runs = [(hyper, seed, program_run_name(hyper, seed)) for hyper in points for seed in seeds]
    finished = skipped = failed = 0
    with claim_output(out, "ppl-vae sweep"):
        spec_path = out / PROGRAM_SPEC_NAME
        if spec_path.is_file() and not overwrite and read_json(spec_path) != record:
            raise click.UsageError(f"{out} holds a sweep of other settings or another program file "
                                   f"({spec_path}); use another --out, or --overwrite to start it again")
        if not spec_path.is_file() and any(p.name != LOCK_NAME for p in out.iterdir()) and not overwrite:
            raise click.UsageError(f"{out} is not empty and holds no program sweep; use another --out")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(spec_path, record)
        bundle = None
        idatas, names = [], []
        for hyper, seed, name in runs:
            run_dir = out / RUNS_DIR / name
            if (run_dir / METRICS_NAME).is_file() and (run_dir / DIAGNOSTICS_NAME).is_file() and not overwrite:
                skipped += 1
                idatas.append(load_idata(run_dir / DIAGNOSTICS_NAME))
                names.append(name)
                continue
            try:
                source, model, guide = _built(ref, builder, hyper, seed)
                if bundle is None:
                    bundle = load(takes_pairs(model))
                _, idata = _fit_and_diagnose(source, model, guide, bundle, run_dir, ref=ref, hyper=hyper,
                                             fit_options={**fit_options, "seed": seed, "split_seed": 0},
                                             progress=False, overwrite=run_dir.exists())
            except (ProgramError, ValueError, RuntimeError) as err:
                failed += 1
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(run_dir / ERROR_NAME, error_record(err))
                if echo is not None:
                    echo(f"{name}: failed: {err}")
                continue
            finished += 1
            idatas.append(idata)
            names.append(name)
            if echo is not None:
                echo(f"{name}: finished")
        if idatas:
            save(combine(idatas, names), out / COMBINED_NAME)
    return finished, skipped, failed, time.perf_counter() - started
