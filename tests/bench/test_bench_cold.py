"""The cold-process sections of the bench: the plain script, the process timer, the rows and headline."""

import json
import math
import sys

import pandas as pd
import pytest
import torch

from ppl_vae.bench import cold, grid, plain_grid
from ppl_vae.bench.run import COLUMNS

TINY_SWEEP = ("sweep", "--model", "cvae", "--arch", "mlp", "--data", "digits", "--beta", "1", "--eta-dec", "1",
              "--seeds", "0", "--batch-size", "128", "--latent-dim", "2", "--hidden", "8", "--threads", "1", "--quiet")
TINY_PLAIN = ("--beta", "1", "--eta-dec", "1", "--seeds", "0", "--latent-dim", "2", "--hidden", "8", "--threads", "1")


def test_the_plain_loss_is_the_negative_beta_elbo_torch_distributions_give():
    from torch.distributions import Normal, kl_divergence

    x, y = plain_grid.digits_quadrants()
    assert x.shape[1:] == (16,) and y.shape[1:] == (48,) and len(x) == round(0.9 * 1797)
    model = plain_grid.PlainCVAE(16, 48, latent_dim=3, hidden=8)
    torch.manual_seed(5)
    loss = model.loss(x[:32], y[:32], beta=0.5, eta_dec=0.7, eta_enc=1.3)
    torch.manual_seed(5)
    loc, log_scale = model.encoder(torch.cat([x[:32], y[:32]], 1)).chunk(2, -1)
    q = Normal(loc, torch.nn.functional.softplus(log_scale) + 1e-5)
    z = q.rsample()
    likelihood = Normal(model.decoder_z(z) + model.decoder_x(x[:32]), 0.7).log_prob(y[:32]).sum(-1)
    kl = kl_divergence(q, Normal(torch.zeros_like(loc), 1.3)).sum(-1)
    torch.testing.assert_close(loss, (0.5 * kl - likelihood).mean())


def test_the_plain_script_trains_each_configuration_and_writes_a_checkpoint(tmp_path):
    plain_grid.main([*TINY_PLAIN, "--beta", "0.5,2", "--epochs", "1", "--out", str(tmp_path)])
    final = json.loads((tmp_path / "final_loss.json").read_text())
    assert sorted(final) == ["beta=0.5_eta_dec=1_seed=0", "beta=2_eta_dec=1_seed=0"]
    assert all(math.isfinite(value) for value in final.values())
    state = torch.load(tmp_path / "beta=2_eta_dec=1_seed=0.pt", weights_only=True)
    assert state["encoder.0.weight"].shape == (8, 64)


def test_a_timed_process_gives_wall_and_cpu_time_and_a_failure_is_an_error():
    wall, cpu = cold.timed_process([sys.executable, "-c", "sum(range(3_000_000))"])
    assert wall > 0 and cpu > 0
    with pytest.raises(RuntimeError, match="exited with 3"):
        cold.timed_process([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])


def test_the_cold_processes_find_the_package_compiled_as_an_installed_one_is():
    import importlib.util
    from pathlib import Path

    import ppl_vae.bench.plain_grid as plain_module
    import ppl_vae.cli as cli_module

    cold.compile_bytecode()
    for module in (cli_module, plain_module):  # both sides of the grid
        assert Path(importlib.util.cache_from_source(module.__file__)).is_file()


@pytest.mark.slow
def test_cold_section_times_both_sides_from_their_command_lines(monkeypatch):
    monkeypatch.setattr(cold, "SWEEP_ARGS", TINY_SWEEP)
    monkeypatch.setattr(cold, "PLAIN_ARGS", TINY_PLAIN)
    table = pd.DataFrame(cold.cold_rows(epochs=1, log=lambda line: None), columns=COLUMNS)
    assert list(table.variant) == ["ppl-vae", "ppl-vae sweep", "plain_script", "plain_script, freed memory kept",
                                   "ppl-vae sweep"]
    assert (table.wall_s > 0).all()
    (line,) = grid.headline(table)
    assert line.startswith("grid from the command line, cold, files written: ppl-vae sweep")


@pytest.mark.slow
def test_threads_section_runs_train_with_one_thread_and_with_torchs_default(monkeypatch):
    monkeypatch.setattr(cold, "TRAIN_ARGS", ("train", "--model", "vae", "--arch", "linear", "--data", "synthetic",
                                             "--steps", "20"))
    table = pd.DataFrame(cold.threads_rows(log=lambda line: None), columns=COLUMNS)
    assert table.variant.tolist()[0] == "threads=1" and table.variant.tolist()[1].startswith("threads=default(")
    (line,) = grid.headline(table)
    assert line.startswith("ppl-vae train on a busy machine")


def test_busy_cores_are_stopped_afterwards(monkeypatch):
    started = []
    real_popen = cold.subprocess.Popen
    monkeypatch.setattr(cold.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    with cold.busy_cores(2):
        assert len(started) == 2 and all(p.poll() is None for p in started)  # spinning
    assert all(p.returncode is not None for p in started)  # stopped and reaped
