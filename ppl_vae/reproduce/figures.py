"""Line figures of an experiment's summary Dataset (values against one coordinate).

The per-run figures come from :mod:`ppl_vae.plots`; these draw the few
cross-run summaries the paper shows as plain curves (collapsed count against
beta, theory beside measurement), in the same style.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure

from ppl_vae.plots._style import new_figure, themed


def series(data: xr.Dataset, x: str, variables: Sequence[str], *, hue: str | None = None, title: str = "",
           ylabel: str = "", logx: bool = False) -> Figure:
    """Each variable of ``data`` against coordinate ``x``, one line per ``hue`` value.

    Variables named ``predicted_*`` or ``theory_*`` are drawn solid with circles,
    everything else dashed with squares, so theory and measurement read apart.

    Parameters
    ----------
    data
        Variables over ``x`` (and ``hue`` when given).
    x
        Dimension / coordinate on the horizontal axis.
    variables
        Names of the variables to draw.
    hue
        Optional second dimension: one line per value.
    """
    missing = [v for v in variables if v not in data]
    if missing or x not in data.coords:
        raise ValueError(f"data must hold coordinate {x!r} and variables {list(variables)!r}; missing {missing}")
    hues = [None] if hue is None else list(data[hue].values)
    palette = sns.color_palette("viridis" if len(hues) > 3 else "deep", max(len(hues) * len(variables), 1))
    with themed():
        fig = new_figure(6.0, 3.8)
        ax = fig.subplots()
        k = 0
        for variable in variables:
            theory = variable.startswith(("predicted", "theory"))
            for value in hues:
                values = data[variable] if value is None else data[variable].sel({hue: value})
                label = variable.replace("_", " ") + ("" if value is None else f", {hue}={value:g}"
                                                      if isinstance(value, (int, float, np.number)) else f", {value}")
                ax.plot(data[x].values, values.values, "o-" if theory else "s--", color=palette[k],
                        label=label, lw=2 if theory else 1.5, ms=5)
                k += 1
        ax.set(xlabel=x, ylabel=ylabel, title=title)
        if logx:
            ax.set_xscale("log")
        ax.legend(fontsize="x-small", ncol=2 if k > 6 else 1)
    return fig


def seed_trends(table, x: str, metrics: Sequence[str], *, hue: str | None = None, title: str = "",
                logx: bool = False) -> Figure:
    """Seed means with standard-error bars of each metric against ``x``, one panel per metric.

    Parameters
    ----------
    table
        One row per configuration and seed (a ``pandas.DataFrame``): columns
        ``x``, ``metrics`` and optionally ``hue``.
    x
        Column on the horizontal axis.
    metrics
        Columns drawn, one panel each.
    hue
        Optional column: one line per value.
    """
    missing = [c for c in (x, *metrics, *([hue] if hue else [])) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    with themed():
        fig = new_figure(3.4 * len(metrics), 3.2)
        axes = np.atleast_1d(fig.subplots(1, len(metrics)))
        for ax, metric in zip(axes, metrics):
            sns.lineplot(data=table, x=x, y=metric, hue=hue, errorbar="se", marker="o", err_style="bars",
                         ax=ax, palette="deep" if hue else None, legend=ax is axes[-1])
            ax.set(ylabel=metric.replace("_", " "))
            if logx:
                ax.set_xscale("log")
        if hue and axes[-1].get_legend() is not None:
            axes[-1].legend(fontsize="x-small", title=hue)
        fig.suptitle(f"{title} (seed mean +/- se)" if title else "seed mean +/- se", fontsize="small")
    return fig
