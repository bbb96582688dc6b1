"""From run directories to the report page.

Each run's diagnostics are cached in ``RUN_DIR/diagnostics.nc`` (written
atomically) and reused when they were computed from the same checkpoint,
model config, data, held-out split, seed, number of importance samples and
package version (:func:`diagnostics_cache_key`); a cache that does not match,
or cannot be read, is recomputed. A sweep's run keeps the sweep's own
``diagnostics.nc`` (what ``combined.nc`` stacks): the report reuses it when the
settings agree and otherwise caches its own in ``diagnostics_report.nc``.
While a run's diagnostics are computed the report holds the claim on the run
directory (on the sweep directory for a sweep's run), as training does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import arviz as az
import xarray as xr
from tqdm.auto import tqdm

# The cache-key helpers and the held-out split live in light modules (a sweep uses them without
# importing the report); re-exported here, where they have always been imported from.
from .._diagnostics_cache import data_split_key, diagnostics_cache_key, file_digest  # noqa: F401
from .._io import DamagedFileError, atomic_write_text, check_path
from .._lock import claim_output
from .._provenance import check_json_attrs
from .._validate import check_int_range
from ..diagnostics import diagnose, load, save
from ..data.holdout import held_out_split  # noqa: F401
from ..inference.runs import DIAGNOSTICS_NAME, REPORT_DIAGNOSTICS_NAME, is_sweep_run
from .html import build_html


def read_cache(path: Path, key: dict) -> az.InferenceData | None:
    """The diagnostics cached at ``path`` if they were made as ``key`` says; None if not, or if unreadable.

    A cache is never an error: a damaged or foreign file is simply recomputed.
    """
    if not path.is_file():
        return None
    try:
        cached = load(path)
    except Exception:  # noqa: BLE001 - whatever the damage (netCDF, HDF5, truncation), recompute
        return None
    return cached if all(str(cached.attrs.get(name)) == str(value) for name, value in key.items()) else None


def claimed_by(run_dir: Path, info: dict) -> Path:
    """The directory whose claim covers writing into ``run_dir``: its sweep's directory, or itself."""
    if is_sweep_run(info) and run_dir.resolve().parent.name == "runs":
        return run_dir.resolve().parent.parent
    return run_dir


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
        Reuse a matching ``diagnostics.nc``; a missing, stale or unreadable one
        is (re)computed and written atomically (for a sweep's run, to
        ``diagnostics_report.nc``: the sweep's own file is left as it is).
    """
    from ..inference import CHECKPOINT_NAME, load_run

    check_int_range("iw_samples", iw_samples, 1)
    run_dir = Path(run_dir)
    model, bundle, info = load_run(run_dir, device=device)
    train, test = held_out_split(bundle, info.get("train") or {})
    split = data_split_key(info.get("train") or {}, 0 if test is None else test.n)
    key = diagnostics_cache_key(info, file_digest(run_dir / CHECKPOINT_NAME), iw_samples, seed, options, split)
    # A sweep's diagnostics.nc is the sweep's (combined.nc stacks it): read, never replaced.
    names = (DIAGNOSTICS_NAME, REPORT_DIAGNOSTICS_NAME) if is_sweep_run(info) else (DIAGNOSTICS_NAME,)
    for name in names if reuse else ():
        cached = read_cache(run_dir / name, key)
        if cached is not None:
            return cached
    idata = diagnose(model, train, test_data=test, iw_samples=iw_samples, seed=seed, data_spec=info["data"],
                     device=device, progress=progress, **options)
    idata.attrs.update(key, checkpoint_step=int(info.get("step", -1)))
    save(idata, run_dir / names[-1])
    return idata


def read_loss_history(run_dir: str | os.PathLike) -> xr.DataArray | None:
    """The ``loss`` over ``step`` of ``loss_history.nc``, or of a sweep run's task store (None if the run has none).

    A sweep writes a task's losses once, in its store (``store/<task>.nc``); its
    runs have no ``loss_history.nc`` (those of earlier versions do, and it is
    read first) and their ``diagnostics.nc`` is a view naming the store.

    Raises
    ------
    DamagedFileError
        The file (or the store the run's view names) exists but cannot be read (the message names it).
    """
    from ..inference import LOSS_NAME

    path = Path(run_dir) / LOSS_NAME
    if not path.is_file():
        return _store_loss(Path(run_dir))
    try:
        with xr.open_dataset(path) as ds:
            return ds["loss"].load()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise DamagedFileError(f"{path} cannot be read as a loss history (netCDF with a 'loss' variable): "
                               f"{detail}") from None


def _store_loss(run_dir: Path) -> xr.DataArray | None:
    """A sweep run's loss: from the task store its ``diagnostics.nc`` view names, else from its checkpoint.

    The checkpoint (which holds the whole loss history) answers for a sweep run
    copied without its store, or whose diagnostics were recomputed into a file of
    their own; any other run without ``loss_history.nc`` has no loss (None).
    """
    from ..diagnostics.io import is_view, load_view_loss, view_target

    view = run_dir / DIAGNOSTICS_NAME
    try:
        if view.is_file() and is_view(view) and view_target(view)[0].is_file():
            return load_view_loss(view)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise DamagedFileError(f"{view}: the training loss in its task store cannot be read: {detail}") from None
    return _checkpoint_loss(run_dir)


def _checkpoint_loss(run_dir: Path) -> xr.DataArray | None:
    """The loss history a sweep run's checkpoint holds, as ``loss_history.nc`` would (None if not a sweep run)."""
    import numpy as np

    from .._io import read_json
    from ..inference import CHECKPOINT_NAME, CONFIG_NAME
    from ..inference.checkpoint import load_checkpoint

    if not (run_dir / CONFIG_NAME).is_file() or not (run_dir / CHECKPOINT_NAME).is_file():
        return None
    info = read_json(run_dir / CONFIG_NAME)
    if not isinstance(info, dict) or not is_sweep_run(info):
        return None
    history = load_checkpoint(run_dir / CHECKPOINT_NAME).get("loss_history")
    if history is None:
        return None
    values = np.asarray(history, dtype=np.float64)
    return xr.DataArray(values, dims="step", coords={"step": np.arange(values.size)}, name="loss",
                        attrs={"long_name": "negative beta-ELBO per sample", "units": "nats"})


KL_HISTORY_NAME = "kl_history.nc"  # the shared contract's file name (beside loss_history.nc)


def read_kl_history(run_dir: str | os.PathLike) -> xr.Dataset | None:
    """The per-dimension KL history of a run directory (``kl_history.nc``), None if it has none.

    Raises
    ------
    DamagedFileError
        The file exists but is not a KL history (netCDF with ``<site>_kl`` over ``step``).
    """
    path = Path(run_dir) / KL_HISTORY_NAME
    if not path.is_file():
        return None
    try:
        with xr.open_dataset(path) as ds:
            history = ds.load()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise DamagedFileError(f"{path} cannot be read as a KL history (netCDF): {detail}") from None
    if "step" not in history.dims or not any(str(name).endswith("_kl") for name in history.data_vars):
        raise DamagedFileError(f"{path} is not a KL history: it needs <site>_kl variables over 'step'")
    return history


def read_converged(run_dir: str | os.PathLike) -> bool | None:
    """``converged`` of the run's ``metrics.json`` (True / False), None when absent or not judged."""
    from .._io import read_json
    from ..inference import METRICS_NAME

    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return None
    try:
        metrics = read_json(path)
    except (OSError, ValueError):
        return None
    value = metrics.get("converged") if isinstance(metrics, dict) else None
    return value if isinstance(value, bool) else None


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
    check_json_attrs(idata.attrs, path)  # a sent file's attributes are checked, not trusted
    return idata


def is_program_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run of a user's Pyro program (``config.json``: model family ``program``)."""
    from .._io import read_json
    from ..inference.runs import CONFIG_NAME

    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return False
    info = read_json(path)
    model = info.get("model") if isinstance(info, dict) else None
    return isinstance(model, dict) and model.get("family") == "program"


def read_program_diagnostics(run_dir: Path) -> az.InferenceData:
    """The diagnostics a program's training wrote (``diagnostics.nc``), read as they are.

    A program is never rebuilt from its run directory (that would run the user's
    code from a file the report was handed), so its report shows what training
    diagnosed.

    Raises
    ------
    FileNotFoundError
        The run has no ``diagnostics.nc`` (training did not finish, or the file was removed).
    """
    path = run_dir / DIAGNOSTICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a program's run is reported from the diagnostics its "
                                "training wrote (ppl-vae train --program ... writes them), never by running "
                                "the program again")
    return read_inference_data(path)


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
    out = check_path(out, "the report file")
    if not run_dirs:
        raise ValueError("run_dirs must name at least one run directory or diagnostics file")
    with claim_output(out, "ppl-vae report", directory=False):
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
        names = run_names(run_dirs)
        idatas, losses, histories, converged = {}, {}, {}, {}
        for name, run_dir in tqdm(list(zip(names, map(Path, run_dirs))), desc="runs", disable=not progress or len(names) < 2):
            if run_dir.is_file():
                idatas[name] = read_inference_data(run_dir)
                continue
            if is_program_run(run_dir):
                idatas[name] = read_program_diagnostics(run_dir)
            else:
                idatas[name] = _diagnose_claimed(run_dir, iw_samples=iw_samples, seed=seed, device=device,
                                                 progress=progress, **diagnose_options)
            loss = read_loss_history(run_dir)
            if loss is not None:
                losses[name] = loss
            history = read_kl_history(run_dir)
            if history is not None:
                histories[name] = history
            converged[name] = read_converged(run_dir)
        page = build_html(idatas, losses, histories=histories, converged=converged, title=title)
        return atomic_write_text(out, page, exclusive=not overwrite)


def _diagnose_claimed(run_dir: Path, **options) -> az.InferenceData:
    """:func:`diagnose_run` while holding the claim on the run (so no training or sweep writes it meanwhile)."""
    from ..inference.runs import CONFIG_NAME
    from .._io import read_json

    info = read_json(run_dir / CONFIG_NAME) if (run_dir / CONFIG_NAME).is_file() else {}
    with claim_output(claimed_by(run_dir, info if isinstance(info, dict) else {}), "ppl-vae report"):
        return diagnose_run(run_dir, **options)
