"""Sweep specs, per-configuration run directories, failures, resume and combined.nc (local backend)."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from ppl_vae.diagnostics import combine, load
from ppl_vae.inference import load_run
from ppl_vae.sweep.api import plan_tasks
from ppl_vae.sweep.study import (
    SpecMismatchError,
    SweepSpec,
    load_spec,
    parse_values,
    rebuild_combined,
    run_group,
    run_status,
    run_study,
)

TINY = {
    "model": "cvae", "arch": "linear", "data": {"name": "synthetic", "n": 120, "dim": 6},
    "model_options": {"latent_dim": 3},
    "train": {"steps": 25, "lr": 0.02},
    "diagnostics": {"iw_samples": 8, "n_obs": 3, "n_draws": 5, "kl_samples": 2},
}


def tiny_spec(grid, **execution):
    model_options = {k: v for k, v in TINY["model_options"].items() if k not in grid}
    return SweepSpec.from_dict({**TINY, "model_options": model_options, "grid": grid, "execution": execution})


# ----------------------------------------------------------------------------- spec


def test_parse_values_ranges_lists_and_scalars():
    assert parse_values("seed", "0-4") == (0, 1, 2, 3, 4)
    assert parse_values("seed", "0-1,7") == (0, 1, 7)
    assert parse_values("beta", "0.1,0.5,1") == (0.1, 0.5, 1)
    assert parse_values("beta", [0.5, 2]) == (0.5, 2)
    assert parse_values("beta", 2.0) == (2.0,)


@pytest.mark.parametrize("grid, entry", [
    ({"gamma": [1.0]}, "gamma"),                 # unknown parameter
    ({"beta": []}, "beta"),                      # empty range
    ({"beta": ""}, "beta"),                      # empty range written as text
    ({"beta": [0.5, -1.0]}, "beta"),             # negative beta
    ({"eta_dec": "0,1"}, "eta_dec"),             # zero std
    ({"seed": "4-0"}, "seed"),                   # decreasing range
    ({"seed": "0-x"}, "seed"),                   # malformed range
    ({"seed": [-1]}, "seed"),                    # negative seed
    ({"beta": [1.0, 1.0]}, "beta"),              # repeated value
])
def test_bad_grid_fails_naming_the_entry(grid, entry):
    with pytest.raises(ValueError, match=f"'{entry}'"):
        tiny_spec(grid)


@pytest.mark.parametrize("change, word", [
    ({"epochs_": 1}, "epochs_"),
    ({"train": {"steps": 5, "momentum": 0.9}}, "momentum"),
    ({"train": {}}, "steps"),
    ({"model_options": {"latent_dim": 3, "depth": 2}}, "depth"),
    ({"model": "gan"}, "model"),
    ({"execution": {"backend": "dask"}}, "backend"),
])
def test_bad_sections_fail_naming_the_entry(change, word):
    with pytest.raises(ValueError, match=word):
        SweepSpec.from_dict({**TINY, "grid": {"beta": [1.0]}, **change})


def test_invalid_point_is_caught_before_any_work(tmp_path):
    spec = tiny_spec({"latent_dim": [3, 0]})
    with pytest.raises(ValueError, match="latent_dim=0"):
        run_study(spec, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_yaml_and_toml_specs_agree(tmp_path):
    yaml_text = """
model: cvae
arch: mlp
data: {name: digits, split: quadrant}
model_options: {latent_dim: 4, hidden_dims: [16]}
grid: {beta: [0.1, 0.5], eta_dec: "0.5,1", seed: "0-3"}
train: {epochs: 2, batch_size: 256}
"""
    toml_text = """
