"""What one :class:`~ppl_vae.diagnostics.CollapseMonitor` reading costs against one epoch of training.

The model is the digits VAE of ``docs/own-model.md`` (64 -> 128 -> 8 Gaussian
latents, a Gaussian likelihood with sigma 0.2), trained as the page trains it:
``pyro.infer.SVI`` with ``Trace_ELBO`` and Adam over shuffled minibatches of
128 of the 80% training split. The monitor watches the held-out 20% (at most
its default 256 rows). Epochs and readings are timed in interleaved blocks
(:func:`~ppl_vae.bench.harness.time_interleaved`), so a drift in machine load
hits both alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.bench.harness import time_interleaved


class DocsVAE(nn.Module):
    """The VAE of ``docs/own-model.md`` section 2 (same layers, likelihood and prior)."""

    def __init__(self, x_dim: int = 64, z_dim: int = 8, hidden: int = 128, sigma: float = 0.2):
        super().__init__()
        self.z_dim, self.sigma = z_dim, sigma
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.sigma).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_log_scale = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(z_loc, z_log_scale.exp()).to_event(1))


def _row(case: str, variant: str, seconds: float, note: str) -> dict:
    return {"section": "monitor", "case": case, "variant": variant, "steps_per_s": 1.0 / seconds,
            "samples_per_s": math.nan, "ratio_to_plain": math.nan, "wall_s": seconds, "peak_host_mb": math.nan,
            "peak_device_mb": math.nan, "note": note}


def monitor_rows(device: torch.device, *, repeats: int = 5, calls: int = 10, batch_size: int = 128,
                 log: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Seconds of one SVI epoch and of one monitor reading (median of ``repeats`` interleaved blocks).

    Parameters
    ----------
    device
        Where the model and data live.
    repeats
        Timed rounds; each times one epoch and ``calls`` readings.
    calls
        Readings per timed block.
    batch_size
        Minibatch rows of the epoch.
    """
    from ppl_vae.data import load, train_test_split
    from ppl_vae.diagnostics import CollapseMonitor

    train, test = train_test_split(load("digits"), 0.2, seed=0)
    x, held_out = train.x.to(device), test.x.to(device)
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = DocsVAE().to(device)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 3e-3}), loss=pyro.infer.Trace_ELBO())
    monitor = CollapseMonitor(vae.model, vae.guide, held_out, rows="held-out")

    def epoch() -> None:
        for rows in torch.randperm(x.shape[0], device=device).split(batch_size):
            svi.step(x[rows])

    def readings() -> None:
        for _ in range(calls):
            monitor(force=True)

    epoch()  # warm-up: Adam's state, first-call allocations; then a trained-for-an-epoch model is read
    readings()
    timings = time_interleaved({"svi_epoch": (epoch, 1), "monitor_call": (readings, calls)}, device=device,
                               repeats=repeats)
    pyro.clear_param_store()
    epoch_s, call_s = timings["svi_epoch"].seconds_per_step, timings["monitor_call"].seconds_per_step
    batches = math.ceil(x.shape[0] / batch_size)
    case = f"digits/own-model-vae/b{batch_size}"
    share = f"monitor call {call_s * 1e3:.1f} ms = {call_s / epoch_s:.1%} of one epoch"
    log(f"  {share} ({epoch_s * 1e3:.0f} ms, {batches} SVI steps; reading {monitor.data.n} held-out rows)")
    return [_row(case, "svi_epoch", epoch_s, f"spread {timings['svi_epoch'].spread:.0%}; {batches} SVI steps "
                 f"(Trace_ELBO, Adam) over {x.shape[0]} rows"),
            _row(case, "monitor_call", call_s, f"spread {timings['monitor_call'].spread:.0%}; {share}; "
                 f"{monitor.data.n} held-out rows, {len(monitor.target.latent_sites)} latent site")]
