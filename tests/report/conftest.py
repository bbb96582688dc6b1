"""Tiny trained runs on two digit classes, shared by the report tests."""

from __future__ import annotations

import pytest
import torch

from ppl_vae.data import load
from ppl_vae.inference import fit
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model
from report_testing import FAST, PyroVAE, kl_history_fixture


def train_run(run_dir, config, paired, steps=10):
    torch.manual_seed(0)
    bundle = load("digits", paired=paired, classes=[0, 1])
    fit(build_model(config), bundle, steps=steps, lr=0.02, run_dir=run_dir, progress=False, device="cpu")
    return run_dir


@pytest.fixture(scope="session")
def cvae_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [
        train_run(root / f"cvae_beta{beta}", CVAEConfig(x_dim=16, y_dim=48, latent_dim=6, beta=beta, eta_dec=0.5),
                  paired=True)
        for beta in (0.5, 2.0)
    ]


@pytest.fixture(scope="session")
def mhvae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mhvae")
    # a warm-up on z2 and a free-bits floor: the report draws the schedule and the floor
    config = MHVAEConfig(input_dim=64, latent_dims=(4, 3), arch="mlp", hidden_dims=(16,), beta2=2.0, kl_warmup2=5,
                         free_bits2=0.1)
    return train_run(root / "mhvae", config, paired=False)


@pytest.fixture(scope="session")
def report_page(cvae_runs, mhvae_run, tmp_path_factory):
    from ppl_vae.report.runs import write_report

    return write_report([*cvae_runs, mhvae_run], tmp_path_factory.mktemp("report") / "report.html", **FAST)


@pytest.fixture(scope="session")
def mixed_report(cvae_runs, mhvae_run, tmp_path_factory):
    """A report of a mixed set: a linear CVAE, an MLP VAE, a user's Pyro model (.nc) and a two-level MLP MHVAE.

    The MLP VAE run carries a kl_history.nc of the shared contract's form, and the Pyro
    model's file a kl_history group, as the producers write them.
    """
    from ppl_vae.diagnostics import diagnose, save
    from ppl_vae.report.runs import KL_HISTORY_NAME, write_report

    root = tmp_path_factory.mktemp("mixed")
    mlp = train_run(root / "vae_mlp", VAEConfig(input_dim=64, latent_dim=5, arch="mlp", hidden_dims=(16,),
                                                 eta_dec=0.3), paired=False)
    kl_history_fixture({"z": 5}, collapse_at={"z": {3: 20, 4: 5}}).to_netcdf(mlp / KL_HISTORY_NAME)
    torch.manual_seed(0)
    user = PyroVAE()
    idata = diagnose(user.model, user.guide, load("digits", classes=[7]), iw_samples=5, n_obs=6, n_draws=4,
                     kl_samples=2, progress=False, device="cpu")
    idata.add_groups({"kl_history": kl_history_fixture({"code": 3}, collapse_at={"code": {2: 10}})})
    pyro_file = save(idata, root / "my_pyro_model.nc")
    page = write_report([cvae_runs[0], mlp, pyro_file, mhvae_run], root / "report.html", **FAST)
    return page


@pytest.fixture(scope="session")
def diagnosed():
    """A user's Pyro VAE (latent site ``code``), diagnosed in memory with tiny settings."""
    from ppl_vae.diagnostics import diagnose

    torch.manual_seed(0)
    user = PyroVAE(z_dim=3)
    return diagnose(user.model, user.guide, load("digits", classes=[7]), iw_samples=3, n_obs=6, n_draws=4,
                    kl_samples=2, progress=False, device="cpu")
