"""Collapse and fit against a hyper-parameter, across runs."""

from __future__ import annotations

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure

from ._style import new_figure, sites_of, themed


def metrics_vs_hyperparameter(collapse: xr.Dataset, metrics: xr.Dataset, x: str = "beta", *,
                              title: str | None = None) -> Figure:
    """Active units (per latent site) and held-out NLL against hyper-parameter ``x``.

    Parameters
    ----------
    collapse, metrics
        The ``collapse`` and ``metrics`` groups combined along ``run``
        (:func:`ppl_vae.diagnostics.combine`), with ``x`` a coordinate on ``run``.
    x
        The hyper-parameter on the horizontal axis (``beta``, ``eta_dec``, ``beta2``, ...).
    """
    for ds, what in ((collapse, "collapse"), (metrics, "metrics")):
        if "run" not in ds.dims or x not in ds.coords:
            raise ValueError(f"{what} must be combined along 'run' with {x!r} as a coordinate (see combine())")
    # runs of another family lack this hyper-parameter (NaN): leave them out
    keep = np.isfinite(collapse[x].values.astype(float))
    collapse, metrics = collapse.isel(run=keep), metrics.isel(run=keep)
    order = np.argsort(collapse[x].values, kind="stable")
    xs = collapse[x].values[order]
    sites = sites_of(collapse, "_active_units")
    palette = sns.color_palette()
    with themed():
        fig = new_figure(9.0, 3.6)
        au_ax, nll_ax = fig.subplots(1, 2)
        for i, site in enumerate(sites):
            if collapse[f"{site}_active_units"].isnull().all():
                continue
            au_ax.plot(xs, collapse[f"{site}_active_units"].values[order], "o-", color=palette[i], label=site)
        au_ax.set(xlabel=x, ylabel="active units (Cov > 0.01)", title="active units")
        au_ax.legend(fontsize="small")
        nll = -metrics["iw_log_likelihood"].values[order]
        se = metrics["iw_log_likelihood_se"].values[order] if "iw_log_likelihood_se" in metrics else None
        nll_ax.errorbar(xs, nll, yerr=se, fmt="o-", color=palette[3], capsize=3)
        k = metrics.attrs.get("iw_samples")
        nll_ax.set(xlabel=x, ylabel="NLL (nats per point)", title=f"held-out NLL (IW, K={k})" if k else "held-out NLL")
        if np.all(xs > 0) and xs.max() / xs.min() > 8:
            au_ax.set_xscale("log")
            nll_ax.set_xscale("log")
        if title:
            fig.suptitle(title)
    return fig
