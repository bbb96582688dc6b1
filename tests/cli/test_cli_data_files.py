"""Every data-taking command reads the user's own file: --data my.npz --x-key x --y-key y."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ppl_vae.cli import main
from ppl_vae.data import load


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def digit_pairs(tmp_path):
    """The bundled digits' quadrant pairs written to my.npz."""
    pairs = load("digits", paired=True)
    path = tmp_path / "my.npz"
    np.savez(path, x=pairs.x.numpy(), y=pairs.y.numpy())
    return path


def _tables(output: str) -> str:
    """The output without its first line (which names the data source)."""
    return output.split("\n", 1)[1]


def test_theory_on_a_file_predicts_as_on_the_same_builtin_data(digit_pairs):
    from_file = invoke("theory", "--data", digit_pairs, "--x-key", "x", "--y-key", "y", "--beta", "0.5,2")
    assert from_file.exit_code == 0, from_file.output
    builtin = invoke("theory", "--data", "digits", "--beta", "0.5,2")
    assert from_file.output.startswith("data: my.npz (x (1797, 16), y (1797, 48))")
    assert _tables(from_file.output) == _tables(builtin.output)


def test_theory_on_csv_columns(tmp_path):
    x = load("synthetic", n=200, dim=5).x.numpy()
    path = tmp_path / "table.csv"
    path.write_text("a,b,c,d,e\n" + "\n".join(",".join(f"{v:.9g}" for v in row) for row in x) + "\n")
    result = invoke("theory", "--model", "vae", "--data", path, "--latent-dim", "3", "--eta-dec", "0.8")
    assert result.exit_code == 0, result.output
    assert "collapsed: z" in result.output and "of 3" in result.output


@pytest.mark.parametrize("args,message", [
    (["--x-key", "x"], "paired data (CVAE) needs y"),
    (["--x-key", "x", "--y-key", "y", "--classes", "3"], "--classes applies to the built-in data sets"),
    (["--x-key", "nope", "--y-key", "y"], "no array 'nope' for x"),
])
def test_file_option_errors_are_clean(digit_pairs, args, message):
    result = invoke("theory", "--data", digit_pairs, *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_bad_values_in_a_file_name_the_file_and_the_array(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 6))
    x[5, 2] = np.nan
    np.savez(tmp_path / "broken.npz", x=x)
    result = invoke("theory", "--model", "vae", "--data", tmp_path / "broken.npz", "--latent-dim", "2")
    assert result.exit_code == 2
    assert "broken.npz: array 'x' contains 1 NaN or infinite values (first in row 5)" in result.output
    missing = invoke("theory", "--data", tmp_path / "absent.npz")
    assert missing.exit_code == 2 and "no data file at" in missing.output
    assert invoke("theory", "--data", "digitz").exit_code == 2
    assert "--x-key describe a data file (--data my.npz), not the built-in 'digits' data" in \
        invoke("theory", "--x-key", "x").output


def test_train_and_report_from_a_file_then_a_changed_file_is_refused(digit_pairs, tmp_path):
    run = tmp_path / "run"
    trained = invoke("train", "--model", "cvae", "--data", digit_pairs, "--x-key", "x", "--y-key", "y",
                     "--latent-dim", "3", "--steps", "20", "--device", "cpu", "--no-progress", "--out", run)
    assert trained.exit_code == 0, trained.output
    spec = json.loads((run / "config.json").read_text())["data"]
    assert spec["name"] == str(digit_pairs.resolve()) and spec["x_key"] == "x" and len(spec["sha256"]) == 64
    report = invoke("report", run, "--out", tmp_path / "report.html", "--iw-samples", "3", "--device", "cpu",
                    "--no-progress")
    assert report.exit_code == 0, report.output
    np.savez(digit_pairs, x=np.zeros((5, 16)), y=np.zeros((5, 48)))
    again = invoke("report", run, "--out", tmp_path / "again.html", "--iw-samples", "3", "--device", "cpu",
                   "--no-progress")
    assert again.exit_code != 0 and "has changed since it was recorded" in again.output


def test_sweep_from_a_file(digit_pairs, tmp_path):
    out = tmp_path / "sweep"
    result = invoke("sweep", "--model", "cvae", "--data", digit_pairs, "--x-key", "x", "--y-key", "y",
                    "--latent-dim", "3", "--beta", "1", "--steps", "5", "--iw-samples", "2", "--max-points", "20",
                    "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    spec = json.loads(next((out / "runs").iterdir()).joinpath("config.json").read_text())["data"]
    assert spec["y_key"] == "y" and spec["name"].endswith("my.npz")


def _digits_csv(path, *, label_name: str = "label") -> None:
    """The bundled 8x8 digits as a CSV: pixel columns p00..p77, then the class."""
    digits = load("digits")
    names = [f"p{r}{c}" for r in range(8) for c in range(8)]
    rows = (",".join([*(f"{v:g}" for v in image), str(int(label))])
            for image, label in zip(digits.x.numpy(), digits.labels.numpy()))
    path.write_text(",".join([*names, label_name]) + "\n" + "\n".join(rows) + "\n")


def test_a_csv_label_column_is_refused_as_a_feature_and_taken_with_label_key(tmp_path):
    path = tmp_path / "digits.csv"
    _digits_csv(path)
    refused = invoke("theory", "--model", "vae", "--data", path, "--latent-dim", "4")
    assert refused.exit_code == 2 and "column 'label' looks like class labels" in refused.output
    assert "--label-key label" in refused.output
    by_label = invoke("theory", "--model", "vae", "--data", path, "--label-key", "label", "--latent-dim", "4")
    by_range = invoke("theory", "--model", "vae", "--data", path, "--x-key", "p00:p77", "--latent-dim", "4")
    builtin = invoke("theory", "--model", "vae", "--data", "digits", "--latent-dim", "4")
    assert by_label.exit_code == 0 and by_range.exit_code == 0, by_label.output + by_range.output
    assert _tables(by_label.output) == _tables(by_range.output) == _tables(builtin.output)


def test_train_a_cnn_on_flat_images_with_image_shape(tmp_path):
    path = tmp_path / "digits.csv"
    _digits_csv(path)
    run = tmp_path / "cnn"
    trained = invoke("train", "--model", "vae", "--arch", "cnn", "--data", path, "--label-key", "label",
                     "--image-shape", "8x8", "--latent-dim", "3", "--steps", "3", "--device", "cpu", "--no-progress",
                     "--out", run)
    assert trained.exit_code == 0, trained.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["image_shape"] == [8, 8] and config["data"]["image_shape"] == [8, 8]
    wrong = invoke("train", "--model", "vae", "--arch", "cnn", "--data", path, "--label-key", "label",
                   "--image-shape", "9x9", "--steps", "3", "--out", tmp_path / "wrong")
    assert wrong.exit_code == 2 and "image_shape 9x9 needs 81 values per row of x, got 64" in wrong.output
    builtin = invoke("theory", "--data", "digits", "--image-shape", "8x8")
    assert builtin.exit_code == 2 and "--image-shape describe a data file" in builtin.output
