"""A task's results written once, as one store; each run's diagnostics a view of it; combined.nc from memory."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ppl_vae.diagnostics import load
from ppl_vae.diagnostics.io import is_view, load_view, run_view, save_tree, stack_runs, view_target, write_view
from ppl_vae.sweep import SweepSpec, rebuild_combined, run_study
from ppl_vae.inference.checkpoint import load_checkpoint
from ppl_vae.report.runs import read_loss_history
from ppl_vae.sweep.api import run_task

SPEC = {
    "model": "cvae", "arch": "linear", "data": {"name": "synthetic", "n": 120, "dim": 6},
    "model_options": {"latent_dim": 3}, "grid": {"beta": [0.5, 2.0], "seed": "0-1"},
    "train": {"steps": 25, "lr": 0.02},
    "diagnostics": {"iw_samples": 8, "n_obs": 3, "n_draws": 5, "kl_samples": 2},
}


@pytest.fixture(scope="module")
def task_diagnostics():
    """Two configurations of one task, diagnosed together: (idatas, their names)."""
    from ppl_vae.sweep.api import plan_tasks

    spec = SweepSpec.from_dict({**SPEC, "grid": {"beta": [0.5, 2.0]}})
    bundle = spec.load_data()
    configs, seeds, names = spec.expand(bundle)
    (task,) = plan_tasks(configs, seeds, {"steps": 10, "lr": 0.02, "test_fraction": 0.1, "device": "cpu"})
    result = run_task(task, bundle, diagnostics={**SPEC["diagnostics"], "seed": 0, "max_points": None})
    return list(result.diagnostics), names


def test_a_view_reads_back_exactly_what_diagnose_gave_each_configuration(task_diagnostics, tmp_path):
    idatas, names = task_diagnostics
    save_tree(stack_runs(idatas, names), tmp_path / "store" / "task.nc")
    for idata, name in zip(idatas, names):
        view = tmp_path / "runs" / name / "diagnostics.nc"
        write_view(view, "task.nc", name)
        assert is_view(view)
        back = load(view)  # what the report and users read
        assert back.groups() == idata.groups()
        for group in idata.groups():
            xr.testing.assert_identical(back[group], idata[group])  # values, dtypes (bool flags), coords
            assert back[group].attrs == idata[group].attrs, group
        assert {k: str(v) for k, v in back.attrs.items()} == {k: str(v) for k, v in idata.attrs.items()}


def test_a_view_pointing_anywhere_but_its_sweeps_store_is_refused(tmp_path):
    view = tmp_path / "runs" / "a" / "diagnostics.nc"
    view.parent.mkdir(parents=True)
    for store in ("/etc/passwd", "../../../elsewhere.nc", "../../store/../x.nc", "../../store/.hidden"):
        view.write_text(json.dumps({"kind": "ppl_vae diagnostics view", "store": store, "run": "a"}))
        with pytest.raises(ValueError, match="must point to"):
            view_target(view)
    write_view(view, "gone.nc", "a")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_view(view)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "sweep"
    spec = SweepSpec.from_dict({**SPEC, "execution": {"group_size": 2}})
    return spec, out, run_study(spec, out)


def test_each_task_is_one_store_file_and_every_run_a_view_of_it(sweep):
    spec, out, summary = sweep
    assert summary.counts["finished"] == 4
    stores = sorted((out / "store").iterdir())
    assert len(stores) == 2  # two tasks of two configurations
    tree = xr.open_datatree(stores[0])
    in_store = json.loads(tree.attrs["runs"])
    assert len(in_store) == 2 and tree["loss/loss"].dims == ("run", "step")
    tree.close()
    for name in summary.finished:
        view = out / "runs" / name / "diagnostics.nc"
        assert is_view(view) and view.stat().st_size < 1000  # a pointer, not a copy
        assert not (out / "runs" / name / "loss_history.nc").exists()  # the loss is written once, in the store
        loss = read_loss_history(out / "runs" / name)  # what the report draws
        assert loss.dims == ("step",) and loss.attrs["units"] == "nats"
        store, run = view_target(view)
        with xr.open_datatree(store) as tree:
            np.testing.assert_array_equal(tree["loss"].to_dataset().loss.sel(run=run).values, loss.values)
        checkpoint = load_checkpoint(out / "runs" / name / "checkpoint.pt")  # the same numbers as trained
        np.testing.assert_array_equal(np.asarray(checkpoint["loss_history"]), loss.values)


def test_a_task_writes_its_store_in_one_opening_and_no_diagnostics_file_per_run(tmp_path, monkeypatch):
    from xarray.backends import writers

    opened = []  # the folder of every netCDF file opened for writing
    real_open = writers.get_writable_netcdf_store

    def counting_open(target, *args, **kwargs):
        opened.append(Path(str(target)).parent.name)
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(writers, "get_writable_netcdf_store", counting_open)
    spec = SweepSpec.from_dict({**SPEC, "grid": {"beta": [0.5, 1.0, 2.0]}})
    summary = run_study(spec, tmp_path / "sweep")
    assert summary.counts["finished"] == 3
    assert opened.count("store") == 1  # one task, one opening of its store
    runs_written = [where for where in opened if where.startswith("beta=")]
    assert runs_written == []  # no netCDF file per run: neither diagnostics nor losses (both in the store)


def test_a_resumed_sweep_combines_earlier_runs_from_their_stores(sweep, tmp_path):
    import shutil

    spec, out, summary = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    removed = summary.finished[-1]
    shutil.rmtree(copy / "runs" / removed)
    again = run_study(spec, copy)
    assert again.finished == (removed,) and len(again.skipped) == 3
    combined = load(copy / "combined.nc")
    assert list(combined.collapse.run.values) == list(summary.finished)
    before = load(out / "combined.nc")
    np.testing.assert_allclose(combined.metrics.iw_log_likelihood.values, before.metrics.iw_log_likelihood.values,
                               rtol=1e-5)
    np.testing.assert_array_equal(rebuild_combined(copy).collapse.z_kl.values, combined.collapse.z_kl.values)


def test_in_memory_views_equal_the_views_read_from_disk(sweep):
    from ppl_vae.diagnostics.io import load_tree

    _, out, summary = sweep
    name = summary.finished[0]
    store, run = view_target(out / "runs" / name / "diagnostics.nc")
    from_tree = run_view(load_tree(store), run)
    from_file = load(out / "runs" / name / "diagnostics.nc")
    for group in from_file.groups():
        xr.testing.assert_identical(from_tree[group], from_file[group])


def test_a_runs_loss_is_read_from_its_store_its_checkpoint_or_an_older_versions_file(sweep, tmp_path):
    """The report finds a sweep run's loss wherever this or an earlier version left it, the same numbers."""
    import shutil

    from ppl_vae._io import DamagedFileError

    _, out, summary = sweep
    name = summary.finished[0]
    from_store = read_loss_history(out / "runs" / name)
    alone = tmp_path / "alone"  # copied without its sweep's store: the view points nowhere
    shutil.copytree(out / "runs" / name, alone)
    xr.testing.assert_identical(read_loss_history(alone), from_store)
    (alone / "diagnostics.nc").unlink()  # e.g. recomputed into a file of its own: no view at all
    xr.testing.assert_identical(read_loss_history(alone), from_store)
    older = from_store.to_dataset().assign(loss=from_store + 1.0)  # a run directory of an earlier version
    older.to_netcdf(alone / "loss_history.nc")
    np.testing.assert_array_equal(read_loss_history(alone).values, from_store.values + 1.0)  # its file comes first
    damaged = tmp_path / "sweep"
    shutil.copytree(out, damaged)
    view_target(damaged / "runs" / name / "diagnostics.nc")[0].write_bytes(b"CDF\x01 cut short")
    with pytest.raises(DamagedFileError, match="training loss"):
        read_loss_history(damaged / "runs" / name)


