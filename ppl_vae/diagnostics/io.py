"""netCDF round trip of diagnostics, and stacking several runs along ``run``.

ArviZ is imported only where an ``InferenceData`` is read or built; the functions
a sweep uses to stack and write diagnostics (:func:`stack_runs`, :func:`save_tree`,
:func:`run_view` and :func:`combine` with ``as_inference_data=False``) also take
and give :class:`~ppl_vae.diagnostics.plain.PlainDiagnostics`, and import no ArviZ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .._io import atomic_write
from .plain import PlainDiagnostics, is_diagnostics

if TYPE_CHECKING:
    import arviz as az

ENGINE = "netcdf4"


def netcdf_safe_attrs(attrs: dict) -> dict:
    """Attributes netCDF can store: bools -> int, None -> 'None', dicts / lists -> JSON strings."""
    safe = {}
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            safe[key] = int(value)
        elif value is None:
            safe[key] = "None"
        elif isinstance(value, (dict, list, tuple)):
            safe[key] = json.dumps(value, sort_keys=True, default=str)
        else:
            safe[key] = value
    return safe


def safe_dataset(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``ds`` whose attributes (its own and every variable's) netCDF can store."""
    ds = ds.copy()
    ds.attrs = netcdf_safe_attrs(ds.attrs)
    # The copy's Variable objects are its own (the data is shared): setting their attrs leaves
    # ``ds``'s untouched, without building a DataArray per variable (``ds[name]``), which cost
    # more than the rest of a sweep's assembly.
    for variable in ds.variables.values():
        variable.attrs = netcdf_safe_attrs(variable.attrs)
    return ds


def make_netcdf_safe(idata: az.InferenceData | PlainDiagnostics) -> az.InferenceData | PlainDiagnostics:
    """A copy of ``idata`` (of the same type) whose attributes (top level, groups, variables) netCDF can store."""
    plain = PlainDiagnostics({name: safe_dataset(idata[name]) for name in idata.groups()},
                             netcdf_safe_attrs(dict(idata.attrs)))
    return plain if isinstance(idata, PlainDiagnostics) else plain.to_inference_data()


def save(idata: az.InferenceData, path: str | os.PathLike) -> Path:
    """Write ``idata`` to a netCDF file atomically (a crash never leaves half a file).

    Attributes netCDF cannot hold are converted first (see :func:`netcdf_safe_attrs`);
    :func:`diagnose` output is already safe, so ``load(save(d))`` equals ``d``.
    """
    safe = make_netcdf_safe(idata)
    if isinstance(safe, PlainDiagnostics):
        safe = safe.to_inference_data()
    return atomic_write(path, lambda tmp: safe.to_netcdf(str(tmp), engine=ENGINE))


