"""A sweep directory on disk: its spec, one run directory per configuration, the combined results.

Layout::

    spec.json                  the validated spec; a rerun with another spec is refused
    runs/<name>/               one run directory per configuration (config.json, checkpoint.pt,
                               diagnostics.nc, metrics.json; or error.json)
    store/<id>.nc              one task's diagnostics and losses along ``run``, written in one
                               opening; a run's diagnostics.nc is a view of its entry here, and
                               its training loss is read from here (no loss_history.nc per run)
    groups/<id>/               a local task's checkpoints while it trains
    combined.nc                every finished run's diagnostics stacked along ``run``
    summary.json               counts and failures of the last invocation

A configuration is finished when its ``metrics.json`` exists: it is written
last, atomically, after everything else of that run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ppl_vae._io import DamagedFileError, atomic_write_json, check_path, read_json, visible_entries
from ppl_vae._lock import refuse_link
from ppl_vae._provenance import read_run_config
from ppl_vae.sweep.api import held_out_rows
from ppl_vae.sweep.spec import SpecMismatchError, SweepSpec, _config_class, run_name
from ppl_vae.sweep.tasks import ConfigOutcome, TaskOutcome, diagnose_options

SPEC_NAME = "spec.json"
SUMMARY_NAME = "summary.json"
COMBINED_NAME = "combined.nc"
RUNS_DIR = "runs"
GROUPS_DIR = "groups"
ERROR_NAME = "error.json"
DIAGNOSTICS_NAME = "diagnostics.nc"  # as ppl_vae.inference.runs.DIAGNOSTICS_NAME
STORE_DIR = "store"

# --------------------------------------------------------------------------- run directories


def run_status(run_dir: str | os.PathLike) -> str:
    """``'finished'`` (``metrics.json`` present), ``'failed'`` (``error.json``) or ``'pending'``."""
    from ppl_vae.inference import METRICS_NAME

    run_dir = Path(run_dir)
    if (run_dir / METRICS_NAME).is_file():
        return "finished"
    if (run_dir / ERROR_NAME).is_file():
        return "failed"
    return "pending"


def _train_options(spec: SweepSpec, seed: int, vectorised: bool, provenance: dict | None) -> dict[str, Any]:
    """The ``train`` section of a sweep run's ``config.json``: the spec's options and what ``fit`` recorded."""
    return {**spec.train, **(provenance or {}), "seed": seed, "vectorised": vectorised}


def write_task(out: Path, spec: SweepSpec, names: Sequence[str], grid: tuple[list, list], data_spec: dict,
               result: TaskOutcome, vectorised: bool, group: str) -> dict[str, Any]:
    """Write one task's run directories and its store; return the finished runs' diagnostics.

    The diagnostics are returned as run name -> :class:`~ppl_vae.diagnostics.io.StoreEntry`
    of the store in memory (what :func:`write_combined` stacks).

    Each configuration gets its ``config.json`` (and ``error.json`` if it
    failed, or ``checkpoint.pt``); then the task's
    diagnostics and losses are written as one file, ``store/<group>.nc``, in one
    opening; then each finished run's ``diagnostics.nc`` (a view of its entry in
    the store) and, last, its ``metrics.json`` (the finished marker). A crash
    anywhere before leaves the runs unfinished, to be redone.
    """
    from ppl_vae.diagnostics.io import StoreEntry, netcdf_safe_attrs, save_tree, write_view

    configs, seeds = grid
    runs = out / RUNS_DIR
    finished: list[tuple[ConfigOutcome, str, dict]] = []
    for outcome in result.outcomes:
        k = outcome.index
        key = _write_run_files(runs / names[k], spec, configs[k], seeds[k], data_spec, outcome, vectorised)
        if key is not None:
            finished.append((outcome, names[k], key))
    if not finished:
        return {}
    tree = _named_store(result.diagnostics, finished)
    for position, (_, _, key) in enumerate(finished):
        tree[f"runs/{position}"].attrs.update(netcdf_safe_attrs(key))
    save_tree(tree, out / STORE_DIR / f"{group}.nc")
    written = {}
    for outcome, name, _ in finished:
        run_dir = runs / name
        write_view(run_dir / DIAGNOSTICS_NAME, f"{group}.nc", name)
        (run_dir / ERROR_NAME).unlink(missing_ok=True)
        atomic_write_json(run_dir / _metrics_name(), outcome.metrics)
        written[name] = StoreEntry(tree, name)  # combined.nc takes the task's runs as one block
    return written


def _metrics_name() -> str:
    from ppl_vae.inference import METRICS_NAME

    return METRICS_NAME


def _named_store(tree, finished: list[tuple[ConfigOutcome, str, dict]]):
    """The worker's tree (runs labelled by sweep position) relabelled with run names, the losses beside."""
    import xarray as xr

    by_position = {str(outcome.index): name for outcome, name, _ in finished}
    labels = json.loads(tree.attrs["runs"])
    if sorted(labels) != sorted(by_position):
        raise ValueError(f"the task's diagnostics hold runs {labels}, its outcomes {sorted(by_position)}")
    order = [labels.index(str(outcome.index)) for outcome, _, _ in finished]  # outcomes' order
    names = [name for _, name, _ in finished]
    nodes = {"/": xr.Dataset(attrs={**tree.attrs, "runs": json.dumps(names)})}
    for group, node in tree["diagnostics"].children.items():
        nodes[f"diagnostics/{group}"] = node.to_dataset(inherit=False).isel(run=order).assign_coords(run=names)
    for position, old in enumerate(order):
        source = tree["runs"][str(old)]
        nodes[f"runs/{position}"] = source.to_dataset(inherit=False)
        for group, child in source.children.items():
            nodes[f"runs/{position}/{group}"] = child.to_dataset(inherit=False)
    losses = np.stack([np.asarray(outcome.loss_history, dtype=np.float64) for outcome, _, _ in finished])
    nodes["loss"] = xr.Dataset(
        {"loss": (("run", "step"), losses, {"long_name": "negative beta-ELBO per sample", "units": "nats"}),
         "final_loss": ("run", [outcome.metrics["final_loss"] for outcome, _, _ in finished],
                        {"units": "nats"})},
        coords={"run": names, "step": np.arange(losses.shape[1])})
    return xr.DataTree.from_dict(nodes)


