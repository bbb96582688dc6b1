"""Benchmarks: Pyro SVI against plain PyTorch, time to reach the theory, sweeps.

- :mod:`~ppl_vae.bench.harness`: medians of repeated timed blocks after a
  warm-up; peak host and device memory.
- :mod:`~ppl_vae.bench.reference`: the same losses in plain PyTorch.
- :mod:`~ppl_vae.bench.cases`: data sets, models, one step per variant.
- :mod:`~ppl_vae.bench.run`: :func:`run_bench`, the table ``ppl-vae bench`` prints.
"""

from ppl_vae.bench.cases import VARIANTS, Case, DeviceBatches, bench_config, bench_data, make_step
from ppl_vae.bench.harness import PeakMemory, Timing, host_peak_mb, median_wall_time, time_steps
from ppl_vae.bench.reference import cvae_loss, gaussian_kl, gaussian_log_density, mhvae_loss, plain_loss, vae_loss
from ppl_vae.bench.run import (
    COLUMNS,
    SECTIONS,
    bench_dataset,
    default_cases,
    format_table,
    run_bench,
    theory_reached,
    time_to_theory,
)

__all__ = [
    "COLUMNS", "SECTIONS", "Case", "DeviceBatches", "PeakMemory", "Timing", "VARIANTS", "bench_config", "bench_data",
    "bench_dataset", "cvae_loss", "default_cases", "format_table", "gaussian_kl", "gaussian_log_density",
    "host_peak_mb", "make_step", "median_wall_time", "mhvae_loss", "plain_loss", "run_bench", "theory_reached",
    "time_steps", "time_to_theory", "vae_loss",
]