model = "cvae"
arch = "mlp"
[data]
name = "digits"
split = "quadrant"
[model_options]
latent_dim = 4
hidden_dims = [16]
[grid]
beta = [0.1, 0.5]
eta_dec = "0.5,1"
seed = "0-3"
[train]
epochs = 2
batch_size = 256
"""
    (tmp_path / "s.yaml").write_text(yaml_text)
    (tmp_path / "s.toml").write_text(toml_text)
    from_yaml, from_toml = load_spec(tmp_path / "s.yaml"), load_spec(tmp_path / "s.toml")
    assert from_yaml == from_toml
    assert from_yaml.n_configs == 16
    assert SweepSpec.from_dict(from_yaml.to_dict()) == from_yaml


def test_groups_share_an_architecture_and_respect_group_size():
    spec = tiny_spec({"latent_dim": [2, 3], "beta": [0.5, 1.0, 2.0]})
    bundle = spec.load_data()
    configs, seeds, _ = spec.expand(bundle)
    tasks = plan_tasks(configs, seeds, {"steps": 1}, index=range(len(configs)), group_size=2)
    assert [task.index for task in tasks] == [(0, 1), (2,), (3, 4), (5,)]
    for task in tasks:
        assert len({config.latent_dim for config in task.configs}) == 1
        assert [configs[k] for k in task.index] == list(task.configs)


# ----------------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """Six configurations in one batched task; eta_dec = 1e-30 makes two of them diverge."""
    out = tmp_path_factory.mktemp("study") / "sweep"
    spec = tiny_spec({"eta_dec": [1e-30, 1.0], "beta": [0.5, 2.0], "seed": "0"})
    summary = run_study(spec, out)
    return spec, out, summary


def test_diverged_configuration_is_recorded_and_the_others_finish(finished_sweep):
    spec, out, summary = finished_sweep
    assert summary.counts == {"finished": 2, "failed": 2, "skipped": 0}
    assert set(summary.failed) == {"eta_dec=1e-30_beta=0.5_seed=0", "eta_dec=1e-30_beta=2_seed=0"}
    error = json.loads((out / "runs" / "eta_dec=1e-30_beta=0.5_seed=0" / "error.json").read_text())
    assert error["type"] == "TrainingDivergedError"
    assert run_status(out / "runs" / "eta_dec=1e-30_beta=0.5_seed=0") == "failed"
    recorded = json.loads((out / "summary.json").read_text())
    assert recorded["failed"].keys() == summary.failed.keys() and recorded["finished"] == list(summary.finished)


def test_run_directories_load_like_fit_runs(finished_sweep):
    spec, out, _ = finished_sweep
    run_dir = out / "runs" / "eta_dec=1_beta=2_seed=0"
    model, bundle, info = load_run(run_dir, device="cpu")
    assert model.config.beta == 2.0 and model.config.eta_dec == 1.0 and info["seed"] == 0
    assert info["step"] == spec.train["steps"] and np.isfinite(info["metrics"]["final_loss"])
    assert bundle.attrs["spec"] == info["data"]
    # the report reuses the sweep's diagnostics instead of recomputing them
    from ppl_vae.report.runs import diagnose_run

    before = os.stat(run_dir / "diagnostics.nc").st_mtime_ns
    options = {key: spec.diagnostics[key] for key in ("iw_samples", "n_obs", "n_draws", "kl_samples", "seed")}
    reused = diagnose_run(run_dir, device="cpu", progress=False, **options)
    assert os.stat(run_dir / "diagnostics.nc").st_mtime_ns == before
    assert reused.attrs["checkpoint_step"] == spec.train["steps"]


def test_combined_is_rebuilt_from_the_run_directories(finished_sweep):
    spec, out, summary = finished_sweep
    combined = load(out / "combined.nc")
    assert list(combined.collapse.run.values) == list(summary.finished)
    assert combined.collapse.beta.values.tolist() == [0.5, 2.0]
    assert combined.collapse.seed.values.tolist() == [0, 0]
    by_hand = combine([load(out / "runs" / name / "diagnostics.nc") for name in summary.finished],
                      run_names=list(summary.finished))
    np.testing.assert_array_equal(combined.collapse.z_kl.values, by_hand.collapse.z_kl.values)
    rebuilt = rebuild_combined(out)
    np.testing.assert_array_equal(rebuilt.metrics.iw_log_likelihood.values, combined.metrics.iw_log_likelihood.values)


def test_changed_spec_is_refused_unless_overwrite(finished_sweep, tmp_path):
    spec, out, _ = finished_sweep
    other = tiny_spec({"eta_dec": [1.0], "beta": [0.5, 3.0]})
    with pytest.raises(SpecMismatchError, match="grid"):
        run_study(other, out)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a sweep directory"):
        run_study(other, tmp_path)


def test_failures_are_retried_and_unfinished_runs_redone(tmp_path):
    spec = tiny_spec({"beta": [0.5, 1.0, 2.0]}, group_size=1)

    def faulty(task, bundle):
        if task.configs[0].beta == 2.0:
            raise RuntimeError("injected failure")
        return run_group(task, bundle, diagnostics=spec.diagnostics)

    first = run_study(spec, tmp_path / "sweep", runner=faulty)
    assert first.counts == {"finished": 2, "failed": 1, "skipped": 0}
    error = json.loads((tmp_path / "sweep" / "runs" / "beta=2" / "error.json").read_text())
    assert error["type"] == "RuntimeError" and "injected failure" in error["traceback"]
    # a run killed before its marker: files but no metrics.json -> unfinished, redone
    (tmp_path / "sweep" / "runs" / "beta=1" / "metrics.json").unlink()
    second = run_study(spec, tmp_path / "sweep")
    assert second.counts == {"finished": 2, "failed": 0, "skipped": 1}
    assert second.skipped == ("beta=0.5",)
    assert all(run_status(tmp_path / "sweep" / "runs" / name) == "finished"
               for name in ("beta=0.5", "beta=1", "beta=2"))
    assert not (tmp_path / "sweep" / "runs" / "beta=2" / "error.json").exists()
    assert load(tmp_path / "sweep" / "combined.nc").collapse.sizes["run"] == 3


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    import sys

    from ppl_vae.sweep.study import make_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match=r"ppl-vae\[ray\]"):
        make_backend(tiny_spec({"beta": [1.0]}, backend="ray"))


# ----------------------------------------------------------------------------- one engine, one set of rules


def test_grouping_never_changes_a_number(tmp_path):
    """Seeds 0-2 in one task, in tasks of one, and a rerun that retrains a deleted run: equal losses."""
    from ppl_vae.report.runs import read_loss_history

    spec = tiny_spec({"beta": [0.5, 2.0], "seed": "0-2"}, group_size=None)
    grouped = run_study(spec, tmp_path / "grouped")
    alone = run_study(tiny_spec({"beta": [0.5, 2.0], "seed": "0-2"}, group_size=1), tmp_path / "alone")
    assert grouped.counts["finished"] == alone.counts["finished"] == 6
    losses = {}
    for name in grouped.finished:
        a = read_loss_history(tmp_path / "grouped" / "runs" / name).values
        b = read_loss_history(tmp_path / "alone" / "runs" / name).values
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
        losses[name] = a
    # replicates differ: the seeds are independent
    assert np.abs(losses["beta=0.5_seed=0"] - losses["beta=0.5_seed=1"]).max() > 1e-3
    # a deleted run comes back with the same numbers when retrained in a smaller group
    shutil.rmtree(tmp_path / "grouped" / "runs" / "beta=2_seed=1")
    again = run_study(spec, tmp_path / "grouped")
    assert again.finished == ("beta=2_seed=1",)
    redone = read_loss_history(tmp_path / "grouped" / "runs" / "beta=2_seed=1").values
    np.testing.assert_allclose(redone, losses["beta=2_seed=1"], rtol=1e-5, atol=1e-5)


def test_metrics_are_on_held_out_rows_and_provenance_is_recorded(finished_sweep):
    spec, out, summary = finished_sweep
    run_dir = out / "runs" / summary.finished[0]
    idata = load(run_dir / "diagnostics.nc")
    n_rows = spec.load_data().n
    n_test = round(spec.train["test_fraction"] * n_rows)
    assert idata.attrs["metrics_data"] == "test"
    assert idata.metrics.sizes["eval_obs"] == n_test  # the held-out rows, not the training rows
    train = json.loads((run_dir / "config.json").read_text())["train"]
    assert train["estimator"] == "TraceMeanField_ELBO" and train["seed"] == 0 and train["seeds"] == [0, 0, 0, 0]
    assert train["n_configs"] == 4 and sorted(train["group"]) == [0, 1, 2, 3]
    assert (train["n_train"], train["n_test"], train["test_fraction"]) == (n_rows - n_test, n_test, 0.1)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["converged"] is None and "not judged" in metrics["convergence"]["reason"]  # 25 steps: too few


def test_diagnostics_are_capped_at_max_points(tmp_path):
    spec = SweepSpec.from_dict({**TINY, "grid": {"beta": [1.0]}, "train": {"steps": 5, "test_fraction": 0.5},
                                "diagnostics": {**TINY["diagnostics"], "max_points": 7}})
    summary = run_study(spec, tmp_path / "sweep")
    idata = load(tmp_path / "sweep" / "runs" / summary.finished[0] / "diagnostics.nc")
    assert idata.metrics.sizes["eval_obs"] == 7


def test_parameter_store_does_not_grow_over_a_32_configuration_sweep(tmp_path):
    import pyro

    pyro.clear_param_store()
    spec = tiny_spec({"beta": [0.25, 0.5, 1.0, 2.0], "eta_dec": [0.5, 1.0], "seed": "0-3"}, group_size=8)
    spec = SweepSpec.from_dict({**spec.to_dict(), "train": {"steps": 3, "lr": 0.02}})
    summary = run_study(spec, tmp_path / "sweep")
    assert summary.counts["finished"] == 32
    assert len(pyro.get_param_store().keys()) == 0


def test_an_interrupted_task_resumes_from_its_group_checkpoint(tmp_path):
    """Half a task's steps into its group folder, then the task: the same numbers as in one go."""
    from ppl_vae.inference import fit
    from ppl_vae.sweep.api import _seeded_model, run_task
    from ppl_vae.sweep.study import group_id

    spec = tiny_spec({"beta": [0.5, 2.0], "seed": "3-4"})
    bundle = spec.load_data()
    configs, seeds, _ = spec.expand(bundle)
    options = {"steps": 40, "lr": 0.02, "batch_size": 32, "test_fraction": 0.1, "split_seed": 0,
               "checkpoint_every": 10, "device": "cpu"}
    (task,) = plan_tasks(configs, seeds, options)
    straight = run_task(task, bundle)
    folder = tmp_path / "groups" / group_id(task)
    half = {k: v for k, v in options.items() if k not in ("device", "steps")}
    fit([_seeded_model(c, s, torch.device("cpu")) for c, s in zip(configs, seeds)], bundle, seed=list(seeds),
        steps=20, run_dir=folder, progress=False, device="cpu", on_divergence="stop", **half)
    resumed = run_task(task, bundle, checkpoint_dir=str(folder))
    np.testing.assert_array_equal(resumed.loss_history, straight.loss_history)