def _write_run_files(run_dir: Path, spec: SweepSpec, config, seed: int, data_spec: dict, outcome: ConfigOutcome,
                     vectorised: bool) -> dict | None:
    """A run's files but its diagnostics and ``metrics.json``; the diagnostics cache key if it finished."""
    from ppl_vae.inference import CHECKPOINT_NAME, CONFIG_NAME, LOSS_NAME, METRICS_NAME, save_checkpoint

    refuse_link(run_dir, "run folder")  # never write through a link planted in runs/
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS_NAME).unlink(missing_ok=True)  # unfinished until everything is written
    train = _train_options(spec, seed, vectorised, outcome.provenance)
    import ppl_vae

    info = {"model": config.to_dict(), "data": data_spec, "train": train}
    atomic_write_json(run_dir / CONFIG_NAME, {**info, "seed": seed, "version": ppl_vae.__version__,
                                              "device": (outcome.metrics or {}).get("device", "cpu")})
    if not outcome.ok:
        atomic_write_json(run_dir / ERROR_NAME, outcome.error)
        return None
    history = outcome.loss_history
    save_checkpoint(run_dir / CHECKPOINT_NAME, {
        "model_state": outcome.state_dict, "step": int(history.size),
        "loss_history": torch.tensor(np.array(history), dtype=torch.float64), "config": config.to_dict(),
        "train": train,
    })
    # No loss_history.nc: the task's losses are written once, in its store (the report reads them there).
    (run_dir / LOSS_NAME).unlink(missing_ok=True)  # one an earlier version wrote would go stale
    # The report reuses diagnostics.nc when these keys match the run (see ppl_vae.report.runs).
    return {**cache_key(spec, info, run_dir / CHECKPOINT_NAME), "checkpoint_step": int(history.size)}


def cache_key(spec: SweepSpec, info: Mapping[str, Any], checkpoint: Path) -> dict[str, Any]:
    """What a sweep run's ``diagnostics.nc`` must match: the sweep's diagnostics settings on this run.

    ``info`` holds the run's ``model`` config, ``data`` spec and ``train`` options
    (``config.json``'s content); see :func:`ppl_vae._diagnostics_cache.diagnostics_cache_key`.
    """
    from ppl_vae._diagnostics_cache import data_split_key, diagnostics_cache_key, file_digest

    split = data_split_key(spec.train, int(info["train"].get("n_test", 0)), spec.diagnostics["max_points"])
    return diagnostics_cache_key(dict(info), file_digest(checkpoint), spec.diagnostics["iw_samples"],
                                 spec.diagnostics["seed"], diagnose_options(spec.diagnostics), split)


