"""`ppl-vae theory`: tables, grids, netCDF output and clean errors."""

import re

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from ppl_vae import data, theory
from ppl_vae.cli import main


def run(*args):
    return CliRunner().invoke(main, ["theory", *args])


def test_cvae_digits_count_matches_library():
    result = run("--model", "cvae", "--data", "digits", "--beta", "2", "--eta-dec", "1")
    assert result.exit_code == 0, result.output
    digits = data.load("digits", paired=True)
    expected = int(theory.linear_cvae(digits.x, digits.y, 16, beta=2.0, eta_dec=1.0)["collapsed"].sum())
    assert f"collapsed: z {expected} of 16" in result.output


def test_grid_writes_one_dimension_per_axis(tmp_path):
    out = tmp_path / "grid.nc"
    result = run("--model", "cvae", "--data", "digits", "--beta", "0.5,1,2", "--eta-dec", "0.5,1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "summary" in result.output
    grid = xr.load_dataset(out)
    assert dict(grid["collapsed"].sizes) == {"beta": 3, "eta_dec": 2, "mode": 16}
    counts = grid["collapsed"].sum("mode")
    # More KL weight or more decoder noise never revives a mode.
    assert np.all(np.diff(counts.values, axis=0) >= 0)
    assert np.all(np.diff(counts.values, axis=1) >= 0)


def test_refuses_to_overwrite_out(tmp_path):
    out = tmp_path / "pred.nc"
    out.write_text("keep me")
    result = run("--model", "vae", "--data", "digits", "--out", str(out))
    assert result.exit_code != 0
    assert "--overwrite" in result.output
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    "args, name",
    [(["--beta", "-1"], "beta"), (["--eta-dec", "0"], "eta_dec"), (["--latent-dim", "100"], "latent_dim")],
)
def test_bad_hyperparameters_name_the_parameter(args, name):
    result = run("--model", "cvae", "--data", "digits", *args)
    assert result.exit_code == 2
    assert name in result.output
    assert "Traceback" not in result.output


def test_missing_mnist_says_where_files_go(tmp_path):
    result = run("--model", "cvae", "--data", "mnist", "--mnist-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert "train-images-idx3-ubyte" in result.output


def test_mhvae_and_thresholds_run():
    result = run("--model", "mhvae", "--data", "synthetic", "--latent-dims", "4,4", "--beta2", "2")
    assert result.exit_code == 0, result.output
    assert re.search(r"collapsed: z1 \d+ of \d+, z2 \d+ of \d+", result.output)
    result = run("--model", "cvae", "--data", "digits", "--thresholds")
    assert result.exit_code == 0, result.output
    assert "thresholds" in result.output