def test_a_report_on_a_sweep_run_never_replaces_the_sweeps_cache(finished_sweep, tmp_path):
    from ppl_vae.report.runs import diagnose_run

    spec, out, summary = finished_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    run_dir = copy / "runs" / summary.finished[0]
    before = (run_dir / "diagnostics.nc").read_bytes()
    report = diagnose_run(run_dir, iw_samples=3, n_draws=4, kl_samples=2, device="cpu", progress=False)
    assert report.attrs["iw_samples"] == 3 and (run_dir / "diagnostics_report.nc").is_file()
    assert (run_dir / "diagnostics.nc").read_bytes() == before
    combined = rebuild_combined(copy)
    assert json.loads(combined.attrs["runs"])[summary.finished[0]]["iw_samples"] == spec.diagnostics["iw_samples"]


def test_combined_recomputes_a_damaged_or_foreign_cache_with_the_sweeps_settings(finished_sweep, tmp_path):
    from ppl_vae.diagnostics import save

    spec, out, summary = finished_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    first, second = (copy / "runs" / name / "diagnostics.nc" for name in summary.finished)
    expected = load(first)
    first.write_bytes(b"not netCDF")
    foreign = load(second)
    foreign.attrs["iw_samples"] = 50  # as if a report with K=50 had written it
    save(foreign, second)
    combined = rebuild_combined(copy)
    runs = json.loads(combined.attrs["runs"])
    assert {runs[name]["iw_samples"] for name in summary.finished} == {spec.diagnostics["iw_samples"]}
    np.testing.assert_allclose(load(first).metrics.iw_log_likelihood.values,
                               expected.metrics.iw_log_likelihood.values)  # recomputed the same way


