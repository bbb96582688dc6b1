"""Checks made before a run starts work: what it will cost and where it will write.

A run that would fail after training (a closed-form theory too large for
memory, a run name the file system cannot hold) is refused before training,
with one error naming the cause; see docs/reliability.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from ppl_vae._lock import check_name_length
from ppl_vae._validate import check_theory_cost


def check_before_training(config, bundle, run_dir: str | os.PathLike | None = None) -> None:
    """Refuse a run whose end would fail: the linear theory's ``d x d`` cost, the run directory's name.

    Parameters
    ----------
    config
        The model config (a linear one gets its closed-form theory computed at the end).
    bundle
        The data (``x`` ``(n, d)``, ``y`` ``(n, d_y)`` for pairs).
    run_dir
        Where the run will be written, or None.

    Raises
    ------
    ppl_vae._validate.MemoryBudgetError
        The theory's matrices would not fit in memory.
    OSError
        A path component is longer than the file system allows (``ENAMETOOLONG``).
    """
    if run_dir is not None:
        check_name_length(Path(run_dir))
    if getattr(config, "arch", None) == "linear":
        check_theory_cost("x", int(bundle.x.shape[-1]))
        if getattr(bundle, "y", None) is not None:
            check_theory_cost("y", int(bundle.y.shape[-1]))


#: Attributes of a diagnostics file that hold a JSON object (mapping).
JSON_MAPPING_ATTRS = ("model_config", "hyperparameters", "data_spec")


def check_json_attrs(attrs: dict, path: str | os.PathLike, names: tuple[str, ...] = JSON_MAPPING_ATTRS) -> None:
    """Refuse a sent file whose JSON attributes are not JSON objects (a list, a number, broken text).

    Raises
    ------
    ppl_vae._io.DamagedFileError
        Naming the file and the attribute.
    """
    import json

    from ppl_vae._io import DamagedFileError

    for name in names:
        if name not in attrs:
            continue
        value = attrs[name]
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise DamagedFileError(f"{path}: attribute {name!r} must be a JSON object (mapping), got "
                                   f"{str(value)[:60]!r}; the file is damaged or was not written by ppl_vae")


# --------------------------------------------------------------------------- sweeps


def check_run_names(out: str | os.PathLike, names) -> None:
    """Refuse a sweep whose run folders the file system cannot hold, before any training.

    Raises
    ------
    OSError
        ``ENAMETOOLONG`` naming the first run name over the limit.
    """
    runs = Path(out) / "runs"
    for name in names:
        check_name_length(runs / name)


def saved_sweep(path: Path, saved) -> dict:
    """``spec.json``'s content, refused unless it has the form a sweep writes (identity, spec, grid_order).

    Raises
    ------
    ppl_vae._io.DamagedFileError
        Naming the file and what is wrong with it.
    """
    from ppl_vae._io import DamagedFileError

    if not isinstance(saved, dict):
        raise DamagedFileError(f"{path} is not a sweep spec record (a JSON object), got a {type(saved).__name__}; "
                               "it is damaged or was not written by ppl-vae sweep")
    wrong = [key for key, kind in (("identity", dict), ("spec", dict), ("grid_order", list))
             if not isinstance(saved.get(key), kind)]
    if wrong:
        raise DamagedFileError(f"{path} lacks {', '.join(wrong)} (or has the wrong type): it is damaged or was not "
                               "written by ppl-vae sweep")
    return saved


def sweep_identity(spec, bundle) -> dict:
    """What fixes a sweep's results: the spec's identity plus the SHA-256 of its data file (when it has one)."""
    identity = spec.identity()
    digest = (bundle.attrs.get("spec") or {}).get("sha256")
    if digest:
        identity["data_sha256"] = digest
    return identity


def identity_changes(saved: dict, now: dict) -> list[str]:
    """Entries of ``now`` that differ from ``saved`` (a record without ``data_sha256`` predates it: not compared)."""
    return sorted(key for key in now if saved.get(key) != now[key]
                  and not (key == "data_sha256" and key not in saved))


def data_changed_message(out: Path, saved: dict, now: dict) -> str:
    """The error of a sweep rerun on a data file whose bytes changed."""
    name = (now.get("data") or {}).get("name", "its data file")
    return (f"{out} was run on {name} with SHA-256 {str(saved['data_sha256'])[:12]}..., but the file has "
            f"changed (now {str(now['data_sha256'])[:12]}...); restore the file, use another --out, or pass "
            "--overwrite to discard the sweep's results")


def foreign_sweep_entries(out: Path, saved: dict) -> list[str]:
    """What in a sweep directory its own records do not account for (``--overwrite`` refuses to delete those).

    A sweep writes ``spec.json``, ``summary.json``, ``combined.nc``, ``runs/<name>/``
    for each point of its saved spec (holding run files only),
    ``groups/<id>/`` (group checkpoints, run files only) and ``store/<task>.nc``.
    """
    from ppl_vae._io import visible_entries
    from ppl_vae.inference.runs import RUN_FILES
    from ppl_vae.sweep.spec import SweepSpec, run_name

    raw = dict(saved["spec"])
    raw["grid"] = {key: raw["grid"][key] for key in saved["grid_order"] if key in raw.get("grid", {})}
    names = {run_name(point) for point in SweepSpec.from_dict(raw).points()}
    foreign = []
    for entry in visible_entries(out):
        if entry.name in ("spec.json", "summary.json", "combined.nc") and entry.is_file() and not entry.is_symlink():
            continue
        if entry.name == "store" and entry.is_dir() and not entry.is_symlink():  # one file per task
            foreign += [f"store/{f.name}" for f in visible_entries(entry)
                        if f.suffix != ".nc" or not f.is_file() or f.is_symlink()]
            continue
        if entry.name in ("runs", "groups") and entry.is_dir() and not entry.is_symlink():
            for child in visible_entries(entry):
                ours = (entry.name == "groups" or child.name in names) and child.is_dir() and not child.is_symlink()
                if not ours or any(f.name not in RUN_FILES or not f.is_file() or f.is_symlink()
                                   for f in visible_entries(child)):
                    foreign.append(f"{entry.name}/{child.name}")
            continue
        foreign.append(entry.name)
    return sorted(foreign)


def discard_damaged_group(checkpoint_dir: str | os.PathLike | None, error: BaseException | None = None) -> bool:
    """Remove a group checkpoint folder that cannot be resumed, with a warning; True if it was removed.

    Without ``error`` the folder's ``config.json`` and ``checkpoint.pt`` are read
    and checked (:func:`ppl_vae.inference.checkpoint.check_state`); with
    ``error`` (the resume failed on it) it is discarded for that reason. The
    group is then trained again from the start instead of failing on every rerun.
    """
    import shutil
    import warnings

    from ppl_vae._io import DamagedFileError, read_json
    from ppl_vae.inference.checkpoint import FIT_KEYS, CHECKPOINT_NAME, check_state, load_checkpoint

    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return False
    folder = Path(checkpoint_dir)
    if error is None:
        try:
            if (folder / "config.json").is_file() and not isinstance(read_json(folder / "config.json"), dict):
                raise DamagedFileError(f"{folder / 'config.json'} is not a run configuration")
            if (folder / CHECKPOINT_NAME).is_file():
                path = folder / CHECKPOINT_NAME
                check_state(load_checkpoint(path), path, keys=FIT_KEYS)
            return False
        except (DamagedFileError, ValueError, OSError) as err:
            error = err
    warnings.warn(f"group checkpoint {folder} is damaged ({' '.join(str(error).split())[:200]}); discarded, the "
                  "group is trained again from the start", stacklevel=2)
    shutil.rmtree(folder, ignore_errors=True)
    return True


def read_run_config(path: Path) -> dict:
    """A run's ``config.json``, refused by name unless it is a mapping whose model, data and train are mappings.

    Raises
    ------
    ppl_vae._io.DamagedFileError
        Naming the file and the entry.
    """
    from ppl_vae._io import DamagedFileError, read_json

    info = read_json(path)
    if not isinstance(info, dict):
        raise DamagedFileError(f"{path} is not a run configuration (a JSON object), got a {type(info).__name__}; "
                               "it is damaged or was not written by ppl_vae")
    wrong = [key for key in ("model", "data", "train") if key in info and not isinstance(info[key], dict)]
    if wrong:
        raise DamagedFileError(f"{path}: {', '.join(map(repr, wrong))} must be a mapping; the file is damaged or was "
                               "not written by ppl_vae")
    return info