def test_combined_nc_from_the_stores_in_memory_equals_the_runs_combined_one_by_one(tmp_path):
    """Two tasks whose runs interleave in sweep order and differ in latent size (NaN padding), then a resume."""
    import shutil

    from ppl_vae.sweep.spec import run_name
    from ppl_vae.sweep.store import write_combined

    spec = SweepSpec.from_dict({**SPEC, "model_options": {}, "grid": {"beta": [0.5, 2.0], "latent_dim": [2, 3]}})
    out = tmp_path / "sweep"
    summary = run_study(spec, out)  # tasks by latent size: runs 0 and 2, runs 1 and 3
    assert summary.counts["finished"] == 4 and len(list((out / "store").iterdir())) == 2
    shutil.copy(out / "combined.nc", tmp_path / "from_memory.nc")
    write_combined(out)  # nothing in memory: every run read from its view and combined one by one
    _assert_same_combined(load(tmp_path / "from_memory.nc"), load(out / "combined.nc"))
    sweep_order = [run_name(point) for point in spec.points()]  # the tasks' runs interleave in it
    assert list(load(out / "combined.nc").collapse.run.values) == sweep_order != list(summary.finished)
    shutil.rmtree(out / "runs" / summary.finished[1])  # a resume: one fresh run among three earlier ones
    assert run_study(spec, out).finished == (summary.finished[1],)
    shutil.copy(out / "combined.nc", tmp_path / "resumed.nc")
    write_combined(out)
    _assert_same_combined(load(tmp_path / "resumed.nc"), load(out / "combined.nc"))