def test_run_names_round_trip_their_values_and_collisions_are_refused():
    from ppl_vae.sweep.study import _check_names, run_name

    assert run_name({"beta": 0.5, "seed": 3}) == "beta=0.5_seed=3"
    assert run_name({"beta": 0.1234561}) != run_name({"beta": 0.1234562})
    assert run_name({"beta": 0.1 + 0.2}) == "beta=0.30000000000000004"
    with pytest.raises(ValueError, match=r"configurations 0 and 1 would both be written to runs/beta=1"):
        _check_names(["beta=1", "beta=1"])
    with pytest.raises(ValueError, match="not a plain folder name"):
        _check_names(["prior=../x"])


@pytest.mark.parametrize(("train", "execution", "key"), [
    ({"optimizer": "sgd"}, {}, "train['optimizer']"),
    ({"lr_decay": 1.5}, {}, "train['lr_decay']"),
    ({"clip_norm": 0}, {}, "train['clip_norm']"),
    ({"test_fraction": 1.0}, {}, "train['test_fraction']"),
    ({}, {"device": "gpu"}, "execution['device']"),
    ({}, {"vectorise": "sometimes"}, "execution['vectorise']"),
    ({}, {"max_configs": 0}, "execution['max_configs']"),
])
def test_training_and_execution_options_are_checked_when_the_spec_is_read(train, execution, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        SweepSpec.from_dict({**TINY, "grid": {"beta": [1.0]}, "train": {**TINY["train"], **train},
                             "execution": execution})
