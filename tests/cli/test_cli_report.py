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


class _PlainVAE(torch.nn.Module):
    """A Gaussian VAE written the usual Pyro way (not one of the suite's classes)."""

    def __init__(self, x_dim=64, z_dim=3):
        super().__init__()
        self.z_dim = z_dim
        self.enc = torch.nn.Linear(x_dim, 2 * z_dim)
        self.dec = torch.nn.Linear(z_dim, x_dim)

    def model(self, x):
        import pyro
        import pyro.distributions as dist

        pyro.module("plain_vae", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        import pyro
        import pyro.distributions as dist

        pyro.module("plain_vae", self)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def test_report_reads_inference_data_files_next_to_run_directories(tmp_path):
    from ppl_vae.diagnostics import diagnose, save

    torch.manual_seed(0)
    vae = _PlainVAE()
    idata = diagnose(vae.model, vae.guide, load("digits", classes=[7]), iw_samples=5, n_obs=6, n_draws=4,
                     kl_samples=2, progress=False, device="cpu")
    path = save(idata, tmp_path / "my_model.nc")
    run = tiny_run(tmp_path / "vae_run")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(path), str(run), "--out", str(out), "--iw-samples", "5",
                                       "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<b>my_model</b>: " in page and "<b>vae_run</b>: " in page
    assert "of 3 latent dimensions collapsed; theory predicted" in page  # the theory read off the traces
    assert "reconstructions: data and decoder means" in page and "not drawn" not in page
    assert 'id="family-pyro"' in page and 'id="family-vae"' in page  # one section per model family

    other = tmp_path / "other.nc"
    import xarray as xr

    xr.Dataset({"a": ("i", [1.0])}).to_netcdf(other)
    bad = CliRunner().invoke(main, ["report", str(other), "--out", str(tmp_path / "bad.html"), "--no-progress"])
    assert bad.exit_code == 2 and "other.nc: no collapse group" in bad.output
