"""Watch collapse inside your own SVI loop: :class:`CollapseMonitor`.

::

    monitor = CollapseMonitor(vae.model, vae.guide, x_test, every=100, rows="held-out")
    for step in range(steps):
        svi.step(x_batch)
        monitor()                      # every 100th call: one reading
    monitor.history                    # xr.Dataset: {site}_kl over (step, {site}_dim)

Every ``every`` calls the monitor measures, on a fixed subset of the rows it
was given, the mean per-dimension KL(q(s_i | .) || p(s_i | .)) of every latent
site ``s`` (without the beta factor), the number of active units and the
number of collapsed dimensions. The per-point KL and guide means come from
the diagnostics' own :func:`~ppl_vae.diagnostics.collapse.statistic_tensors`
(analytic KL for Normal pairs), and the counts follow
:func:`~ppl_vae.diagnostics.collapse.active_units` and
:func:`~ppl_vae.diagnostics.collapse.collapsed_dimensions` (computed on the
tensors: building xarray objects would cost as much as the model's forward
pass), so a reading equals what :func:`~ppl_vae.diagnostics.diagnose` reports
for the same rows and seed (tested).

A reading leaves no trace on the run it watches, through the same isolation as
``diagnose`` (:func:`ppl_vae.diagnostics._isolation.untouched`): torch's,
Python's and NumPy's global random states are restored, the modules are put in
eval mode and back, Pyro's parameter store is left as it was; and no gradient is
recorded, nothing moves device. A loop with the monitor therefore gives the same
losses as the same loop without it.

The history is the suite's per-dimension KL history (``kl_history``): one
variable ``{s}_kl`` per latent site over ``("step", "{s}_dim")`` in nats,
coordinate ``step`` (int64), attributes ``rows``, ``source = "monitor"`` and
``collapse_epsilon``. :meth:`CollapseMonitor.save` writes it to netCDF;
:meth:`CollapseMonitor.attach` adds it to an InferenceData as the group
``kl_history``, which ``ppl-vae report`` draws as "when did each dimension collapse".
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._io import check_path, write_netcdf
from .._validate import check_choice, check_int_range, check_positive
from ._isolation import referenced_modules, untouched
from .collapse import AU_THRESHOLD, COLLAPSE_EPSILON, statistic_tensors
from .target import PyroTarget, as_model_args, as_target, is_suite_style

#: What the monitored rows are (the history's ``rows`` attribute).
ROWS_CHOICES = ("given", "held-out", "training")
#: The InferenceData group (and run-directory file stem) of a KL history.
HISTORY_GROUP = "kl_history"


@dataclasses.dataclass(frozen=True)
class CollapseReading:
    """One measurement, as plain Python numbers.

    Attributes
    ----------
    step
        The step it was taken at (the caller's, or the monitor's call count).
    kl
        Site -> mean KL per dimension over the monitored rows, nats, without beta.
    active_units
        Site -> number of dimensions with Cov_x(E_q[s_i]) above the AU threshold.
    collapsed
        Site -> the dimensions whose mean KL is below the collapse epsilon.
    """

    step: int
    kl: dict[str, list[float]]
    active_units: dict[str, int]
    collapsed: dict[str, list[int]]

    @property
    def n_collapsed(self) -> dict[str, int]:
        """Site -> number of collapsed dimensions."""
        return {site: len(dims) for site, dims in self.collapsed.items()}

    @property
    def kl_total(self) -> dict[str, float]:
        """Site -> KL summed over its dimensions (nats)."""
        return {site: math.fsum(values) for site, values in self.kl.items()}

    def scalars(self) -> dict[str, float | int]:
        """Flat ``{"z/kl_total": ..., "z/active_units": ..., "z/n_collapsed": ..., "z/kl/0": ...}``."""
        out: dict[str, float | int] = {}
        for site, values in self.kl.items():
            out[f"{site}/kl_total"] = self.kl_total[site]
            out[f"{site}/active_units"] = self.active_units[site]
            out[f"{site}/n_collapsed"] = self.n_collapsed[site]
            out.update({f"{site}/kl/{i}": value for i, value in enumerate(values)})
        return out

    def __str__(self) -> str:
        parts = [f"{site}: {self.n_collapsed[site]} of {len(values)} collapsed, {self.active_units[site]} active, "
                 f"KL {self.kl_total[site]:.3g} nats" for site, values in self.kl.items()]
        return f"step {self.step}: " + "; ".join(parts)


def fixed_rows(n: int, max_rows: int, seed: int) -> torch.Tensor:
    """Sorted indices of at most ``max_rows`` of ``n`` rows, drawn without replacement from ``seed``."""
    if n <= max_rows:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:max_rows].sort().values


def nan_variance(values: torch.Tensor) -> torch.Tensor:
    """Variance over rows ``(n, d) -> (d,)`` with ddof = 1, NaN entries skipped (NaN below two values)."""
    count = (~values.isnan()).sum(0)
    centred = values - values.nanmean(0)
    variance = centred.pow(2).nansum(0) / (count - 1).clamp(min=0)
    return torch.where(count > 1, variance, torch.full_like(variance, float("nan")))


def reading_from(kl: dict[str, torch.Tensor], guide_mean: dict[str, torch.Tensor], step: int, *,
                 collapse_epsilon: float, au_threshold: float) -> CollapseReading:
    """A :class:`CollapseReading` from :func:`statistic_tensors` (site -> ``(n, d)`` KL and guide mean).

    The definitions of :func:`~ppl_vae.diagnostics.collapse.collapsed_dimensions`
    (mean KL over rows below ``collapse_epsilon``) and
    :func:`~ppl_vae.diagnostics.collapse.active_units` (variance over rows of the
    guide mean, ddof = 1, above ``au_threshold``), on float64 tensors; entries a
    program masks are NaN there and skipped here, as xarray's reductions skip them.
    """
    kl_mean = {site: values.nanmean(0) for site, values in kl.items()}
    variance = {site: nan_variance(mean) for site, mean in guide_mean.items()}
    return CollapseReading(
        step=int(step),
        kl={site: values.tolist() for site, values in kl_mean.items()},
        active_units={site: int((values > au_threshold).sum()) for site, values in variance.items()},
        collapsed={site: torch.nonzero(values < collapse_epsilon).flatten().tolist()
                   for site, values in kl_mean.items()},
    )


def history_dataset(readings: Sequence[CollapseReading], sites: Sequence[str], *, rows: str,
                    collapse_epsilon: float) -> xr.Dataset:
    """The KL history of ``readings`` in the suite's form (module docstring); no variables while empty."""
    steps = np.array([r.step for r in readings], dtype=np.int64)
    variables = {}
    for site in sites if readings else ():
        values = np.array([r.kl[site] for r in readings], dtype=np.float64)
        variables[f"{site}_kl"] = xr.DataArray(
            values, dims=("step", f"{site}_dim"),
            coords={f"{site}_dim": np.arange(values.shape[1], dtype=np.int64)},
            attrs={"units": "nats", "long_name": f"mean KL(q || p) of {site} per dimension, without beta"})
    return xr.Dataset(variables, coords={"step": steps}).assign_attrs(
        rows=rows, source="monitor", collapse_epsilon=float(collapse_epsilon))