def load(path: str | os.PathLike) -> az.InferenceData:
    """Read diagnostics written by :func:`save`, or a view (:func:`write_view`), into memory (file closed)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no diagnostics file at {path}")
    if is_view(path):  # a sweep run's diagnostics.nc: a view of its task's store
        return load_view(path)
    import arviz as az

    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(str(path), engine=ENGINE)


def _prepared(ds: xr.Dataset, run: str) -> tuple[xr.Dataset, list[str]]:
    """One run's group ready to stack: every dimension indexed, flags as floats, a leading ``run``.

    Integer coordinates on every dimension let runs of different sizes align
    (outer join); non-index coordinates (``label``, ``in_z1``) may differ
    between runs, so they are stacked like data variables and restored after.
    """
    missing = {dim: np.arange(size) for dim, size in ds.sizes.items() if dim not in ds.coords}
    ds = ds.assign_coords(missing)
    extra_coords = [name for name in ds.coords if name not in ds.dims]
    ds = ds.reset_coords(extra_coords)
    # NaN padding cannot live in a boolean array: store flags as 0.0 / 1.0
    ds = ds.assign({name: ds[name].astype(np.float64) for name, v in ds.data_vars.items() if v.dtype == bool})
    return ds.expand_dims(run=[run]), extra_coords


def run_hyperparameters(idatas: Sequence[az.InferenceData | PlainDiagnostics]) -> dict[str, np.ndarray]:
    """Hyper-parameter name -> one value per run (NaN where a run's family lacks it)."""
    per_run = [json.loads(idata.attrs.get("hyperparameters", "{}")) for idata in idatas]
    names = sorted({name for hp in per_run for name in hp})
    return {name: np.array([float(hp.get(name, np.nan)) for hp in per_run]) for name in names}


def named_runs(idatas: Mapping[str, az.InferenceData] | Sequence[az.InferenceData],
               run_names: Sequence[str] | None = None) -> dict[str, az.InferenceData]:
    """Run name -> InferenceData from a dict (names = keys) or a list (names ``run_names``, default ``run<i>``).

    Raises
    ------
    ValueError
        ``run_names`` with a dict, names not distinct or not one per run, or
        something that is not an InferenceData.
    """
    if is_diagnostics(idatas) or isinstance(idatas, (str, bytes)) or not isinstance(idatas, Iterable):
        raise ValueError(f"idatas must be a list of InferenceData or a dict name -> InferenceData, "
                         f"got {type(idatas).__name__}")
    if isinstance(idatas, Mapping):
        if run_names is not None:
            raise ValueError("run_names is for a list of runs; a dict already names its runs by its keys")
        names, runs = [str(name) for name in idatas], list(idatas.values())
    else:
        runs = list(idatas)
        names = [f"run{i}" for i in range(len(runs))] if run_names is None else [str(n) for n in run_names]
    if len(names) != len(runs) or len(set(names)) != len(names):
        raise ValueError(f"run_names must be {len(runs)} distinct labels, got {list(names)!r}")
    odd = [name for name, run in zip(names, runs) if not is_diagnostics(run)]
    if odd:
        raise ValueError(f"every run must be an arviz.InferenceData (diagnose / load output); not {odd}")
    return dict(zip(names, runs))


def combine(idatas: Mapping[str, az.InferenceData] | Sequence[az.InferenceData],
            run_names: Sequence[str] | None = None, *,
            as_inference_data: bool = True) -> az.InferenceData | PlainDiagnostics:
    """Stack several runs' diagnostics along a new ``run`` dimension.

    Every group present in all runs is concatenated; each run's
    hyper-parameters (``beta``, ``eta_dec``, ``beta1``, ...), ``family`` and
    ``arch`` become coordinates along ``run``, so collapse against beta is
    ``combined.collapse.swap_dims(run="beta")`` or a ``.where`` / ``.sel``.

    Runs whose latent or data sizes differ are aligned on the integer
    coordinates of each dimension and padded with NaN (boolean flags such as
    ``z_collapsed`` become 0.0 / 1.0 floats for that reason). Runs of different
    families keep their own variables (``z_*`` for a VAE / CVAE, ``z1_*`` and
    ``z2_*`` for an MHVAE), NaN for the runs that lack them. Non-index
    coordinates such as ``label`` gain a ``run`` dimension.

    Parameters
    ----------
    idatas
        Outputs of :func:`diagnose` (or :func:`load`): a list, or a dict run
        name -> InferenceData (the form :func:`compare_heldout` takes too).
    run_names
        One label per run of a list (default ``run0``, ``run1``, ...); must be distinct.
    as_inference_data
        False: the result as a :class:`~ppl_vae.diagnostics.plain.PlainDiagnostics`
        (the same groups and attributes; ArviZ is not imported if no run is an
        ``InferenceData``).
    """
    runs = named_runs(idatas, run_names)
    if not runs:
        raise ValueError("idatas must hold at least one InferenceData")
    names, idatas = list(runs), list(runs.values())
    shared = [g for g in idatas[0].groups() if all(g in idata.groups() for idata in idatas)]
    groups = {}
    for group in shared:
        groups[group] = _concat_prepared([_prepared(idata[group], name) for idata, name in zip(idatas, names)])
    return _finish_combined(groups, names, [idata.attrs for idata in idatas], as_inference_data)


def _concat_prepared(prepared: list[tuple[xr.Dataset, list[str]]]) -> xr.Dataset:
    """Prepared runs (or blocks of runs) of one group concatenated along ``run``, their coordinates restored."""
    combined = xr.concat(
        [ds for ds, _ in prepared],
        dim="run",
        data_vars="all",
        coords="minimal",
        compat="equals",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    extra_coords = sorted({name for _, extra in prepared for name in extra})
    return combined.set_coords(extra_coords)


def _finish_combined(groups: dict[str, xr.Dataset], names: list[str], attrs: list[Mapping],
                     as_inference_data: bool) -> az.InferenceData | PlainDiagnostics:
    """The combined groups with the runs' hyper-parameters, family and arch along ``run``, and their provenance."""
    holders = [PlainDiagnostics({}, a) for a in attrs]  # what run_hyperparameters reads: .attrs
    run_coords: dict = {"run": names}
    run_coords.update({name: ("run", values) for name, values in run_hyperparameters(holders).items()})
    run_coords["family"] = ("run", np.array([str(a.get("family", "")) for a in attrs]))
    run_coords["arch"] = ("run", np.array([str(json.loads(a.get("model_config", "{}")).get("arch", ""))
                                           for a in attrs]))
    groups = {group: ds.assign_coords(run_coords) for group, ds in groups.items()}
    # each run's provenance (config, data spec, seed), keyed by run name
    combined_attrs = {"runs": json.dumps({name: _plain(a) for name, a in zip(names, attrs)}, default=str)}
    plain = PlainDiagnostics(groups, combined_attrs)
    return plain.to_inference_data() if as_inference_data else plain


def _plain(attrs: dict) -> dict:
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in attrs.items()}


# --------------------------------------------------------------------------- task stores and their views
#
# A sweep task diagnoses K configurations of one architecture at once; their
# diagnostics share every dimension and coordinate, so the task keeps them as one
# tree with a leading ``run`` dimension (a "store", one netCDF file written in one
# opening) and each run's ``diagnostics.nc`` is a small JSON "view" naming the store
# and the run. :func:`load` reads a view as the run's own InferenceData.

STORE_KIND = "ppl_vae task store"
VIEW_KIND = "ppl_vae diagnostics view"
#: Where a view may point: the ``store`` folder two levels up (``<sweep>/runs/<run>/diagnostics.nc``).
VIEW_STORE_PREFIX = "../../store/"


def stack_runs(idatas: Sequence[az.InferenceData | PlainDiagnostics], names: Sequence[str],
               extra: dict[str, xr.Dataset] | None = None, attrs: dict | None = None) -> xr.DataTree:
    """K runs' diagnostics with identical layouts (one task's configurations) as one tree along ``run``.

    Parameters
    ----------
    idatas
        :func:`diagnose` outputs whose groups have the same dimensions and
        coordinates (configurations of one architecture diagnosed on the same rows).
    names
        One distinct label per run (the ``run`` coordinate).
    extra
        Further nodes of the tree (e.g. ``{"loss": Dataset}``), written as they are.
    attrs
        Attributes of the tree's root.

    Returns
    -------
    xarray.DataTree
        ``diagnostics/<group>``: each group stacked along a leading ``run``
        (coordinates that differ between runs gain the dimension);
        ``runs/<k>``: run k's top-level attributes, and ``runs/<k>/<group>`` the
        group attributes that differ between runs. :func:`run_view` undoes it.
    """
    names = [str(name) for name in names]
    if len(idatas) != len(names) or len(set(names)) != len(names) or not names:
        raise ValueError(f"names must be {len(idatas)} distinct labels, got {names!r}")
    nodes: dict[str, xr.Dataset] = {}
    for group in idatas[0].groups():
        parts = [idata[group] for idata in idatas]
        stacked = _stack_alike(parts)
        if stacked is None:  # the runs' coordinates differ: xarray's concatenation sorts it out
            stacked = xr.concat(parts, dim="run", data_vars="all", coords="different", compat="equals",
                                join="exact", combine_attrs="drop_conflicts")
        nodes[f"diagnostics/{group}"] = safe_dataset(stacked.assign_coords(run=names))
        for k, part in enumerate(parts):
            if part.attrs != stacked.attrs:
                nodes[f"runs/{k}/{group}"] = xr.Dataset(attrs=netcdf_safe_attrs(dict(part.attrs)))
    for k, idata in enumerate(idatas):
        nodes[f"runs/{k}"] = xr.Dataset(attrs=netcdf_safe_attrs(dict(idata.attrs)))
    nodes.update(extra or {})
    root = xr.Dataset(attrs=netcdf_safe_attrs({"kind": STORE_KIND, "runs": json.dumps(names), **(attrs or {})}))
    return xr.DataTree.from_dict({"/": root, **nodes})


def _same_attrs(attrs: Sequence[Mapping]) -> bool:
    """Whether every mapping holds the same keys and values (arrays compared element-wise)."""
    first = attrs[0]
    for other in attrs[1:]:
        if other.keys() != first.keys():
            return False
        for key, value in first.items():
            if isinstance(value, np.ndarray) or isinstance(other[key], np.ndarray):
                if not np.array_equal(value, other[key]):
                    return False
            elif type(value) is not type(other[key]) or value != other[key]:
                return False
    return True


def _merged_attrs(attrs: Sequence[Mapping]) -> dict:
    """``combine_attrs='drop_conflicts'`` of ``attrs`` (what :func:`xarray.concat` gives)."""
    if _same_attrs(attrs):
        return dict(attrs[0])
    return xr.merge([xr.Dataset(attrs=dict(a)) for a in attrs], combine_attrs="drop_conflicts").attrs


def _stack_alike(parts: Sequence[xr.Dataset]) -> xr.Dataset | None:
    """``xr.concat(parts, dim='run', data_vars='all', coords='different', ...)`` of stack_runs, built directly.

    Only for parts whose coordinates are identical (values and attributes) and
    whose data variables have the same names, dimensions and shapes, as the
    configurations of one task diagnosed on the same rows have: every data
    variable is then ``np.stack``-ed along a new leading ``run`` and the
    coordinates are kept once. xarray's concatenation checks and aligns each
    variable of each run (~40 ms a group for 16 runs on a loaded CPU, the
    larger part of writing a task). Returns None for anything else (the caller
    concatenates with xarray).
    """
    first = parts[0]
    if "run" in first.dims or "run" in first.variables:
        return None
    names, coord_names = list(first.data_vars), set(first.coords)
    for part in parts[1:]:
        if list(part.data_vars) != names or set(part.coords) != coord_names:
            return None
        for name in coord_names:
            mine, theirs = first.variables[name], part.variables[name]
            if (mine.dims != theirs.dims or mine.dtype != theirs.dtype or not np.array_equal(mine.values, theirs.values)
                    or not _same_attrs([mine.attrs, theirs.attrs])):
                return None
        for name in names:
            mine, theirs = first.variables[name], part.variables[name]
            if mine.dims != theirs.dims or mine.shape != theirs.shape:
                return None
    variables = {}
    for name in names:
        each = [part.variables[name] for part in parts]
        variables[name] = xr.Variable(("run", *each[0].dims), np.stack([v.values for v in each]),
                                      _merged_attrs([v.attrs for v in each]))
    coords = {name: first.variables[name].copy(deep=False) for name in first.coords}
    return xr.Dataset(variables, coords=coords, attrs=_merged_attrs([part.attrs for part in parts]))


def store_runs(tree: xr.DataTree) -> list[str]:
    """The run labels of a store, in order."""
    if tree.attrs.get("kind") != STORE_KIND:
        raise ValueError("not a ppl_vae task store (no 'kind' attribute naming one)")
    return list(json.loads(tree.attrs["runs"]))


def run_view(tree: xr.DataTree, name: str, *,
             as_inference_data: bool = True) -> az.InferenceData | PlainDiagnostics:
    """Run ``name`` of a store as its own InferenceData (what :func:`stack_runs` was given for it).

    ``as_inference_data=False``: as a :class:`~ppl_vae.diagnostics.plain.PlainDiagnostics` (no ArviZ).
    """
    k = store_runs(tree).index(str(name))
    groups = {}
    for group, node in tree["diagnostics"].children.items():
        ds = node.to_dataset(inherit=False).isel(run=k, drop=True)
        own = tree["runs"][str(k)].children.get(group)
        ds.attrs = dict(own.attrs) if own is not None else dict(ds.attrs)
        groups[group] = ds
    plain = PlainDiagnostics(groups, dict(tree["runs"][str(k)].attrs))
    return plain.to_inference_data() if as_inference_data else plain


def save_tree(tree: xr.DataTree, path: str | os.PathLike) -> Path:
    """Write a tree to one netCDF file, every group in one opening of the file, atomically."""
    return atomic_write(path, lambda tmp: tree.to_netcdf(str(tmp), engine=ENGINE))


def load_tree(path: str | os.PathLike) -> xr.DataTree:
    """Read a tree written by :func:`save_tree`, fully into memory (the file is closed)."""
    with xr.open_datatree(str(path), engine=ENGINE) as tree:
        return tree.load().copy()


def write_view(path: str | os.PathLike, store_name: str, run: str) -> Path:
    """Write ``path`` as a view of run ``run`` of ``<sweep>/store/<store_name>`` (atomically)."""
    if "/" in store_name or store_name.startswith("."):
        raise ValueError(f"store_name must be a plain file name, got {store_name!r}")
    text = json.dumps({"kind": VIEW_KIND, "store": VIEW_STORE_PREFIX + store_name, "run": str(run)})
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def is_view(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a view (JSON) rather than a netCDF file (netCDF starts ``CDF`` or ``\\x89HDF``)."""
    with open(path, "rb") as file:
        return file.read(1) == b"{"


def view_target(path: str | os.PathLike) -> tuple[Path, str]:
    """(store file, run label) a view names; only a store beside its sweep's runs is accepted.

    Raises
    ------
    ValueError
        The file is not a view, or it points anywhere but ``../../store/<file>``.
    """
    path = Path(path)
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a diagnostics view ({err})") from None
    store = pointer.get("store") if isinstance(pointer, dict) else None
    if pointer.get("kind") != VIEW_KIND or not isinstance(store, str) or not isinstance(pointer.get("run"), str):
        raise ValueError(f"{path}: not a diagnostics view (kind, store and run expected)")
    name = store.removeprefix(VIEW_STORE_PREFIX)
    if not store.startswith(VIEW_STORE_PREFIX) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"{path}: a view must point to {VIEW_STORE_PREFIX}<file>, got {store!r}")
    return path.parent.parent.parent / "store" / name, pointer["run"]


def load_view(path: str | os.PathLike) -> az.InferenceData:
    """The run's diagnostics a view names, read from its task's store."""
    store, run = view_target(path)
    if not store.is_file():
        raise FileNotFoundError(f"{path} is a view of {store}, which is missing")
    with xr.open_datatree(str(store), engine=ENGINE) as tree:
        if run not in store_runs(tree):
            raise ValueError(f"{path}: run {run!r} is not in {store}")
        view = run_view(tree, run)
        for group in view.groups():
            view[group].load()
    return view


def load_view_loss(path: str | os.PathLike) -> xr.DataArray:
    """The training loss over ``step`` of the run a view names, read from its task's store.

    A sweep writes each task's losses once, as the store's ``loss`` node
    (``loss`` over ``(run, step)``, nats); this is the run's row, shaped as a
    run directory's ``loss_history.nc`` holds it (``loss`` over ``step``).
    Only that node of the store is read.

    Raises
    ------
    FileNotFoundError
        The store the view names is missing.
    ValueError
        The file is not a view, or the store holds no loss for its run.
    """
    store, run = view_target(path)
    if not store.is_file():
        raise FileNotFoundError(f"{path} is a view of {store}, which is missing")
    with xr.open_dataset(str(store), group="loss", engine=ENGINE) as losses:
        if "loss" not in losses.data_vars or run not in losses.indexes.get("run", ()):
            raise ValueError(f"{store} holds no training loss of run {run!r}")
        return losses["loss"].sel(run=run, drop=True).load()


class StoreEntry:
    """Run ``name`` of a task store held in memory (:func:`stack_runs`), for :func:`combine_entries`.

    It reads as that run's diagnostics do (``attrs``, ``groups()``, ``entry[group]``,
    through :func:`run_view`), but :func:`combine_entries` takes its store's runs
    as one block, never cutting them apart and stacking them again.
    """

    def __init__(self, tree: xr.DataTree, name: str):
        self.tree, self.name = tree, str(name)
        self.position = store_runs(tree).index(self.name)

    @property
    def attrs(self) -> dict:
        return dict(self.tree["runs"][str(self.position)].attrs)

    def group_attrs(self, group: str) -> dict:
        """The run's own attributes of ``group`` (as :func:`run_view` restores them)."""
        own = self.tree["runs"][str(self.position)].children.get(group)
        return dict((own if own is not None else self.tree["diagnostics"][group]).attrs)

    def view(self) -> PlainDiagnostics:
        """The run's diagnostics on their own (:func:`run_view`)."""
        return run_view(self.tree, self.name, as_inference_data=False)

    def groups(self) -> list[str]:
        return self.view().groups()

    def __getitem__(self, group: str) -> xr.Dataset:
        return self.view()[group]


def _prepared_block(ds: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    """A group's runs stacked along a leading ``run`` (a store's), prepared as :func:`_prepared` prepares each.

    Run by run, every dimension gets an integer coordinate, non-index
    coordinates become variables (restored after the concatenation), boolean
    flags become floats and every variable gains the ``run`` dimension; a
    coordinate the block's runs share (kept once, without ``run``, in the
    store) is therefore repeated along ``run`` here too.
    """
    missing = {dim: np.arange(size) for dim, size in ds.sizes.items() if dim not in ds.coords}
    ds = ds.assign_coords(missing)
    extra_coords = [name for name in ds.coords if name not in ds.dims]
    ds = ds.reset_coords(extra_coords)
    ds = ds.assign({name: ds[name].astype(np.float64) for name, v in ds.data_vars.items() if v.dtype == bool})
    n_runs = ds.sizes["run"]
    ds = ds.assign({name: v.expand_dims(run=n_runs) for name, v in ds.data_vars.items() if "run" not in v.dims})
    return ds, extra_coords


def combine_entries(runs: Mapping[str, StoreEntry | az.InferenceData | PlainDiagnostics], *,
                    as_inference_data: bool = True) -> az.InferenceData | PlainDiagnostics:
    """:func:`combine` of named runs, some of them :class:`StoreEntry` of stores in memory: the same result.

    The runs of one store are concatenated as one block (one preparation per
    group and store instead of one per run); every other run as :func:`combine`
    does; the result is put in the order of ``runs``. Group attributes are those
    :func:`combine` keeps (``drop_conflicts`` over each run's own).
    """
    names = list(runs)
    if not any(isinstance(run, StoreEntry) for run in runs.values()):
        return combine(dict(runs), as_inference_data=as_inference_data)
    blocks: dict[int, tuple[xr.DataTree, list[str]]] = {}
    singles = []
    for name, run in runs.items():
        if isinstance(run, StoreEntry):
            blocks.setdefault(id(run.tree), (run.tree, []))[1].append(name)
        elif is_diagnostics(run):
            singles.append(name)
        else:
            raise ValueError(f"every run must be an arviz.InferenceData, PlainDiagnostics or StoreEntry; not {name}")
    first = runs[names[0]]
    shared = [g for g in first.groups()
              if all(g in (run.tree["diagnostics"].children if isinstance(run, StoreEntry) else run.groups())
                     for run in runs.values())]
    given = [name for _, members in blocks.values() for name in members] + singles  # concatenation order
    order = [given.index(name) for name in names]
    groups = {}
    for group in shared:
        prepared = []
        for tree, members in blocks.values():
            stacked = tree["diagnostics"][group].to_dataset(inherit=False)
            labels = store_runs(tree)
            if members != labels:
                stacked = stacked.isel(run=[labels.index(name) for name in members])
            prepared.append(_prepared_block(stacked))
        prepared += [_prepared(runs[name][group], name) for name in singles]
        combined = _concat_prepared(prepared)
        if order != list(range(len(names))):
            combined = combined.isel(run=order)
        own = [run.group_attrs(group) if isinstance(run, StoreEntry) else dict(run[group].attrs)
               for run in runs.values()]
        combined.attrs = _merged_attrs(own)
        groups[group] = combined
    return _finish_combined(groups, names, [run.attrs for run in runs.values()], as_inference_data)
