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


def test_resume_refuses_changed_options_by_name_and_accepts_unchanged_ones(tmp_path):
    out = tmp_path / "run"
    assert _run("--model", "vae", "--beta", "2", *TINY, "--out", str(out)).exit_code == 0
    changed = _run("--out", str(out), "--resume", "--beta", "3", "--lr", "0.1", "--steps", "40", "--no-progress")
    assert changed.exit_code == 2 and "Traceback" not in changed.output
    assert "--beta 3.0 (the run has 2.0)" in changed.output and "--lr 0.1 (the run has 0.01)" in changed.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30  # nothing was touched
    fixed = _run("--out", str(out), "--resume", "--kl-warmup", "5", "--steps", "40", "--no-progress")
    assert fixed.exit_code == 2 and "--kl-warmup (fixed by the run's config.json)" in fixed.output

    same = _run("--out", str(out), "--resume", "--beta", "2", "--lr", "0.01", "--model", "vae", "--steps", "40",
                "--no-progress")
    assert same.exit_code == 0, same.output
    train = json.loads((out / "config.json").read_text())["train"]
    assert train["steps"] == 40 and train["resumed"] == [{"from_step": 30, "steps": 40}]


def test_resume_of_a_sweep_run_says_to_rerun_the_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    swept = CliRunner().invoke(main, ["sweep", "--data", "synthetic", "--n-samples", "60", "--dim", "4",
                                      "--latent-dim", "2", "--steps", "5", "--beta", "1", "--iw-samples", "2",
                                      "--quiet", "--out", str(sweep_dir)])
    assert swept.exit_code == 0, swept.output
    result = _run("--out", str(sweep_dir / "runs" / "beta=1"), "--resume", "--steps", "10", "--no-progress")
    assert result.exit_code == 1 and "Traceback" not in result.output and "KeyError" not in result.output
    assert "one run of the sweep" in result.output and "rerun the same `ppl-vae sweep" in result.output


def test_overwrite_clears_the_old_run_first_and_refuses_a_folder_with_other_files(tmp_path):
    out = tmp_path / "run"
    assert _run("--model", "vae", *TINY, "--out", str(out)).exit_code == 0
    result = _run("--model", "vae", "--eta-dec", "0.01", *TINY, "--lr", "1e6", "--steps", "400", "--out", str(out),
                  "--overwrite")
    assert result.exit_code == 1 and "no checkpoint had been written yet" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]  # not the old checkpoint beside it

    (out / "notes.txt").write_text("mine")
    refused = _run("--model", "vae", *TINY, "--out", str(out), "--overwrite")
    assert refused.exit_code == 1 and "not part of a ppl-vae run (notes.txt)" in refused.output
    assert (out / "notes.txt").read_text() == "mine"


def test_an_empty_out_is_refused_not_taken_as_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("--model", "vae", *TINY, "--out", "", "--overwrite")
    assert result.exit_code == 2 and "--out" in result.output and "must not be empty" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_latent_wider_than_the_data_is_refused_before_training(tmp_path):
    result = _run("--model", "vae", *TINY, "--latent-dim", "9", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "latent_dim must be <= input_dim = 4" in result.output
    assert not (tmp_path / "run").exists()
