"""Learned against predicted, per dimension: sorted KL of the trained model beside the linear theory's."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._style import SAFE_COLOURS, integer_axis, new_figure, sites_of, themed


def learned_vs_predicted(collapse: xr.Dataset, predicted: xr.Dataset, *, title: str | None = None) -> Figure:
    """Per latent site: learned mean KL per dimension (sorted, largest first) against the prediction.

    Parameters
    ----------
    collapse
        The ``collapse`` group (``<site>_kl_mean`` over ``<site>_dim``, nats).
    predicted
        From :func:`ppl_vae.report.advice.predicted_kl`: ``<site>_kl`` over
        ``<site>_rank`` (nats, NaN where the theory gives no KL) and
        ``<site>_n_active`` (predicted count of active modes); its ``attrs['prediction']``
        says whether it is the run's own closed form or the linear model's answer.
    """
    sites = sites_of(collapse, "_kl_mean")
    if not sites:
        raise ValueError("collapse must hold <site>_kl_mean variables (the 'collapse' group of diagnose)")
    epsilon = float(collapse.attrs.get("collapse_epsilon", 0.01))
    learned_colour, theory_colour = SAFE_COLOURS[0], SAFE_COLOURS[1]
    with themed():
        fig = new_figure(4.8 * len(sites), 3.6)
        axes = fig.subplots(1, len(sites), squeeze=False)[0]
        for ax, site in zip(axes, sites):
            learned = np.sort(np.clip(collapse[f"{site}_kl_mean"].values, 1e-6, None))[::-1]
            ranks = np.arange(learned.size)
            ax.plot(ranks, learned, "o-", color=learned_colour, lw=2, ms=5, label="learned (sorted)")
            if f"{site}_kl" in predicted and np.isfinite(predicted[f"{site}_kl"].values).any():
                theory = np.clip(predicted[f"{site}_kl"].values, 1e-6, None)
                ax.plot(np.arange(theory.size), theory, "s--", color=theory_colour, ms=5, label="theory per mode")
            if f"{site}_n_active" in predicted:
                k = int(predicted[f"{site}_n_active"])
                ax.axvline(k - 0.5, color=theory_colour, ls=":", lw=1.5, label=f"theory: {k} active")
            ax.axhline(epsilon, color="0.4", ls=":", lw=1)
            ax.set(yscale="log", xlabel=f"{site} dimension, by rank (0 = largest KL)", ylabel="mean KL (nats)",
                   title=f"learned vs predicted, {site}")
            integer_axis(ax.xaxis)
            ax.legend(fontsize="x-small", loc="lower left")
        if title:
            fig.suptitle(title, fontsize="medium")
    return fig
