"""Option parsing, data loading and error reporting shared by the sub-commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ppl_vae.cli._errors import INPUT_ERRORS, input_error, one_line

__all__ = ["INPUT_ERRORS", "data_options", "input_error", "load_data", "one_line", "output_path",
           "parse_float_list", "parse_int_list"]

class LazyChoice(click.Choice):
    """A ``click.Choice`` whose values are looked up only when a value is checked, not for ``--help``.

    Parameters
    ----------
    load
        Returns the allowed values (may import what ``--help`` should not).
    metavar
        What ``--help`` shows in place of the list.
    """

    def __init__(self, load: Callable[[], Any], metavar: str = "NAME"):
        self._load, self._metavar, self.case_sensitive = load, metavar, True

    @functools.cached_property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._load())

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self._metavar


def output_path(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback refusing an empty ``--out`` (``''`` would mean the current directory)."""
    if value is not None and not str(value).strip():
        raise click.BadParameter("must not be empty (give a file or folder name)", ctx=ctx, param=param)
    return value


def parse_float_list(name: str) -> Callable[[click.Context, click.Parameter, str | None], tuple[float, ...] | None]:
    """A click callback turning ``'0.5,1,2'`` into ``(0.5, 1.0, 2.0)``."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
        if value is None:
            return None
        try:
            numbers = tuple(float(part) for part in str(value).split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {value!r}", param_hint=name) from None
        if not numbers:
            raise click.BadParameter("expected at least one number", param_hint=name)
        return numbers

    return callback


def parse_int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """A click callback turning ``'16,8'`` into ``(16, 8)``."""
    if value is None:
        return None
    try:
        return tuple(int(part) for part in str(value).split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def data_source(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback accepting a built-in data set name or the path of an existing data file."""
    from ppl_vae.data import DATASETS, FILE_SUFFIXES

    if value is None or value in DATASETS:
        return value
    from pathlib import Path

    path = Path(value)
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise click.BadParameter(f"{value!r} is neither a data set ({', '.join(DATASETS)}) nor a data file "
                                 f"({', '.join(FILE_SUFFIXES)})")
    if not path.is_file():
        raise click.BadParameter(f"no data file at {value}")
    return str(path.resolve())


#: Torch CPU threads of train, sweep and report unless --threads says otherwise. One: the models are
#: small, and on a busy machine torch's default (one thread per core) spins its threads against each
#: other (``ppl-vae bench --section threads`` measures both; the README has the figures).
DEFAULT_THREADS = 1


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Set torch's CPU threads for the command (0: leave torch's default, one per core)."""
    if value:
        import torch

        torch.set_num_threads(value)
    return value


def threads_option(default: int = DEFAULT_THREADS, note: str = "") -> Callable[[Callable[..., Any]], Any]:
    """Attach ``--threads`` (torch CPU threads; set as the option is parsed, not passed to the command)."""
    return click.option("--threads", type=click.IntRange(min=0), default=default, show_default=True,
                        expose_value=False, callback=_set_threads,
                        help="Torch CPU threads; 0: torch's default (one per core)." + note)


#: Help of --data, shared by the sub-commands that take it.
DATA_HELP = ("Data: synthetic (Gaussian), digits (scikit-learn's bundled 8x8 images), mnist (local IDX files), or "
             "your own file: .npz, .npy, .csv or netCDF (.nc), with --x-key/--y-key naming its arrays or columns.")
KEY_OPTIONS = [
    click.option("--x-key", default=None,
                 help="Data file: the array of x (.npz / netCDF), or its columns (.csv / .npy: names or positions "
                      "separated by commas, a position range a:b, or a name range first:last such as p00:p77). "
                      "Default: the only array, or the columns not in y or the labels."),
    click.option("--y-key", default=None, help="Data file: the array or columns of the CVAE output y."),
    click.option("--label-key", default=None,
                 help="Data file: the array or column of integer class labels (kept out of x)."),
    click.option("--image-shape", default=None, metavar="HxW",
                 help="Data file: rows of x are flattened HxW images (with --model cvae: x and y are the --split "
                      "pieces of HxW images), so reconstructions are drawn and --arch cnn works."),
]


def key_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach --x-key / --y-key / --label-key / --image-shape."""
    for option in reversed(KEY_OPTIONS):
        func = option(func)
    return func


