"""The per-dimension KL history a fit records: since when did each latent dimension collapse.

:func:`~ppl_vae.inference.fit` asks its loss for the per-dimension KL of every latent
site every ``kl_every`` steps (the KL the ELBO computes on that step's training batch,
no extra forward pass) and returns it as the shared ``kl_history`` Dataset: for each
latent site ``s`` a variable ``{s}_kl`` over ``("step", "{s}_dim")`` (with a leading
``"config"`` for a fit of K configurations), nats, the mean over the batch rows of
KL(q(s_i|.) || p(s_i|.)) without the beta factor. Attributes ``rows='training'``,
``source='fit'``, ``collapse_epsilon``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr

#: Nats below which a dimension counts as collapsed (the diagnostics' default).
COLLAPSE_EPSILON = 0.01
#: Records over a run when ``kl_every`` is not given (every 1% of the steps).
DEFAULT_RECORDS = 100


def kl_every_default(total_steps: int) -> int:
    """Steps between KL records: about ``DEFAULT_RECORDS`` over a run of ``total_steps``."""
    return max(1, total_steps // DEFAULT_RECORDS)


#: Below this many steps a run's loss record computes the KL at every step (see :func:`kl_at_every_step`).
SHORT_RUN_STEPS = 1000


def kl_at_every_step(kl_every: int, steps: int) -> bool:
    """Whether the loss should output the KL at every step rather than only at the recorded ones.

    Two records of the loss (with and without the KL outputs) cost one more trace and check
    per run (about the time of a hundred steps); one record with the KL costs a few small
    kernels per step. The first is cheaper for long runs, the second for short ones.
    """
    return 0 < kl_every < steps <= SHORT_RUN_STEPS or (kl_every == 1 and steps > 0)


def is_record_step(done: int, kl_every: int, total_steps: int) -> bool:
    """Whether the step that makes ``done`` steps in total records the KL (and the last always does)."""
    return kl_every > 0 and (done % kl_every == 0 or done == total_steps)


def stack_records(records: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Site -> ``(S, ..., d)`` float64 array of ``S`` records (one host read for the whole run).

    A site whose width changed during the run (a program whose latent width depends on
    the data) is padded with NaN to its widest record.
    """
    if not records:
        return {}
    stacked = {}
    for site in records[0]:
        values = [r[site].double() for r in records if site in r]
        width = max(v.shape[-1] for v in values)
        values = [torch.nn.functional.pad(v, (0, width - v.shape[-1]), value=float("nan")) for v in values]
        stacked[site] = torch.stack(values).cpu().numpy()
    return stacked


def as_dataset(steps: Sequence[int], values: Mapping[str, np.ndarray], single: bool,
               diverged: Mapping[int, int] | None = None) -> xr.Dataset:
    """The ``kl_history`` Dataset of a fit.

    Parameters
    ----------
    steps
        ``S`` optimiser steps (steps done when each record was taken).
    values
        Site -> ``(S, d)`` (one model) or ``(S, K, d)`` per-dimension KL, nats.
    single
        One model: no ``config`` dimension.
    diverged
        Configuration -> first non-finite step; its later records are NaN.
    """
    steps = np.asarray(steps, dtype=np.int64)
    data_vars = {}
    for site, array in values.items():
        array = np.array(array, dtype=np.float64)
        if not single:
            if array.ndim == 2:  # a sequence of one model: its sites have no configs dimension
                array = array[:, None, :]
            for k, bad in (diverged or {}).items():
                array[steps >= bad, k] = np.nan
            array = np.moveaxis(array, 1, 0)  # (K, S, d)
        dims = ("step", f"{site}_dim") if single else ("config", "step", f"{site}_dim")
        data_vars[f"{site}_kl"] = xr.Variable(dims, array, attrs={
            "units": "nats", "long_name": f"KL(q || p) of each {site} dimension, mean over the training batch"})
    coords = {"step": steps}
    if not single and values:
        coords["config"] = np.arange(data_vars[next(iter(data_vars))].shape[0])
    return xr.Dataset(data_vars, coords=coords,
                      attrs={"rows": "training", "source": "fit", "collapse_epsilon": COLLAPSE_EPSILON})
