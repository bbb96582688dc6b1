"""``ppl-vae sweep`` on tiny settings (local backend)."""

import json

import pytest
import torch
from click.testing import CliRunner

from ppl_vae.cli import main
from ppl_vae.diagnostics import load

TINY = ["--model", "cvae", "--arch", "linear", "--data", "synthetic", "--n-samples", "100", "--dim", "6",
        "--latent-dim", "3", "--steps", "15", "--lr", "0.02", "--iw-samples", "5"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sweep(*args):
    return CliRunner().invoke(main, ["sweep", *args])


def test_cli_sweep_runs_resumes_and_refuses_a_changed_spec(tmp_path):
    out = tmp_path / "sweeps" / "tiny"
    first = sweep(*TINY, "--beta", "0.5,2", "--seeds", "0-1", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert "4 configurations: 4 finished, 0 failed, 0 skipped" in first.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "beta=0.5_seed=0", "beta=0.5_seed=1", "beta=2_seed=0", "beta=2_seed=1"]
    combined = load(out / "combined.nc")
    assert combined.collapse.sizes["run"] == 4 and set(combined.collapse.seed.values.tolist()) == {0, 1}

    again = sweep(*TINY, "--beta", "0.5,2", "--seeds", "0-1", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "0 finished, 0 failed, 4 skipped" in again.output

    changed = sweep(*TINY, "--beta", "0.5,3", "--seeds", "0-1", "--out", str(out))
    assert changed.exit_code != 0 and "different spec" in changed.output and "--overwrite" in changed.output
    replaced = sweep(*TINY, "--beta", "3", "--seeds", "0", "--out", str(out), "--overwrite", "--quiet")
    assert replaced.exit_code == 0, replaced.output
    assert [p.name for p in (out / "runs").iterdir()] == ["beta=3_seed=0"]


def test_cli_sweep_reads_a_spec_file_and_cli_ranges_override_it(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("""
model: cvae
arch: linear
data: {name: synthetic, n: 100, dim: 6}
model_options: {latent_dim: 3}
grid: {beta: [0.5, 1, 2], eta_dec: [1.0]}
train: {steps: 15, lr: 0.02}
diagnostics: {iw_samples: 5}
""")
    out = tmp_path / "from_file"
    result = sweep("--spec", str(spec), "--beta", "0.25", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "spec.json").read_text())["spec"]
    assert saved["grid"] == {"beta": [0.25], "eta_dec": [1.0]}
    assert saved["train"]["steps"] == 15 and saved["diagnostics"]["iw_samples"] == 5
    assert (out / "runs" / "beta=0.25_eta_dec=1" / "metrics.json").is_file()


@pytest.mark.parametrize("args, words", [
    (["--beta", "0.5,-1"], ["grid['beta']", "-1"]),
    (["--beta", "1", "--seeds", "3-1"], ["grid['seed']", "3-1"]),
    (["--beta", "1", "--seeds", "0-"], ["grid['seed']"]),
    (["--beta", ","], ["grid['beta']", "empty"]),
])
def test_cli_sweep_rejects_bad_ranges_before_any_work(tmp_path, args, words):
    out = tmp_path / "bad"
    result = sweep(*TINY[:-6], "--steps", "5", *args, "--out", str(out))
    assert result.exit_code == 2
    for word in words:
        assert word in result.output
    assert not out.exists()


def test_cli_sweep_needs_a_length_of_training(tmp_path):
    result = sweep("--beta", "1", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "steps" in result.output


def test_a_huge_grid_is_refused_at_once_and_the_limit_is_an_option(tmp_path):
    import time

    started = time.perf_counter()
    huge = sweep(*TINY, "--beta", "1", "--seeds", "0-999999", "--out", str(tmp_path / "huge"))
    assert huge.exit_code == 2 and "1,000,000 configurations" in huge.output and "--yes" in huge.output
    assert time.perf_counter() - started < 30  # was minutes and gigabytes before any training
    small_limit = sweep(*TINY, "--beta", "1,2,3", "--max-configs", "2", "--out", str(tmp_path / "small"))
    assert small_limit.exit_code == 2 and "more than the limit of 2" in small_limit.output
    assert not (tmp_path / "huge").exists() and not (tmp_path / "small").exists()
    confirmed = sweep(*TINY, "--beta", "1,2,3", "--max-configs", "2", "--yes", "--quiet", "--out",
                      str(tmp_path / "small"))
    assert confirmed.exit_code == 0, confirmed.output


def test_run_names_are_faithful_and_equal_values_are_refused(tmp_path):
    close = sweep(*TINY, "--beta", "0.1234561,0.1234562", "--quiet", "--out", str(tmp_path / "close"))
    assert close.exit_code == 0, close.output
    assert sorted(p.name for p in (tmp_path / "close" / "runs").iterdir()) == ["beta=0.1234561", "beta=0.1234562"]
    same = sweep(*TINY, "--beta", "1,1.0", "--out", str(tmp_path / "same"))
    assert same.exit_code == 2 and "values repeat" in same.output and not (tmp_path / "same").exists()


def test_the_summary_names_configurations_that_did_not_converge(tmp_path):
    result = sweep("--model", "cvae", "--data", "synthetic", "--n-samples", "400", "--dim", "6", "--latent-dim", "4",
                   "--steps", "300", "--lr", "0.3", "--beta", "1", "--iw-samples", "2", "--quiet",
                   "--out", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    assert "warning: 1 configuration(s) did not converge (beta=1)" in result.output
    assert json.loads((tmp_path / "s" / "runs" / "beta=1" / "metrics.json").read_text())["converged"] is False