def data_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach the data-set options every sub-command shares."""
    options = [
        click.option("--data", "data_name", callback=data_source, default="digits", show_default=True,
                     help=DATA_HELP),
        *KEY_OPTIONS,
        click.option("--split", type=click.Choice(["quadrant", "half"]), default="quadrant", show_default=True,
                     help="CVAE image split: x = bottom-left quadrant or left half."),
        click.option("--classes", callback=parse_int_list, default=None,
                     help="Keep only these digit classes, e.g. '3,8'."),
        click.option("--n-samples", type=int, default=None, help="Synthetic data: number of samples."),
        click.option("--dim", type=int, default=None, help="Synthetic data: dimension of x (and y)."),
        click.option("--correlation", default=None,
                     help="Synthetic CVAE pairs: identical, noise_1_2, noise_1_4, noise_1_8 or independent."),
        click.option("--data-seed", type=int, default=0, show_default=True, help="Seed of the synthetic data."),
        click.option("--mnist-dir", type=click.Path(file_okay=False), default="data/mnist", show_default=True,
                     help="Directory holding the MNIST IDX files (plain or .gz)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def file_options(data_name: str, *, x_key: str | None, y_key: str | None, label_key: str | None = None,
                 image_shape: str | None = None, **builtin_only) -> dict[str, Any]:
    """``load`` options for a data file (or none for a built-in set), refusing options that do not apply."""
    from ppl_vae.data import DATASETS

    keys = {"x_key": x_key, "y_key": y_key, "label_key": label_key, "image_shape": image_shape}
    if data_name in DATASETS:
        given = [f"--{name.replace('_', '-')}" for name, value in keys.items() if value is not None]
        if given:
            raise click.BadParameter(f"{' / '.join(given)} describe a data file (--data my.npz), not the built-in "
                                     f"{data_name!r} data")
        return {}
    given = [f"--{name.replace('_', '-')}" for name, value in builtin_only.items() if value]
    if given:
        raise click.BadParameter(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to the built-in data "
                                 "sets, not to a data file")
    if image_shape is not None:
        from ppl_vae.data.files import parse_image_shape

        try:
            keys["image_shape"] = "x".join(map(str, parse_image_shape(image_shape)))
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--image-shape") from None
    return {key: value for key, value in keys.items() if value is not None}


def load_data(family: str, data_name: str, *, split: str, classes, n_samples, dim, correlation, data_seed,
              mnist_dir: str, x_key: str | None = None, y_key: str | None = None, label_key: str | None = None,
              image_shape: str | None = None):
    """Load the data set (or file) a sub-command asked for, turning bad options into click errors."""
    from ppl_vae._io import DamagedFileError, reading
    from ppl_vae._validate import check_data_options_apply
    from ppl_vae.data import DATASETS, load

    paired = family == "cvae"
    options: dict[str, Any] = file_options(data_name, x_key=x_key, y_key=y_key, label_key=label_key,
                                           image_shape=image_shape, classes=classes, n_samples=n_samples, dim=dim,
                                           correlation=correlation)
    if paired and "image_shape" in options:
        options["split"] = split
    if data_name in DATASETS:
        try:
            check_data_options_apply(data_name, n_samples=n_samples, dim=dim, correlation=correlation, classes=classes)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    if data_name == "synthetic":
        options["seed"] = data_seed
        if n_samples is not None:
            options["n"] = n_samples
        if dim is not None:
            options["dim"] = dim
        if correlation is not None:
            if not paired:
                raise click.BadParameter("--correlation applies to CVAE pairs only (--model cvae)")
            options["correlation"] = correlation
    elif data_name in DATASETS:  # images (a file's options are its keys)
        if classes:
            options["classes"] = list(classes)
        if paired:
            options["split"] = split
        if data_name == "mnist":
            options["directory"] = mnist_dir
    where = f" in {mnist_dir}" if data_name == "mnist" else ""
    try:
        with reading(f"the {data_name} data{where}"):  # e.g. a damaged .gz: gzip's message names no file
            return load(data_name, paired=paired, **options)
    except (FileNotFoundError, DamagedFileError) as err:
        raise input_error(err) from None
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
