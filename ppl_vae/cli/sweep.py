"""``ppl-vae sweep``: train a grid of configurations, resumably, locally or on Ray.

The grid comes from a spec file (``--spec sweep.yaml`` / ``.toml``) or from the
range options (``--beta 0.1,0.5,1,2 --eta-dec 0.5,1 --seeds 0-4``); range and
training options given on the command line override the file's. Rerunning
the same command resumes: finished configurations are skipped.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ppl_vae.cli._common import (DATA_HELP, INPUT_ERRORS, data_source, file_options, input_error, key_options,
                                  output_path, parse_int_list, threads_option)
from ppl_vae.cli._program import program_options

#: CLI option -> grid entry of the spec.
GRID_OPTIONS = {"beta": "beta", "eta_dec": "eta_dec", "eta_enc": "eta_enc", "beta1": "beta1", "beta2": "beta2",
                "latent_dim": "latent_dim", "seeds": "seed"}
#: Grid options that change the architecture: a single value is held fixed instead.
STRUCTURAL_OPTIONS = ("latent_dim",)
TRAIN_OPTIONS = ("steps", "epochs", "batch_size", "lr", "lr_decay", "optimizer", "clip_norm", "test_fraction", "jit")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


def spec_from_options(ctx: click.Context, params: dict[str, Any]):
    """The :class:`~ppl_vae.sweep.study.SweepSpec` of a spec file overridden by the options given."""
    from ppl_vae._validate import check_data_options_apply
    from ppl_vae.data import DATASETS
    from ppl_vae.sweep.study import SweepSpec, load_spec

    raw: dict[str, Any] = load_spec(params["spec"]).to_dict() if params["spec"] else {}
    for key in ("model", "arch"):
        if params[key] is not None:
            raw[key] = params[key]
    raw.setdefault("model", "cvae")
    raw.setdefault("arch", "linear")
    if params["data_name"] is not None or "data" not in raw:
        data: dict[str, Any] = {"name": params["data_name"] or "digits"}
        if data["name"] in DATASETS:  # options a built-in set does not take are refused, never ignored
            try:
                check_data_options_apply(data["name"], n_samples=params["n_samples"], dim=params["dim"])
            except ValueError as err:
                raise click.BadParameter(str(err)) from None
        data.update(file_options(data["name"], x_key=params["x_key"], y_key=params["y_key"],
                                 label_key=params["label_key"], image_shape=params["image_shape"],
                                 n_samples=params["n_samples"], dim=params["dim"]))
        if (data["name"] in ("digits", "mnist") or "image_shape" in data) and raw["model"] == "cvae":
            data["split"] = params["split"]
        if data["name"] == "synthetic":
            data.update({k: v for k, v in (("n", params["n_samples"]), ("dim", params["dim"])) if v is not None})
        raw["data"] = data
    model_options = dict(raw.get("model_options") or {})
    if params["hidden"] is not None:
        model_options["hidden_dims"] = list(params["hidden"])
    raw["model_options"] = model_options
    grid = dict(raw.get("grid") or {})
    for option, entry in GRID_OPTIONS.items():
        value = params[option]
        if value is None:
            continue
        if option in STRUCTURAL_OPTIONS and "," not in value and "-" not in value:
            try:
                model_options[entry] = int(value)  # one architecture: held fixed, not part of run names
            except ValueError:
                raise ValueError(f"--{option.replace('_', '-')} must be integers like '8' or '4,8', "
                                 f"got {value!r}") from None
            grid.pop(entry, None)
        else:
            grid[entry] = value
            model_options.pop(entry, None)
    raw["grid"] = grid
    train = dict(raw.get("train") or {})
    if params["steps"] is not None or params["epochs"] is not None:
        train.pop("steps", None)
        train.pop("epochs", None)
    for key in TRAIN_OPTIONS:
        if params[key] is not None and (_given(ctx, key) or key not in train):
            train[key] = params[key]
    raw["train"] = train
    diagnostics = dict(raw.get("diagnostics") or {})
    for name in ("iw_samples", "max_points"):
        if params[name] is not None:
            diagnostics[name] = params[name]
    raw["diagnostics"] = diagnostics
    execution = dict(raw.get("execution") or {})
    if params["address"] is not None and params["backend"] is None:
        execution["backend"] = "ray"  # an address only means something to Ray
    for key in ("backend", "address", "group_size", "num_cpus", "num_gpus", "max_retries", "device", "max_configs"):
        if params[key] is not None:
            execution[key] = params[key]
    raw["execution"] = execution
    return SweepSpec.from_dict(raw)


@click.command("sweep")
@program_options
@click.option("--spec", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Sweep spec file (.yaml, .yml, .toml or .json); options given here override it.")
@click.option("--model", type=click.Choice(["vae", "cvae", "mhvae"]), default=None, help="Model family [cvae].")
@click.option("--arch", type=click.Choice(["linear", "mlp", "cnn"]), default=None, help="Architecture [linear].")
@click.option("--data", "data_name", callback=data_source, default=None, help=f"{DATA_HELP} [digits]")
@key_options
@click.option("--split", type=click.Choice(["quadrant", "half"]), default="quadrant", show_default=True,
              help="CVAE image split.")
@click.option("--n-samples", type=int, default=None, help="Synthetic data: number of samples.")
@click.option("--dim", type=int, default=None, help="Synthetic data: dimension.")
@click.option("--beta", default=None, help="KL weights, e.g. '0.1,0.5,1,2'.")
@click.option("--eta-dec", default=None, help="Decoder stds, e.g. '0.5,1'.")
@click.option("--eta-enc", default=None, help="Prior stds.")
@click.option("--beta1", default=None, help="MHVAE z1 weights.")
@click.option("--beta2", default=None, help="MHVAE z2 weights.")
@click.option("--latent-dim", default=None, help="Latent dimensions, e.g. '8' or '4,8,16'.")
@click.option("--hidden", default=None, callback=parse_int_list, help="Hidden widths, e.g. '64,64'.")
@click.option("--seeds", default=None, help="Seeds: '0-4' (inclusive) or '0,3,7'.")
@click.option("--steps", type=int, default=None, help="Training steps per configuration (or --epochs).")
@click.option("--epochs", type=int, default=None, help="Training epochs per configuration (or --steps).")
@click.option("--batch-size", type=int, default=None, help="Minibatch size (default: full batch).")
@click.option("--lr", type=float, default=None, help="Adam learning rate [0.001].")
@click.option("--lr-decay", type=float, default=None, help="Per-step learning-rate decay [1].")
@click.option("--optimizer", type=click.Choice(["adam", "clipped_adam"]), default=None, help="Optimiser [adam].")
@click.option("--clip-norm", type=float, default=None, help="Gradient clipping per configuration.")
@click.option("--test-fraction", type=float, default=None,
              help="Rows held out before training; diagnostics are computed on them [0.1].")
@click.option("--jit/--no-jit", default=None,
              help="Record each task's loss once per batch shape, checked against the eager loss before it is "
                   "trusted [--jit]; --no-jit runs every step eagerly.")
@click.option("--iw-samples", type=int, default=None, help="Importance samples of the held-out NLL [100].")
@click.option("--max-points", type=int, default=None, help="At most this many held-out rows diagnosed [2000].")
@click.option("--backend", type=click.Choice(["local", "ray"]), default=None, help="Where tasks run [local].")
@click.option("--address", default=None,
              help="Ray cluster: 'auto', 'ray://HOST:10001'; default a fresh local Ray instance.")
@click.option("--group-size", type=int, default=None,
              help="Most configurations per task (batched together); default all sharing an architecture.")
@click.option("--num-cpus", type=float, default=None, help="CPUs each Ray task requests [1].")
@click.option("--num-gpus", type=float, default=None, help="GPUs each Ray task requests [0].")
@click.option("--max-retries", type=int, default=None, help="Ray reruns of a task whose worker died [0].")
@click.option("--device", default=None, help="Device inside a task: auto, cpu, cuda [auto].")
@click.option("--max-configs", type=int, default=None,
              help="Refuse grids with more configurations than this unless --yes [10000].")
@click.option("--yes", is_flag=True, help="Run a grid larger than --max-configs.")
@click.option("--out", type=click.Path(file_okay=False), required=True, callback=output_path,
              help="Sweep directory, e.g. sweeps/NAME.")
@click.option("--overwrite", is_flag=True, help="Discard results of a different spec found in --out.")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@threads_option(note=" (The local backend's; Ray workers keep their own.)")
@click.pass_context
def command(ctx: click.Context, **params: Any) -> None:
    """Train every configuration of a grid, one run directory each, and write combined.nc.

    \b
    Example:
      ppl-vae sweep --model cvae --arch mlp --data digits --beta 0.1,0.5,1,2 \\
          --eta-dec 0.5,1 --seeds 0-4 --epochs 20 --out sweeps/beta_eta [--backend ray --address auto]
    """
    from ppl_vae.sweep.study import SpecMismatchError, run_study

    if params["program"] is not None:
        _sweep_program(ctx, params)
        return
    if params["settings"]:
        raise click.UsageError("--set gives the keyword arguments of a --program's builder")
    try:
        spec = spec_from_options(ctx, params)
        spec.check_size(params["yes"])
    except (ValueError, FileNotFoundError) as err:
        raise click.UsageError(str(err)) from None
    click.echo(f"sweep: {spec.n_configs} configurations of {spec.model}/{spec.arch} on {spec.data['name']}, "
               f"backend {spec.execution['backend']}")
    try:
        summary = run_study(spec, params["out"], overwrite=params["overwrite"],
                            echo=None if params["quiet"] else click.echo, yes=params["yes"])
    except (*INPUT_ERRORS, SpecMismatchError, ImportError) as err:
        raise input_error(err) from None
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    # The line's time is the whole command's: start-up, imports, data, training, files and combined.nc.
    from ppl_vae.cli import STARTED

    for line in dataclasses.replace(summary, wall_time=time.perf_counter() - STARTED).lines():
        click.echo(line)
    if summary.failed:
        ctx.exit(1)


#: Sweep options that describe a suite model or its execution, not a user's program.
SUITE_ONLY = ("spec", "model", "arch", "beta", "eta_dec", "eta_enc", "beta1", "beta2", "latent_dim", "hidden",
              "backend", "address", "group_size", "num_cpus", "num_gpus", "max_retries")


def _sweep_program(ctx: click.Context, params: dict[str, Any]) -> None:
    """``sweep --program``: the grid of ``--set`` values x ``--seeds``, one run after another."""
    from ppl_vae.cli._common import load_data
    from ppl_vae.cli._program import sweep_program
    from ppl_vae.sweep.spec import parse_values

    given = [f"--{name.replace('_', '-')}" for name in SUITE_ONLY if params.get(name) not in (None, ())]
    if given:
        raise click.UsageError(f"{', '.join(given)} describe a suite model or a Ray sweep; with --program, sweep "
                               "your builder's arguments with --set NAME=V1,V2")
    if (params["steps"] is None) == (params["epochs"] is None):
        raise click.UsageError("give exactly one of --steps or --epochs")
    try:
        seeds = [int(s) for s in parse_values("seed", params["seeds"] or "0")]
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    fit_options = {key: params[key] for key in TRAIN_OPTIONS if params[key] is not None}
    fit_options.setdefault("test_fraction", 0.1)
    fit_options["device"] = params["device"] or "auto"
    data = {"data_name": params["data_name"] or "digits", "split": params["split"], "classes": None,
            "n_samples": params["n_samples"], "dim": params["dim"], "correlation": None, "data_seed": 0,
            "mnist_dir": "data/mnist", "x_key": params["x_key"], "y_key": params["y_key"],
            "label_key": params["label_key"], "image_shape": params["image_shape"]}

    def load(paired: bool):
        return load_data("cvae" if paired else "vae", **data)

    echo = None if params["quiet"] else click.echo
    try:
        finished, skipped, failed, seconds = sweep_program(
            program=params["program"], settings=params["settings"], seeds=seeds, load=load, out=Path(params["out"]),
            fit_options=fit_options, overwrite=params["overwrite"], echo=echo)
    except INPUT_ERRORS as err:
        raise input_error(err) from None
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    from ppl_vae.cli import STARTED

    click.echo(f"sweep of {params['program']}: {finished} finished, {skipped} already done, {failed} failed in "
               f"{time.perf_counter() - STARTED:.1f} s; {params['out']}/combined.nc")
    if failed:
        ctx.exit(1)
