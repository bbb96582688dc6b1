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


def test_no_options_give_an_answer_on_the_datas_scale():
    """eta_dec = 1 on pixels in [0, 1] collapses every mode; the default fits the data's scale instead."""
    result = run()
    assert result.exit_code == 0, result.output
    used = float(re.search(r"eta_dec not given: using ([0-9.e-]+)", result.output).group(1))
    digits = data.load("digits", paired=True)
    spectrum = theory.cvae_thetas(digits.x, digits.y)
    assert used == pytest.approx(theory.data_scale_eta_dec(spectrum, 16, model="cvae"), rel=1e-2)
    collapsed = int(re.search(r"collapsed: z (\d+) of 16", result.output).group(1))
    assert collapsed < 16
    assert "every mode collapsed" not in result.output


def test_total_collapse_says_why_and_what_to_change():
    result = run("--eta-dec", "1")
    assert result.exit_code == 0, result.output
    assert "collapsed: z 16 of 16" in result.output
    line = re.search(r"To keep one mode active: beta <= ([0-9.e-]+) or eta_dec <= ([0-9.e-]+)", result.output)
    assert line, result.output
    beta_max, eta_max = float(line.group(1)), float(line.group(2))
    keeps = run("--eta-dec", f"{eta_max * 0.99:g}")
    assert "collapsed: z 15 of 16" in keeps.output or "collapsed: z 16 of 16" not in keeps.output
    assert "collapsed: z 16 of 16" not in run("--eta-dec", "1", "--beta", f"{beta_max * 0.99:g}").output


def test_mhvae_thresholds_are_printed():
    result = run("--model", "mhvae", "--data", "digits", "--latent-dims", "4,4", "--eta-dec", "0.5", "--thresholds")
    assert result.exit_code == 0, result.output
    assert "z2_beta1_min" in result.output and "z1_beta2_max" in result.output