def _assert_same_combined(a, b):
    assert a.groups() == b.groups()
    for group in a.groups():
        xr.testing.assert_identical(a[group], b[group])
        for name in a[group].variables:
            assert a[group][name].attrs == b[group][name].attrs, (group, name)
    assert dict(a.attrs) == dict(b.attrs)


def _concat(parts):
    """What stack_runs stacked with before it built alike runs directly: xarray's concatenation."""
    return xr.concat(parts, dim="run", data_vars="all", coords="different", compat="equals", join="exact",
                     combine_attrs="drop_conflicts")


def test_a_tasks_runs_are_stacked_as_xarray_concatenates_them(task_diagnostics):
    from ppl_vae.diagnostics.io import _stack_alike

    idatas, _ = task_diagnostics
    for group in idatas[0].groups():
        parts = [idata[group] for idata in idatas]
        direct = _stack_alike(parts)
        assert direct is not None, group  # one task's configurations: the direct path is taken
        xr.testing.assert_identical(direct, _concat(parts))
        for name in direct.variables:
            assert direct[name].attrs == _concat(parts)[name].attrs, (group, name)


def test_runs_whose_coordinates_or_attributes_differ_are_concatenated_by_xarray(task_diagnostics):
    from ppl_vae.diagnostics.io import _stack_alike

    idatas, names = task_diagnostics
    collapse = [idata["collapse"] for idata in idatas]
    n = collapse[0].sizes["obs"]
    moved = [part.assign_coords(tag=("obs", np.arange(n) * k)) for k, part in enumerate(collapse)]
    assert _stack_alike(moved) is None  # a coordinate differs between the runs
    tree = stack_runs([_Groups({"collapse": part}, idata.attrs) for part, idata in zip(moved, idatas)], names)
    xr.testing.assert_identical(tree["diagnostics/collapse"].to_dataset(inherit=False),
                                _concat(moved).assign_coords(run=names))
    # a data attribute that differs is dropped, as xarray's drop_conflicts drops it
    marked = [part.assign_attrs(only_here=k) for k, part in enumerate(collapse)]
    direct = _stack_alike(marked)
    assert direct is not None and "only_here" not in direct.attrs
    xr.testing.assert_identical(direct, _concat(marked))


class _Groups(dict):
    """Groups and attributes, read as stack_runs reads a run's diagnostics."""

    def __init__(self, groups, attrs):
        super().__init__(groups)
        self.attrs = attrs

    def groups(self):
        return list(self)


def test_safe_dataset_leaves_the_given_dataset_untouched():
    from ppl_vae.diagnostics.io import safe_dataset

    ds = xr.Dataset({"a": ("x", [1.0, 2.0], {"flag": True, "opts": {"k": 1}})}, coords={"x": [0, 1]},
                    attrs={"none": None})
    safe = safe_dataset(ds)
    assert safe["a"].attrs == {"flag": 1, "opts": '{"k": 1}'} and safe.attrs == {"none": "None"}
    assert ds["a"].attrs == {"flag": True, "opts": {"k": 1}} and ds.attrs == {"none": None}
