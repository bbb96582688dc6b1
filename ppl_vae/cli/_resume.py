"""``ppl-vae train --resume``: what a resumed run keeps, and the options that may change.

A resumed run continues bit for bit: its model, data and training options are
read back from ``config.json``. An option given on the command line must agree
with the saved value; one that differs is refused by name (with the saved value
beside it), never silently ignored. Only the length (``--steps`` / ``--epochs``,
the new total), the device and the progress bar may change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

#: Options a resume may change (``out`` / ``resume`` say what to resume).
CHANGEABLE = ("steps", "epochs", "device", "progress", "out", "resume")

#: Option -> where ``config.json`` keeps its value (section, key).
SAVED_AT: dict[str, tuple[str, ...]] = {
    **{name: ("model", name) for name in ("arch", "latent_dim", "latent_dims", "beta", "beta1", "beta2", "eta_enc",
                                          "eta_dec", "encoder_std", "sigma1", "sigma2", "prior", "latent_mapping")},
    "family": ("model", "family"), "hidden": ("model", "hidden_dims"),
    "data_name": ("data", "name"), "split": ("data", "split"), "classes": ("data", "classes"),
    "n_samples": ("data", "n"), "dim": ("data", "dim"), "correlation": ("data", "correlation"),
    "data_seed": ("data", "seed"), "mnist_dir": ("data", "directory"),
    **{name: ("train", name) for name in ("batch_size", "lr", "lr_decay", "optimizer", "clip_norm", "test_fraction",
                                          "checkpoint_every")},
    "seed": ("seed",),
}
#: Options read as a number or 'learnable' (None).
STD_OPTIONS = ("encoder_std", "sigma1", "sigma2")
#: The ``train`` entries a resume reads back.
TRAIN_KEYS = ("batch_size", "lr", "lr_decay", "optimizer", "clip_norm", "checkpoint_every", "steps")


def given_options(ctx: click.Context) -> list[str]:
    """Names of the parameters set on the command line or from the environment (not defaults)."""
    return [name for name in ctx.params
            if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]


def _flag(name: str) -> str:
    return {"family": "--model", "data_name": "--data"}.get(name, f"--{name.replace('_', '-')}")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(list(value) if isinstance(value, tuple) else value))


def _saved(saved: dict[str, Any], where: tuple[str, ...]) -> Any:
    value: Any = saved
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def changed_options(ctx: click.Context, saved: dict[str, Any], parse_std) -> list[str]:
    """``'--beta 3 (the run has 2.0)'`` for each given option that disagrees with the saved run."""
    changed = []
    for name in given_options(ctx):
        if name in CHANGEABLE:
            continue
        given = ctx.params[name]
        if name not in SAVED_AT:
            changed.append(f"{_flag(name)} (fixed by the run's config.json)")
            continue
        if name in STD_OPTIONS:
            given = parse_std(given)
        before = _saved(saved, SAVED_AT[name])
        if name == "mnist_dir" and before is not None:
            before, given = str(Path(before)), str(Path(given))
        if _plain(given) != _plain(before):
            changed.append(f"{_flag(name)} {_show(given)} (the run has {_show(before)})")
    return changed


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def read_resumable(run_dir: Path, ctx: click.Context, parse_std) -> dict[str, Any]:
    """``config.json`` of a run ``ppl-vae train`` can resume, after checking the options given.

    Raises
    ------
    click.ClickException
        No ``config.json``; a sweep's run (resumed by rerunning the sweep); a
        ``config.json`` missing what a resume needs; options that differ from the run's.
    """
    from ppl_vae.inference.runs import CONFIG_NAME, is_sweep_run
    from ppl_vae._io import read_json

    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise click.ClickException(f"cannot resume: {path} does not exist")
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise click.ClickException(f"cannot resume: {path} is not a ppl-vae run configuration")
    if is_sweep_run(saved):
        sweep = run_dir.resolve().parent.parent
        raise click.ClickException(
            f"cannot resume: {run_dir} is one run of the sweep in {sweep}; `ppl-vae train --resume` resumes runs "
            f"it wrote: rerun the same `ppl-vae sweep ... --out {sweep}` command to finish the sweep")
    needed = [("model",), ("data",), ("seed",), *(("train", key) for key in TRAIN_KEYS)]
    missing = [".".join(where) for where in needed if not _has(saved, where)]
    if missing:
        raise click.ClickException(f"cannot resume: {path} lacks {', '.join(missing)}; it was not written by "
                                   "`ppl-vae train`")
    wrong = [name for name in ("model", "data", "train") if not isinstance(saved[name], dict)]
    if wrong:
        raise click.ClickException(f"cannot resume: {path}: {', '.join(map(repr, wrong))} must be a mapping; it is "
                                   "damaged or was not written by `ppl-vae train`")
    changed = changed_options(ctx, saved, parse_std)
    if changed:
        raise click.UsageError(
            f"cannot resume with changed options: {'; '.join(changed)}. A resumed run keeps its model, data and "
            "training options; only --steps/--epochs (the new total), --device and --progress may be given")
    return saved


def _has(saved: dict[str, Any], where: tuple[str, ...]) -> bool:
    value: Any = saved
    for key in where:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True