def run_diagnostics(run_dir: Path, spec: SweepSpec, stores: dict | None = None, *, as_inference_data: bool = True):
    """A finished run's diagnostics made with the sweep's settings: its ``diagnostics.nc``, or recomputed.

    ``diagnostics.nc`` is a view of the run's task store (or, after a
    recomputation, a file of its own). It is recomputed (and rewritten as a file
    of its own) when it cannot be read or was made otherwise (other
    ``iw_samples``, split, checkpoint or package version), so ``combined.nc``
    never mixes settings. ``stores`` caches the task stores read (path -> tree),
    so that a store is opened once for all its runs. ``as_inference_data=False``:
    a view read from a store is returned as a
    :class:`~ppl_vae.diagnostics.plain.PlainDiagnostics` (no ArviZ).
    """
    from ppl_vae.diagnostics import save
    from ppl_vae.inference import CHECKPOINT_NAME, CONFIG_NAME, load_run
    from ppl_vae.sweep.api import diagnose_held_out

    key = cache_key(spec, read_run_config(run_dir / CONFIG_NAME), run_dir / CHECKPOINT_NAME)
    cached = _read_cached(run_dir / DIAGNOSTICS_NAME, {} if stores is None else stores, as_inference_data)
    if cached is not None and all(str(cached.attrs.get(name)) == str(value) for name, value in key.items()):
        return cached
    model, bundle, info = load_run(run_dir, device="cpu")
    options = dict(spec.diagnostics)
    train, test = held_out_rows(bundle, spec.train["test_fraction"], spec.train["split_seed"],
                                options.pop("max_points"), seed=options["seed"])
    idata = diagnose_held_out(model, train, test, options, torch.device("cpu"))
    idata.attrs.update(key, checkpoint_step=int(info["step"]))
    save(idata, run_dir / DIAGNOSTICS_NAME)
    return idata


def _read_cached(path: Path, stores: dict, as_inference_data: bool = True):
    """The diagnostics at ``path`` (a view, read through ``stores``, or a file); None if they cannot be read."""
    from ppl_vae.diagnostics import load
    from ppl_vae.diagnostics.io import is_view, load_tree, run_view, view_target

    try:
        if not is_view(path):
            return load(path)
        store, run = view_target(path)
        if store not in stores:
            stores[store] = load_tree(store)
        return run_view(stores[store], run, as_inference_data=as_inference_data)
    except Exception:  # noqa: BLE001 - whatever the damage (missing, netCDF, HDF5, truncation), recompute
        return None


