"""From run directories to the report page.

Each run's diagnostics are cached in ``RUN_DIR/diagnostics.nc`` (written
atomically) and reused when they were computed from the same checkpoint,
model config, data, seed and number of importance samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import arviz as az
import xarray as xr
from tqdm.auto import tqdm

from .. import __version__
from .._io import atomic_write_text, file_sha256
from .._validate import check_int_range
from ..diagnostics import diagnose, load, save
from .html import build_html

DIAGNOSTICS_NAME = "diagnostics.nc"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file (the checkpoint), to tell a retrained run from the cached one."""
    return file_sha256(path)


def held_out_split(bundle, train_options: dict):
    """(training data, held-out data or None) as the run's training options describe.

    A run trained with ``test_fraction`` > 0 (and ``split_seed``, default 0) in
    its ``train`` options was fitted on the training part; the rest is held out.
    """
    fraction = float(train_options.get("test_fraction") or 0.0)
    if fraction <= 0.0:
        return bundle, None
    from ..data import train_test_split

    return train_test_split(bundle, fraction, seed=int(train_options.get("split_seed", 0)))


def diagnostics_cache_key(info: dict, checkpoint: str, iw_samples: int, seed: int, options: dict) -> dict:
    """What a cached ``diagnostics.nc`` must match to be reused (stored in its attrs).

    Shared by the report and the sweep studies so a diagnostics file written by one
    is recognised by the other.
    """
    return {
        "diagnose_options": json.dumps(options, sort_keys=True, default=str),
        "model_config": json.dumps(info["model"], sort_keys=True),
        "data_spec": json.dumps(info["data"], sort_keys=True, default=str),
        "checkpoint_sha256": checkpoint,
        "iw_samples": int(iw_samples),
        "seed": int(seed),
        "ppl_vae_version": __version__,
    }


def _matches(idata: az.InferenceData, key: dict) -> bool:
    return all(str(idata.attrs.get(name)) == str(value) for name, value in key.items())


def diagnose_run(run_dir: str | os.PathLike, *, iw_samples: int = 1000, seed: int = 0, device: str = "auto",
                 progress: bool = True, reuse: bool = True, **options) -> az.InferenceData:
    """Diagnostics of one run directory, computed or reused from ``diagnostics.nc``.

    Parameters
    ----------
    run_dir
        A directory written by :func:`ppl_vae.inference.fit`.
    iw_samples, seed, device, progress, options
        Passed to :func:`ppl_vae.diagnostics.diagnose`.
    reuse
        Reuse a matching ``diagnostics.nc``; a missing or stale one is
        (re)computed and written atomically.
    """
    from ..inference import CHECKPOINT_NAME, load_run

    check_int_range("iw_samples", iw_samples, 1)
    run_dir = Path(run_dir)
    model, bundle, info = load_run(run_dir, device=device)
    key = diagnostics_cache_key(info, file_digest(run_dir / CHECKPOINT_NAME), iw_samples, seed, options)
    cache = run_dir / DIAGNOSTICS_NAME
    if reuse and cache.is_file():
        cached = load(cache)
        if _matches(cached, key):
            return cached
    train, test = held_out_split(bundle, info.get("train") or {})
    idata = diagnose(model, train, test_data=test, iw_samples=iw_samples, seed=seed, data_spec=info["data"],
                     device=device, progress=progress, **options)
    idata.attrs.update(key, checkpoint_step=int(info.get("step", -1)))
    save(idata, cache)
    return idata


def read_loss_history(run_dir: str | os.PathLike) -> xr.DataArray | None:
    """The ``loss`` over ``step`` of ``loss_history.nc`` (None if the run has none)."""
    from ..inference import LOSS_NAME

    path = Path(run_dir) / LOSS_NAME
    if not path.is_file():
        return None
    with xr.open_dataset(path) as ds:
        return ds["loss"].load()


def read_inference_data(path: str | os.PathLike) -> az.InferenceData:
    """A diagnostics file written by :func:`ppl_vae.diagnostics.save` (e.g. after ``diagnose`` of any Pyro model).

    Raises
    ------
    ValueError
        The file is not netCDF, or holds no ``collapse`` group (not ``diagnose`` output).
    """
    try:
        idata = load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not an InferenceData netCDF file ({err})") from None
    if "collapse" not in idata.groups():
        raise ValueError(f"{path}: no collapse group; report reads the output of ppl_vae.diagnostics.diagnose "
                         f"(groups found: {', '.join(idata.groups()) or 'none'})")
    for name in ("model_config", "hyperparameters", "data_spec"):
        idata.attrs.setdefault(name, "{}")
    return idata


def run_names(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """Short distinct labels: the directory (or file stem) names, or their paths when two share a name."""
    paths = [Path(p) for p in run_dirs]
    names = [p.stem if p.is_file() else p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths] if len({str(p) for p in paths}) == len(paths) else [f"{n}#{i}" for i, n in enumerate(names)]


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, iw_samples: int = 1000,
                 seed: int = 0, device: str = "auto", overwrite: bool = False, progress: bool = True,
                 title: str = "Posterior collapse report", **diagnose_options) -> Path:
    """Diagnose each run (or reuse its cache) and write one self-contained HTML page.

    ``run_dirs`` may also name InferenceData files (``.nc``) written by
    :func:`ppl_vae.diagnostics.save`, e.g. for a Pyro model trained outside
    the suite: they are read as they are (no training loss to show).
    ``diagnose_options`` (``n_obs``, ``n_draws``, ``kl_samples``) go to
    :func:`ppl_vae.diagnostics.diagnose` when a run's diagnostics are computed.

    Raises
    ------
    FileExistsError
        ``out`` exists and ``overwrite`` is not set.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not run_dirs:
        raise ValueError("run_dirs must name at least one run directory or diagnostics file")
    names = run_names(run_dirs)
    idatas, losses = {}, {}
    for name, run_dir in tqdm(list(zip(names, run_dirs)), desc="runs", disable=not progress or len(names) < 2):
        if Path(run_dir).is_file():
            idatas[name] = read_inference_data(run_dir)
            continue
        idatas[name] = diagnose_run(run_dir, iw_samples=iw_samples, seed=seed, device=device, progress=progress,
                                    **diagnose_options)
        loss = read_loss_history(run_dir)
        if loss is not None:
            losses[name] = loss
    return atomic_write_text(out, build_html(idatas, losses, title=title))
