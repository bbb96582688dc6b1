"""``ppl-vae train`` end to end on tiny settings."""

import json

import pytest
from click.testing import CliRunner

from ppl_vae.cli import main

TINY = ["--data", "synthetic", "--n-samples", "120", "--dim", "4", "--latent-dim", "2", "--steps", "30",
        "--lr", "0.01", "--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: extra OpenMP threads only spin-wait (and oversubscribe ``pytest -n 2``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _run(*args):
    return CliRunner().invoke(main, ["train", *args])


def test_train_linear_cvae_writes_run_and_prints_theory_summary(tmp_path):
    out = tmp_path / "run"
    result = _run("--model", "cvae", "--beta", "2", "--eta-dec", "0.5", *TINY, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "final loss" in result.output and "collapsed modes: measured" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["family"] == "cvae" and config["model"]["beta"] == 2.0
    assert config["data"]["name"] == "synthetic" and config["train"]["steps"] == 30
    for name in ("checkpoint.pt", "loss_history.nc", "metrics.json"):
        assert (out / name).is_file()


def test_existing_run_needs_overwrite_or_resume(tmp_path):
    out = tmp_path / "run"
    assert _run("--model", "vae", *TINY, "--out", str(out)).exit_code == 0
    again = _run("--model", "vae", *TINY, "--out", str(out))
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output
    resumed = _run("--out", str(out), "--resume", "--steps", "50", "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 50
    assert _run("--model", "vae", *TINY, "--out", str(out), "--overwrite").exit_code == 0


def test_mhvae_mlp_on_digits(tmp_path):
    result = _run("--model", "mhvae", "--arch", "mlp", "--data", "digits", "--classes", "0,1", "--hidden", "16",
                  "--latent-dims", "4,2", "--sigma1", "learnable", "--steps", "5", "--batch-size", "64",
                  "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "collapsed modes" not in result.output  # no theorem for a non-linear model


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "vae", "--beta", "-1"], "beta"),
    (["--model", "vae", "--device", "cuda:7"], "CUDA"),
])
def test_bad_options_are_clean_errors(tmp_path, args, message):
    base = [a for a in TINY if a not in ("--device", "cpu")]
    result = _run(*args, *base, "--out", str(tmp_path / "run"))
    if message == "CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_missing_mnist_is_a_clean_error(tmp_path):
    result = _run("--model", "vae", "--data", "mnist", "--mnist-dir", str(tmp_path / "nowhere"), "--steps", "1",
                  "--out", str(tmp_path / "run"))
    assert result.exit_code in (1, 2) and "Traceback" not in result.output and result.output.strip()
