"""Benchmarks: Pyro SVI against plain PyTorch, time to reach the theory, sweeps.

- :mod:`~ppl_vae.bench.harness`: medians of repeated timed blocks after a
  warm-up; peak host and device memory.
- :mod:`~ppl_vae.bench.reference`: the same losses in plain PyTorch.
- :mod:`~ppl_vae.bench.cases`: data sets, models, one step per variant.
- :mod:`~ppl_vae.bench.run`: :func:`run_bench`, the table ``ppl-vae bench`` prints.
- :mod:`~ppl_vae.bench.cold`: the command line timed as a user meets it, in cold processes;
  :mod:`~ppl_vae.bench.plain_grid` is the plain PyTorch script it is compared with.
"""

import importlib
from typing import Any

#: name -> submodule, imported on first use: ``python -m ppl_vae.bench.plain_grid`` (the plain
#: PyTorch side of the command-line grid) must cost a cold start no more than torch.
_EXPORTS = {
    **dict.fromkeys(("VARIANTS", "Case", "DeviceBatches", "bench_config", "bench_data", "make_step"), "cases"),
    **dict.fromkeys(("PeakMemory", "Timing", "host_peak_mb", "median_wall_time", "time_steps"), "harness"),
    **dict.fromkeys(("cvae_loss", "gaussian_kl", "gaussian_log_density", "mhvae_loss", "plain_loss", "vae_loss"),
                    "reference"),
    **dict.fromkeys(("COLUMNS", "SECTIONS", "bench_dataset", "default_cases", "format_table", "run_bench",
                     "theory_reached", "time_to_theory"), "run"),
}

__all__ = [
    "COLUMNS", "SECTIONS", "Case", "DeviceBatches", "PeakMemory", "Timing", "VARIANTS", "bench_config", "bench_data",
    "bench_dataset", "cvae_loss", "default_cases", "format_table", "gaussian_kl", "gaussian_log_density",
    "host_peak_mb", "make_step", "median_wall_time", "mhvae_loss", "plain_loss", "run_bench", "theory_reached",
    "time_steps", "time_to_theory", "vae_loss",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
