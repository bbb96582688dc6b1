"""run_bench on a tiny case, the convergence criterion, and the ``ppl-vae bench`` command."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from ppl_vae.bench import COLUMNS, Case, bench_dataset, format_table, run_bench, theory_reached
from ppl_vae.bench.cases import DeviceBatches, make_step, seeded_model
from ppl_vae.cli import main

TINY = [Case("digits", "cvae", "linear", 128)]


def test_run_bench_reports_every_variant_with_plain_as_the_yardstick():
    threads_before = torch.get_num_threads()
    table = run_bench("cpu", quick=True, threads=1, cases=TINY, variants=["plain", "pyro", "fit"],
                      sections=["throughput"])
    assert list(table.columns) == COLUMNS
    assert list(table.variant) == ["plain", "pyro", "fit"]
    assert (table.case == TINY[0].label).all()
    plain = table.set_index("variant").loc["plain"]
    assert plain.ratio_to_plain == 1.0
    assert np.all(table.steps_per_s > 0)
    np.testing.assert_allclose(table.samples_per_s, 128 * table.steps_per_s)
    np.testing.assert_allclose(table.set_index("variant").ratio_to_plain,
                               plain.steps_per_s / table.set_index("variant").steps_per_s)
    assert table.attrs["threads"] == 1 and table.attrs["quick"] is True
    assert torch.get_num_threads() == threads_before  # restored


def test_bench_table_converts_and_prints():
    table = pd.DataFrame([{"section": "throughput", "case": "c", "variant": "plain", "steps_per_s": 10.0,
                           "samples_per_s": 1280.0, "ratio_to_plain": 1.0, "wall_s": 0.1, "peak_host_mb": 5.0,
                           "peak_device_mb": None, "note": ""}], columns=COLUMNS)
    table.attrs["device"] = "cpu"
    dataset = bench_dataset(table)
    assert isinstance(dataset, xr.Dataset) and dataset.steps_per_s.dims == ("row",)
    assert dataset.variant.values.tolist() == ["plain"] and dataset.attrs["device"] == "cpu"
    text = format_table(table)
    assert "device=cpu" in text and "10.0" in text


def test_theory_reached_uses_relative_error_and_the_largest_value_for_zeros():
    theory = np.array([2.0, 1.0, 0.0])
    assert theory_reached(np.array([2.01, 0.995, 0.015]), theory)
    assert not theory_reached(np.array([2.05, 1.0, 0.0]), theory)
    assert not theory_reached(np.array([2.0, 1.0, 0.05]), theory)


def test_device_batches_cover_the_data_each_epoch_without_ragged_batches():
    x = torch.arange(10.0).reshape(10, 1)
    batches = DeviceBatches((x,), 4, seed=0)
    seen = torch.cat([batches()[0] for _ in range(2)]).flatten()
    assert seen.shape == (8,) and seen.unique().numel() == 8
    assert DeviceBatches((x,), None)()[0] is x


def test_every_step_variant_updates_the_weights():
    from ppl_vae.bench.cases import bench_config, bench_data

    data = bench_data("digits")
    config = bench_config(TINY[0], data)
    for variant in ("plain", "pyro", "pyro_svi"):
        model = seeded_model(config, torch.device("cpu"))
        before = [p.detach().clone() for p in model.parameters()]
        make_step(variant, model, DeviceBatches(data.tensors(), 64))()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), variant
    with pytest.raises(ValueError, match="variant"):
        make_step("numpy", model, DeviceBatches(data.tensors(), 64))


def test_cli_prints_and_writes_the_table(tmp_path, monkeypatch):
    import ppl_vae.bench

    calls = {}

    def fake_run_bench(device, *, quick, threads, sections, log):
        calls.update(device=device, quick=quick, threads=threads, sections=sections)
        table = pd.DataFrame([{"section": "sweep", "case": "c", "variant": "vectorised", "steps_per_s": 3.0,
                               "samples_per_s": np.nan, "ratio_to_plain": np.nan, "wall_s": 1.5,
                               "peak_host_mb": 1.0, "peak_device_mb": np.nan, "note": "1.77x"}], columns=COLUMNS)
        table.attrs["device"] = device
        return table

    monkeypatch.setattr(ppl_vae.bench, "run_bench", fake_run_bench)
    out = tmp_path / "bench.nc"
    result = CliRunner().invoke(main, ["bench", "--quick", "--section", "sweep", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "vectorised" in result.output and "1.77x" in result.output
    assert calls == {"device": "cpu", "quick": True, "threads": 1, "sections": ("sweep",)}
    assert xr.open_dataset(out).wall_s.values.tolist() == [1.5]
    bad = CliRunner().invoke(main, ["bench", "--out", str(tmp_path / "bench.txt")])
    assert bad.exit_code != 0 and "--out" in bad.output


def test_cli_never_replaces_an_existing_out_file_and_says_so_before_measuring(tmp_path, monkeypatch):
    import ppl_vae.bench

    def must_not_run(*args, **kwargs):
        raise AssertionError("the bench ran although its --out would be refused")

    monkeypatch.setattr(ppl_vae.bench, "run_bench", must_not_run)
    out = tmp_path / "bench.csv"
    out.write_text("earlier results")
    result = CliRunner().invoke(main, ["bench", "--quick", "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {out} already exists; pass --overwrite to replace it" in result.output
    assert out.read_text() == "earlier results"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_run_bench_on_the_gpu_reports_device_memory():
    table = run_bench("cuda", quick=True, cases=TINY, variants=["plain", "pyro"], sections=["throughput"])
    assert table.attrs["device"].startswith("cuda")
    assert np.all(table.peak_device_mb > 0)


def test_overhead_ablation_reports_each_variant_and_restores_the_internals():
    from ppl_vae.bench.profile import ABLATIONS, overhead_breakdown
    from ppl_vae.inference import trainer

    loss = trainer.TracedLoss
    table = overhead_breakdown("digits", steps=2, repeats=1)
    assert list(table.variant) == ["plain", *ABLATIONS]
    assert table.set_index("variant").ratio_to_plain["plain"] == 1.0
    assert np.isfinite(table.ms_per_step).all()
    assert trainer.TracedLoss is loss
