"""Collapse and fit against a hyper-parameter, across runs."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._style import integer_axis, line_colours, new_figure, sites_of, themed


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
    series = _series_labels(collapse, x)
    sites = sites_of(collapse, "_active_units")
    palette = line_colours(10)
    markers = "osD^v<>p*"
    with themed():
        fig = new_figure(9.0, 3.6)
        au_ax, nll_ax = fig.subplots(1, 2)
        # One line per series (model and the other hyper-parameters held fixed), so that
        # runs that differ in more than x are never joined into one curve.
        for j, label in enumerate(dict.fromkeys(series)):
            members = np.flatnonzero(series == label)
            members = members[np.argsort(collapse[x].values[members], kind="stable")]
            xs = collapse[x].values[members]
            suffix = f" {label}" if len(set(series)) > 1 else ""
            for i, site in enumerate(sites):
                values = collapse[f"{site}_active_units"].values[members]
                if np.all(np.isnan(values)):
                    continue
                au_ax.plot(xs, values, marker=markers[j % len(markers)], color=palette[i % len(palette)],
                           label=f"{site}{suffix}")
            nll = -metrics["iw_log_likelihood"].values[members]
            se = metrics["iw_log_likelihood_se"].values[members] if "iw_log_likelihood_se" in metrics else None
            nll_ax.errorbar(xs, nll, yerr=se, marker=markers[j % len(markers)], capsize=3,
                            color=palette[(3 + j) % len(palette)], label=label or None)
        xs = collapse[x].values
        au_ax.set(xlabel=x, ylabel="active units (Cov > 0.01)", title="active units")
        integer_axis(au_ax.yaxis)
        au_ax.legend(fontsize="x-small", loc="best")
        if len(set(series)) > 1:
            nll_ax.legend(fontsize="small")
        k = metrics.attrs.get("iw_samples")
        nll_ax.set(xlabel=x, ylabel="NLL (nats per point)", title=f"held-out NLL (IW, K={k})" if k else "held-out NLL")
        if np.all(xs > 0) and xs.max() / xs.min() > 8:
            au_ax.set_xscale("log")
            nll_ax.set_xscale("log")
        if title:
            fig.suptitle(title)
    return fig


def _series_labels(collapse: xr.Dataset, x: str) -> np.ndarray:
    """One label per run naming what, besides ``x``, sets it apart (family/arch, other hyper-parameters)."""
    parts = []
    for name in ("family", "arch"):
        if name in collapse.coords and len(set(collapse[name].values.tolist())) > 1:
            parts.append([str(v) for v in collapse[name].values])
    others = [name for name, coord in collapse.coords.items()
              if name not in (x, "run", "family", "arch") and coord.dims == ("run",)
              and np.issubdtype(coord.dtype, np.number)]
    for name in sorted(others):
        values = collapse[name].values.astype(float)
        finite = values[np.isfinite(values)]
        if finite.size and np.unique(finite).size > 1:
            parts.append([f"{name}={v:g}" if np.isfinite(v) else "" for v in values])  # never "eta_dec=nan"
    if not parts:
        return np.array([""] * collapse.sizes["run"])
    return np.array([" ".join(item for item in items if item) for items in zip(*parts)])