class CollapseMonitor:
    """Per-dimension KL, active units and collapsed count of a Pyro model, every ``every`` calls.

    Parameters
    ----------
    model, guide, data
        As for :func:`~ppl_vae.diagnostics.diagnose`: Pyro callables and what
        they take (tensor ``(n, ...)``, tuple of positional arguments or
        ``DataBundle``), or a suite model and its data (``CollapseMonitor(vae, data)``).
        The rows are what is measured: pass held-out rows to watch held-out collapse.
    every
        Take a reading on every ``every``-th call (the ``every``-th, ``2 * every``-th, ...).
    rows
        What ``data`` is, recorded in the history: ``'given'``, ``'held-out'`` or ``'training'``.
    max_rows
        Measure at most this many rows of ``data``: a fixed subset drawn once from ``seed``
        (at least 2, for the active-unit variance).
    seed
        Seeds the subset and the guide draws; every reading uses the same noise,
        so the history moves only with the parameters.
    kl_samples
        Draws per row over which a conditional latent's KL (two-level models) or a
        Monte Carlo KL is averaged; a single Normal latent needs one, and gets one.
    collapse_epsilon, au_threshold
        A dimension is collapsed when its mean KL is below ``collapse_epsilon`` (nats);
        active when Cov_x(E_q[s_i]) exceeds ``au_threshold``.
    latent_sites, observed_site, vectorize
        As for ``diagnose``.
    modules
        Further ``nn.Module`` objects to hold in eval mode during a reading (those the
        model and guide are, are methods of, or name in their closures and globals
        are found on their own).
    writer, log_dir
        A ``torch.utils.tensorboard.SummaryWriter``, or a directory to open one in
        (closed by :meth:`close`); every reading is logged under ``tag`` (needs ``tensorboard``).
    tag
        Prefix of the TensorBoard scalars: ``{tag}/{site}/kl_total``, ``.../active_units``,
        ``.../n_collapsed`` and ``.../kl/{i}`` per dimension.
    """

    def __init__(self, model, guide: Any = None, data: Any = None, *, every: int = 1, rows: str = "given",
                 max_rows: int = 256, seed: int = 0, kl_samples: int = 8,
                 collapse_epsilon: float = COLLAPSE_EPSILON, au_threshold: float = AU_THRESHOLD,
                 latent_sites: Sequence[str] | str | None = None, observed_site: str | None = None,
                 vectorize: str = "auto", modules: Sequence[torch.nn.Module] = (), writer=None,
                 log_dir: str | os.PathLike | None = None, tag: str = "collapse"):
        if data is None and guide is not None and not callable(guide):
            data, guide = guide, None  # CollapseMonitor(suite_model, data)
        if data is None:
            raise ValueError("data is required: CollapseMonitor(model, guide, data) or CollapseMonitor(suite_model, "
                             "data)")
        if guide is None and not is_suite_style(model):
            raise ValueError("CollapseMonitor(model, guide, data) needs the guide for a plain Pyro model")
        self.every = check_int_range("every", every, 1)
        self.rows = check_choice("rows", rows, ROWS_CHOICES)
        check_int_range("max_rows", max_rows, 2)
        self.seed = int(seed)
        self.kl_samples = check_int_range("kl_samples", kl_samples, 1)
        self.collapse_epsilon = check_positive("collapse_epsilon", collapse_epsilon)
        self.au_threshold = check_positive("au_threshold", au_threshold)
        if writer is not None and log_dir is not None:
            raise ValueError("give writer or log_dir, not both")
        if any(not isinstance(m, torch.nn.Module) for m in modules):
            raise ValueError("modules must be torch.nn.Module objects")

        names_from = model.model if guide is None else model
        args = as_model_args(data, names_from, name="data")
        if args.n < 2:
            raise ValueError(f"data must hold at least 2 rows (active units are a variance over rows), got {args.n}")
        args = args.subset(fixed_rows(args.n, max_rows, self.seed))
        found = referenced_modules(model) if guide is None else referenced_modules(model, guide)
        self._modules = tuple(found) + tuple(m for m in modules if not any(m is f for f in found))
        with untouched(self._modules), torch.no_grad():  # finding the sites traces the model once
            self.target: PyroTarget = as_target(model, guide, args, latent_sites=latent_sites,
                                                observed_site=observed_site, vectorize=vectorize)
        if self.target.n_configs is not None:
            raise ValueError("CollapseMonitor watches one model; a batch of configurations is not supported")
        self.data = args
        self._readings: list[CollapseReading] = []
        self._calls = 0
        self._owns_writer = log_dir is not None
        self.writer = _summary_writer(log_dir) if log_dir is not None else writer
        self.tag = tag

    # -- taking readings ---------------------------------------------------------------------------------------

    def __call__(self, step: int | None = None, *, force: bool = False) -> CollapseReading | None:
        """Count a call; on every ``every``-th (or with ``force``) take a reading and return it, else None.

        ``step`` labels the reading (default: the number of calls so far, i.e. the
        optimiser steps taken when the monitor is called once per step); it must
        exceed the previous reading's.
        """
        self._calls += 1
        if step is None:
            step = self._calls
        if not force and self._calls % self.every:
            return None
        return self.measure(step)

    def step(self) -> CollapseReading | None:
        """``monitor()``: count a call, reading on every ``every``-th."""
        return self()

    def measure(self, step: int) -> CollapseReading:
        """Take a reading now (whatever the call count), labelled ``step``; record and log it."""
        step = check_int_range("step", step, 0)
        if self._readings and step <= self._readings[-1].step:
            raise ValueError(f"step must increase from one reading to the next: got {step} after "
                             f"{self._readings[-1].step}")
        device = self.target.device()
        with untouched(self._modules), torch.no_grad():
            kl, guide_mean, _ = statistic_tensors(self.target, self.data.to(device), num_samples=self.kl_samples,
                                                  batch_size=self.data.n, seed=self.seed)
        reading = reading_from(kl, guide_mean, step, collapse_epsilon=self.collapse_epsilon,
                               au_threshold=self.au_threshold)
        self._readings.append(reading)
        if self.writer is not None:
            for name, value in reading.scalars().items():
                self.writer.add_scalar(f"{self.tag}/{name}", value, step)
        return reading

    @property
    def readings(self) -> tuple[CollapseReading, ...]:
        """Every reading so far, oldest first."""
        return tuple(self._readings)

    @property
    def last(self) -> CollapseReading | None:
        """The latest reading, or None before the first."""
        return self._readings[-1] if self._readings else None

    # -- the history -------------------------------------------------------------------------------------------

    @property
    def history(self) -> xr.Dataset:
        """The per-dimension KL history (module docstring): ``{s}_kl`` over ``("step", "{s}_dim")``."""
        return history_dataset(self._readings, self.target.latent_sites, rows=self.rows,
                               collapse_epsilon=self.collapse_epsilon)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write :attr:`history` to a netCDF file atomically; an existing file only with ``overwrite``."""
        path = check_path(path)
        self._check_not_empty()
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        return write_netcdf(self.history, path, exclusive=not overwrite)

    def attach(self, idata, *, overwrite: bool = False):
        """Add :attr:`history` to ``idata`` (in place) as the group ``kl_history``; return ``idata``."""
        self._check_not_empty()
        if HISTORY_GROUP in idata.groups():
            if not overwrite:
                raise ValueError(f"idata already has a {HISTORY_GROUP!r} group; pass overwrite=True to replace it")
            del idata[HISTORY_GROUP]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # arviz: not one of its standard groups
            idata.add_groups({HISTORY_GROUP: self.history})
        return idata

    def _check_not_empty(self) -> None:
        if not self._readings:
            raise ValueError("the monitor has no reading yet: call it in the loop (or monitor.measure(step)) first")

    # -- TensorBoard -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the TensorBoard writer; close it if the monitor opened it (``log_dir``)."""
        if self.writer is None:
            return
        self.writer.flush()
        if self._owns_writer:
            self.writer.close()

    def __enter__(self) -> CollapseMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"CollapseMonitor(sites={list(self.target.latent_sites)}, rows={self.rows!r} ({self.data.n}), "
                f"every={self.every}, readings={len(self._readings)})")


def _summary_writer(log_dir: str | os.PathLike):
    """A ``SummaryWriter`` in ``log_dir``; a clear error when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("log_dir= needs TensorBoard: pip install tensorboard (or ppl-vae[monitor])") from None
    return SummaryWriter(log_dir=str(check_path(log_dir, "log_dir")))


__all__ = ["CollapseMonitor", "CollapseReading", "HISTORY_GROUP", "ROWS_CHOICES", "fixed_rows", "history_dataset",
           "nan_variance", "reading_from"]
