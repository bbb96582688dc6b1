"""Settings, outputs, claim checks and the small analysis helpers."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from ppl_vae.data import load_digits
from ppl_vae.reproduce.settings import image_batch_threads
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, MissingDataError, Settings, compute_threads, diagnose_options,
                               image_data, parse_settings, read_manifest, series, subsample)


def test_settings_round_trip_through_the_command_line(tmp_path):
    for scale in ("tiny", "quick", "full"):
        settings = Settings(scale, tmp_path, seed=4, device="cpu", mnist_dir=tmp_path / "m", overwrite=True)
        assert parse_settings("x", settings.to_argv()) == settings
    with pytest.raises(ValueError, match="scale"):
        Settings("huge", tmp_path)
    with pytest.raises(ValueError, match="seed"):
        Settings("quick", tmp_path, seed=-1)
    with pytest.raises(SystemExit):
        parse_settings("x", ["--quick", "--tiny"])
    assert Settings("quick", tmp_path).pick(1, 2, 3) == 2


def test_compute_threads_is_restored(tmp_path):
    before = torch.get_num_threads()
    with compute_threads(Settings("tiny", tmp_path)):
        assert torch.get_num_threads() == 1
    with compute_threads(Settings("quick", tmp_path)):
        assert torch.get_num_threads() == 1
        with image_batch_threads(Settings("quick", tmp_path)):
            assert torch.get_num_threads() == min(2, os.cpu_count())
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_output_records_files_and_refuses_reuse(tmp_path):
    out = ExperimentOutput(tmp_path, "exp")
    out.table("t", pd.DataFrame({"a": [1, 2]}), "a table")
    out.dataset("d", xr.Dataset({"v": ("k", np.arange(3.0))}, attrs={"flag": True, "none": None}), "a dataset")
    out.table("t", pd.DataFrame({"a": [3]}), "rewritten")
    entries = read_manifest(tmp_path / "exp")
    assert [(e["kind"], e["path"]) for e in entries] == [("netcdf", "d.nc"), ("table", "t.csv")]
    assert xr.load_dataset(tmp_path / "exp" / "d.nc").v.values.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(FileExistsError):
        ExperimentOutput(tmp_path, "exp")
    assert read_manifest(tmp_path / "exp")  # the refusal touched nothing
    again = ExperimentOutput(tmp_path, "exp", overwrite=True)
    assert again.entries == [] and read_manifest(tmp_path / "exp") == []  # stale files are no longer listed


def test_claim_check_is_json_safe():
    check = ClaimCheck("e", "c", np.bool_(True), "r", {"x": np.float64(np.nan), "y": np.arange(2), "z": np.int64(3)})
    data = check.to_dict()
    assert data["agrees"] is True and data["numbers"] == {"x": None, "y": [0, 1], "z": 3}
    assert ClaimCheck.from_dict(data).agrees is True


def test_image_data_scales(tmp_path):
    train, test = image_data(Settings("tiny", tmp_path), split="quadrant")
    assert train.n + test.n == 240 and train.x.shape[1] == 16 and train.y.shape[1] == 48
    train, test = image_data(Settings("quick", tmp_path), classes=[3])
    assert train.n + test.n == int((load_digits().labels == 3).sum())
    with pytest.raises(MissingDataError, match="--quick"):
        image_data(Settings("full", tmp_path, mnist_dir=tmp_path / "no_mnist"))


def test_subsample_keeps_order_and_size():
    bundle = load_digits()
    small = subsample(bundle, seed=0, limit=100)
    assert small.n == 100
    rows = [int(np.flatnonzero((bundle.x == row).all(1).numpy())[0]) for row in small.x[:10]]
    assert rows == sorted(rows)
    assert subsample(bundle, seed=0, limit=10_000) is bundle


def test_series_draws_one_line_per_variable_and_hue():
    data = xr.Dataset({"predicted_n": (("beta", "eta"), np.ones((3, 2))),
                       "measured_n": (("beta", "eta"), np.zeros((3, 2)))},
                      coords={"beta": [0.1, 1.0, 2.0], "eta": [0.5, 1.0]})
    fig = series(data, "beta", ["predicted_n", "measured_n"], hue="eta", logx=True)
    assert len(fig.axes[0].lines) == 4
    with pytest.raises(ValueError, match="missing"):
        series(data, "beta", ["absent"])


@pytest.mark.parametrize("argv, message", [(["--seeds", "0"], "n_seeds must be an integer >= 1"),
                                           (["--seed", "-1"], "seed must be an integer >= 0"),
                                           (["--max-steps", "0"], "max_steps must be an integer >= 1"),
                                           (["--max-draws", "0"], "max_draws must be an integer >= 1")])
def test_bad_script_arguments_are_one_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings("an experiment", ["--quick", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_max_draws_caps_every_diagnostic_sample_count_and_travels_to_the_scripts(tmp_path):
    full = diagnose_options(Settings("full", tmp_path))
    capped = Settings("full", tmp_path, max_draws=4)
    counts = ("iw_samples", "n_obs", "n_draws", "kl_samples")
    assert {name: diagnose_options(capped)[name] for name in counts} == dict.fromkeys(counts, 4)
    assert all(full[name] > 4 for name in counts)  # the cap bit: full mode's own counts are larger
    assert parse_settings("x", capped.to_argv()) == capped
    assert diagnose_options(Settings("tiny", tmp_path, max_draws=1000)) == diagnose_options(Settings("tiny", tmp_path))


def test_seeds_default_by_scale_and_count_from_the_first_seed(tmp_path):
    assert parse_settings("x", ["--quick", "--seed", "4"]).seeds == [4, 5, 6]
    assert parse_settings("x", ["--tiny", "--seeds", "1"]).seeds == [0]
    assert Settings("full", tmp_path).n_seeds == 5


def test_diagnose_runs_batches_one_architectures_models_to_diagnoses_numbers(tmp_path, monkeypatch):
    import dataclasses

    from ppl_vae import diagnostics
    from ppl_vae.data import synthetic_pairs
    from ppl_vae.models import CVAEConfig
    from ppl_vae.reproduce import diagnose_runs, run_replicates

    settings = Settings("tiny", tmp_path, device="cpu")
    data = synthetic_pairs(120, 4, y_dim=3, seed=0)
    configs = [CVAEConfig(4, 3, 2, arch="mlp", hidden_dims=(8,), beta=beta) for beta in (0.5, 2.0)]
    result = run_replicates(configs, data, settings, steps=20)
    batches = []
    group = diagnostics.diagnose_group
    monkeypatch.setattr(diagnostics, "diagnose_group", lambda models, *a, **k: batches.append(len(models))
                        or group(models, *a, **k))
    batched = diagnose_runs(result, data, data, settings)
    assert batches == [4]
    rows = subsample(data, settings.seed)
    alone = [diagnostics.diagnose(model, rows, test_data=rows, **diagnose_options(settings))
             for model in result.models]
    assert len(batched) == len(alone) == 4
    for ours, theirs in zip(batched, alone):
        assert set(ours.groups()) == set(theirs.groups())
        for name in ("posterior", "metrics"):
            for variable in theirs[name].data_vars:
                np.testing.assert_allclose(ours[name][variable].values, theirs[name][variable].values, rtol=1e-4,
                                           atol=1e-5, err_msg=f"{name}/{variable}")
    # models that cannot share a batch (two architectures) are diagnosed one by one
    linear = run_replicates([CVAEConfig(4, 3, 2, arch="linear")], data, settings, steps=20)
    mixed = dataclasses.replace(result, models=(result.models[0], linear.models[0]))
    assert len(diagnose_runs(mixed, data, data, settings)) == 2 and batches == [4]
