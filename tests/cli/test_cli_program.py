"""ppl-vae train|sweep --program PATH.py:build: the user's own Pyro program from the command line."""

import json
import textwrap

import pytest
from click.testing import CliRunner

from ppl_vae.cli import main

PROGRAM = textwrap.dedent('''
    import pyro
    import pyro.distributions as dist
    from torch import nn

    class VAE(nn.Module):
        def __init__(self, z_dim, sigma, beta):
            super().__init__()
            self.z_dim, self.sigma, self.beta = z_dim, sigma, beta
            self.encoder = nn.Linear(64, 2 * z_dim)
            self.decoder = nn.Linear(z_dim, 64)

        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            with pyro.plate("obs", x.shape[0]):
                pyro.sample("x", dist.Normal(self.decoder(z), self.sigma).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            loc, log_scale = self.encoder(x).chunk(2, -1)
            with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def build(z_dim=3, sigma=1.0, beta=1.0):
        return VAE(z_dim, sigma, beta)
''')


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "my_vae.py"
    path.write_text(PROGRAM)
    return path


def test_train_a_program_writes_a_run_the_report_reads_without_running_it(program, tmp_path):
    run = tmp_path / "run"
    trained = invoke("train", "--program", f"{program}:build", "--set", "sigma=0.2", "--data", "digits",
                     "--steps", "30", "--batch-size", "128", "--lr", "0.01", "--no-progress", "--out", run)
    assert trained.exit_code == 0, trained.output
    assert "latent dimensions collapsed" in trained.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["family"] == "program" and config["model"]["hyper"] == {"sigma": 0.2}
    assert config["train"]["program"]["sha256"] and config["train"]["program"]["builder"] == "build"
    assert {"checkpoint.pt", "diagnostics.nc", "kl_history.nc", "metrics.json"} <= {p.name for p in run.iterdir()}
    program.write_text("raise SystemExit('the report must never import the program')\n")
    report = invoke("report", run, "--out", tmp_path / "r.html", "--no-progress")
    assert report.exit_code == 0, report.output
    resumed = invoke("train", "--program", program, "--set", "sigma=0.2", "--data", "digits", "--steps", "40",
                     "--out", run, "--resume", "--no-progress")
    assert resumed.exit_code == 2 and "a changed program cannot resume the run" in resumed.output


@pytest.mark.parametrize("args,message", [
    (["--set", "sigma=0.2,1"], "train takes one value per --set"),
    (["--set", "width=3"], "takes no argument 'width'"),
    (["--model", "vae"], "--model name a suite model"),
])
def test_train_program_refusals(program, tmp_path, args, message):
    result = invoke("train", "--program", program, "--steps", "5", "--out", tmp_path / "r", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_set_without_program_is_refused(tmp_path):
    result = invoke("train", "--set", "beta=1", "--steps", "5", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "--set gives the keyword arguments of a --program" in result.output


def test_sweep_a_program_resumes_and_refuses_a_changed_grid_or_file(program, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--program", program, "--set", "beta=1,4", "--seeds", "0,1", "--data", "digits",
            "--steps", "20", "--batch-size", "128", "--out", out, "--quiet"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "4 finished, 0 already done, 0 failed" in first.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "beta=1_seed=0", "beta=1_seed=1", "beta=4_seed=0", "beta=4_seed=1"]
    from ppl_vae.diagnostics import load

    combined = load(out / "combined.nc")
    assert combined.collapse.sizes["run"] == 4
    again = invoke(*args)
    assert again.exit_code == 0 and "0 finished, 4 already done" in again.output
    other = invoke(*[a if a != "beta=1,4" else "beta=1,2" for a in args])
    assert other.exit_code == 2 and "holds a sweep of other settings" in other.output
    program.write_text(program.read_text() + "\n# changed\n")
    changed = invoke(*args)
    assert changed.exit_code == 2 and "another program file" in changed.output
    suite = invoke("sweep", "--program", program, "--beta", "1", "--steps", "5", "--out", tmp_path / "x")
    assert suite.exit_code == 2 and "--beta describe a suite model" in suite.output
