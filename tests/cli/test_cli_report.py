import torch
from click.testing import CliRunner

from ppl_vae.cli import main
from ppl_vae.data import load
from ppl_vae.inference import fit
from ppl_vae.models import VAEConfig, build_model
from ppl_vae.report.runs import DIAGNOSTICS_NAME


def tiny_run(run_dir):
    torch.manual_seed(0)
    bundle = load("digits", classes=[7])
    fit(build_model(VAEConfig(input_dim=64, latent_dim=4, eta_dec=0.5)), bundle, steps=10, lr=0.02,
        run_dir=run_dir, progress=False, device="cpu")
    return run_dir


def test_report_command_writes_the_page_and_refuses_to_overwrite(tmp_path):
    run = tiny_run(tmp_path / "vae_run")
    out = tmp_path / "report.html"
    runner = CliRunner()
    args = ["report", str(run), "--out", str(out), "--iw-samples", "5", "--device", "cpu", "--no-progress"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "of 4 latent dimensions collapsed; theory predicted" in out.read_text()
    assert (run / DIAGNOSTICS_NAME).is_file()

    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    assert runner.invoke(main, [*args, "--overwrite"]).exit_code == 0


def test_report_command_rejects_bad_options(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["report", str(tmp_path / "absent"), "--out", str(tmp_path / "r.html")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
    run = tmp_path / "empty_run"
    run.mkdir()
    bad_k = runner.invoke(main, ["report", str(run), "--out", str(tmp_path / "r.html"), "--iw-samples", "0"])
    assert bad_k.exit_code != 0 and "iw-samples" in bad_k.output
    not_a_run = runner.invoke(main, ["report", str(run), "--out", str(tmp_path / "r.html"), "--no-progress"])
    assert not_a_run.exit_code == 1 and "config.json is missing" in not_a_run.output