def prepare_sweep_dir(out: str | os.PathLike, spec: SweepSpec, *, overwrite: bool = False, bundle=None) -> Path:
    """Create ``out`` for ``spec``, or reuse it if it holds the same spec (and, given ``bundle``, the same data file).

    Raises
    ------
    SpecMismatchError
        ``out`` holds a sweep of another spec (or of a data file whose bytes
        changed) and ``overwrite`` is not set.
    FileExistsError
        ``out`` is a non-empty directory that is not a sweep directory, or
        ``overwrite`` would delete files the sweep's records do not account for.
    ppl_vae._io.DamagedFileError
        ``spec.json`` is not a sweep record.
    """
    from ppl_vae._provenance import (data_changed_message, foreign_sweep_entries, identity_changes, saved_sweep,
                                     sweep_identity)

    out = check_path(out, "the sweep directory")
    spec_path = out / SPEC_NAME
    identity = spec.identity() if bundle is None else sweep_identity(spec, bundle)
    if spec_path.is_file():
        saved = saved_sweep(spec_path, read_json(spec_path))
        changed = identity_changes(saved["identity"], identity)
        if changed:
            if not overwrite:
                if changed == ["data_sha256"]:
                    raise SpecMismatchError(data_changed_message(out, saved["identity"], identity))
                raise SpecMismatchError(
                    f"{out} holds a sweep with a different spec (changed: {', '.join(changed)}); "
                    "use another --out, or pass --overwrite to discard its results")
            foreign = foreign_sweep_entries(out, saved)
            if foreign:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise FileExistsError(f"{out} holds files its sweep did not write ({shown}); refusing to overwrite "
                                      "it: move them away or choose another --out")
            _discard_results(out)
    elif out.exists() and visible_entries(out):
        raise FileExistsError(f"{out} exists and is not a sweep directory (no {SPEC_NAME}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec_path, {"identity": identity, "spec": spec.to_dict(), "grid_order": list(spec.grid)})
    return out


def _discard_results(out: Path) -> None:
    """Remove everything a sweep of another spec left in ``out`` (before the new spec is written)."""
    (out / SPEC_NAME).unlink(missing_ok=True)
    for folder in (RUNS_DIR, GROUPS_DIR, STORE_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in (COMBINED_NAME, SUMMARY_NAME):
        (out / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- combined results


def read_spec(out: str | os.PathLike) -> SweepSpec:
    """The spec a sweep directory was run with."""
    path = Path(out) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out} is not a sweep directory: {SPEC_NAME} is missing")
    from ppl_vae._provenance import saved_sweep

    saved = saved_sweep(path, read_json(path))
    raw = saved["spec"]
    raw["grid"] = {key: raw["grid"][key] for key in saved["grid_order"]}  # JSON keys were sorted
    return SweepSpec.from_dict(raw)


def rebuild_combined(out: str | os.PathLike, fresh: Mapping[str, Any] | None = None, *,
                     as_inference_data: bool = True):
    """Every finished configuration's diagnostics stacked along ``run`` (sweep order).

    Coordinates along ``run``: the model hyper-parameters and ``family`` (as
    :func:`ppl_vae.diagnostics.combine` sets them), plus every other grid
    entry (``seed``, ``latent_dim``, ...) and ``final_loss``. ``fresh`` maps run
    names to diagnostics already in memory (the runs just written: entries of their
    task's store, stacked a store at a time by
    :func:`~ppl_vae.diagnostics.io.combine_entries`); every other
    run's come from :func:`run_diagnostics`:
    its view of its task store when made with the sweep's settings, else
    recomputed, so settings never mix. ``as_inference_data=False``: the result as a
    :class:`~ppl_vae.diagnostics.plain.PlainDiagnostics` (what :func:`write_combined`
    writes; ArviZ is imported only if a run's diagnostics had to be read or
    recomputed as an InferenceData).

    Raises
    ------
    FileNotFoundError
        No configuration has finished yet.
    """
    from ppl_vae.diagnostics.io import combine_entries
    from ppl_vae.inference import METRICS_NAME

    out, fresh = Path(out), dict(fresh or {})
    spec = read_spec(out)
    points = spec.points()
    done = [(run_name(p), p) for p in points
            if run_name(p) in fresh or run_status(out / RUNS_DIR / run_name(p)) == "finished"]
    if not done:
        raise FileNotFoundError(f"no finished configuration in {out / RUNS_DIR}")
    stores: dict = {}
    idatas = [fresh[name] if name in fresh
              else run_diagnostics(out / RUNS_DIR / name, spec, stores, as_inference_data=as_inference_data)
              for name, _ in done]
    final_loss = [_final_loss(out / RUNS_DIR / name / METRICS_NAME) for name, _ in done]
    combined = combine_entries(dict(zip([name for name, _ in done], idatas)), as_inference_data=as_inference_data)
    hyper = set(_config_class(spec.model)._hyperparameter_names)
    extra = {key: ("run", np.asarray([point[key] for _, point in done])) for key in spec.grid if key not in hyper}
    if "seed" not in extra:
        extra["seed"] = ("run", np.asarray([int(i.attrs.get("seed", 0)) for i in idatas]))
    extra["final_loss"] = ("run", np.asarray(final_loss, dtype=np.float64))
    for group in combined.groups():
        combined[group] = combined[group].assign_coords(extra)
    combined.attrs.update(sweep=str(out.resolve().name), n_configs=spec.n_configs, n_finished=len(done))
    return combined


def _final_loss(path: Path) -> float:
    """``final_loss`` of a finished run's ``metrics.json``, or one error naming the file."""
    metrics = read_json(path)
    value = metrics.get("final_loss") if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DamagedFileError(f"{path} holds no final_loss number: it is damaged or was not written by ppl-vae "
                               "sweep (delete the run's folder to train it again)")
    return float(value)


def write_combined(out: str | os.PathLike, fresh: Mapping[str, Any] | None = None) -> Path:
    """Build the combined diagnostics (:func:`rebuild_combined`) and write ``out/combined.nc`` (atomically).

    Every group is written in one opening of the file (ArviZ's own writer reopens
    it per group); :func:`ppl_vae.diagnostics.load` reads it as any InferenceData.
    """
    import xarray as xr

    from ppl_vae.diagnostics.io import make_netcdf_safe, save_tree

    combined = make_netcdf_safe(rebuild_combined(out, fresh, as_inference_data=False))
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs=dict(combined.attrs)),
                                  **{group: combined[group] for group in combined.groups()}})
    return save_tree(tree, Path(out) / COMBINED_NAME)
