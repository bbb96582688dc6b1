"""Figures of the ``collapse`` group: epsilon-collapse curves and per-dimension KL."""

from __future__ import annotations

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure

from ._style import SAFE_COLOURS, integer_axis, line_colours, new_figure, run_labels, runs_with, sites_of, themed


def collapse_curves(collapse: xr.Dataset, *, title: str | None = None) -> Figure:
    """Fraction of (point, dimension) pairs with KL < epsilon against epsilon.

    One panel per latent site; with a ``run`` dimension, one line per run.

    Parameters
    ----------
    collapse
        The ``collapse`` group (or several runs combined along ``run``), with
        ``<site>_collapse_fraction`` over ``epsilon``.
    """
    sites = sites_of(collapse, "_collapse_fraction")
    if not sites:
        raise ValueError("collapse must hold <site>_collapse_fraction variables (the 'collapse' group of diagnose)")
    with themed():
        fig = new_figure(4.8 * len(sites), 3.6)
        axes = fig.subplots(1, len(sites), squeeze=False)[0]
        for ax, site in zip(axes, sites):
            curve, site_runs = runs_with(collapse[f"{site}_collapse_fraction"], collapse)
            eps = collapse["epsilon"].values
            if "run" in curve.dims:
                palette = line_colours(curve.sizes["run"])
                for i, label in enumerate(run_labels(site_runs)):
                    ax.plot(eps, curve.isel(run=i).values, color=palette[i], label=label, lw=2)
                ax.legend(fontsize="x-small", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            else:
                ax.plot(eps, curve.values, lw=2, color=SAFE_COLOURS[0])
            ax.axvline(float(collapse.attrs.get("collapse_epsilon", 0.01)), color="0.5", ls=":", lw=1)
            ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="epsilon (nats)",
                   ylabel="fraction of pairs with KL < epsilon", title=f"collapse level, {site}")
        if title:
            fig.suptitle(title)
    return fig


def kl_per_dimension(collapse: xr.Dataset, *, title: str | None = None) -> Figure:
    """Data-mean KL of every latent dimension.

    Bars (log scale, the 0.01 collapse threshold dotted) for one run; a
    heatmap of log10 KL (run x dimension) when ``collapse`` has a ``run`` dimension;
    every panel of the figure shares one colour scale (one colour bar, on the last panel).
    """
    sites = sites_of(collapse, "_kl_mean")
    if not sites:
        raise ValueError("collapse must hold <site>_kl_mean variables (the 'collapse' group of diagnose)")
    threshold = float(collapse.attrs.get("collapse_epsilon", 0.01))
    with themed():
        runs = collapse.sizes.get("run", 0)
        # a heatmap cell per dimension needs room for its tick label next to long run names
        widest = max(collapse.sizes.get(f"{site}_dim", 1) for site in sites)
        panel_width = 4.8 if not runs else max(4.8, 3.5 + 0.3 * widest)
        fig = new_figure(panel_width * len(sites), 3.6 if not runs else 1.2 + 0.4 * runs)
        axes = fig.subplots(1, len(sites), squeeze=False)[0]
        # one colour scale for every panel, so a colour means the same KL across sites
        finite = np.concatenate([collapse[f"{site}_kl_mean"].values.ravel() for site in sites])
        finite = finite[np.isfinite(finite)]
        vmax = float(np.log10(max(finite.max(), 1e-4))) if finite.size else 1.0
        for i_ax, (ax, site) in enumerate(zip(axes, sites)):
            kl, site_runs = runs_with(collapse[f"{site}_kl_mean"], collapse)
            dim = f"{site}_dim"
            if runs:
                kl = kl.dropna(dim, how="all")
                log_kl = np.log10(np.clip(kl.transpose("run", dim).values, 1e-6, None))
                last = i_ax == len(sites) - 1
                sns.heatmap(log_kl, ax=ax, cmap="viridis", cbar=last, vmin=-4, vmax=max(vmax, -3.0),
                            cbar_kws={"label": "log10 mean KL (nats)"} if last else None,
                            yticklabels=run_labels(site_runs) if i_ax == 0 else False,
                            xticklabels=[str(v) for v in kl[dim].values])
                ax.set(xlabel=f"{site} dimension", ylabel="", title=f"mean KL per dimension, {site}")
            else:
                values = np.clip(kl.values, 1e-6, None)
                colors = [SAFE_COLOURS[3] if v < threshold else SAFE_COLOURS[0] for v in values]
                ax.bar(kl[dim].values, values, color=colors)
                ax.axhline(threshold, color="0.4", ls=":", lw=1)
                # the threshold is named in the title: a legend inside the axes would sit on a bar
                ax.set(yscale="log", xlabel=f"{site} dimension", ylabel="mean KL (nats)",
                       title=f"mean KL per dimension, {site}\n(dotted: collapsed below {threshold:g})")
                integer_axis(ax.xaxis)
        if title:
            fig.suptitle(title)
    return fig
