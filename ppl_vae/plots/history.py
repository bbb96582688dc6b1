"""Since when: per-dimension KL over training steps (the ``kl_history`` Dataset)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._style import SAFE_COLOURS, new_figure, sites_of, step_axis, themed

COLLAPSED_GREY = "0.6"


def collapse_onset(kl: xr.DataArray, epsilon: float) -> xr.DataArray:
    """First step from which a dimension's KL stays below ``epsilon`` until the end (NaN: not collapsed).

    Parameters
    ----------
    kl
        ``(step, <site>_dim)`` KL in nats (a variable of ``kl_history``).
    epsilon
        Collapse threshold in nats.

    Returns
    -------
    DataArray over ``<site>_dim``: a step (float, NaN for dimensions above
    ``epsilon`` at the last step).
    """
    dim = next(d for d in kl.dims if d != "step")
    below = (kl < epsilon).transpose("step", dim).values
    steps = kl["step"].values
    # index of the first step of the final run of True values
    stays = np.flip(np.logical_and.accumulate(np.flip(below, axis=0), axis=0), axis=0)
    first = np.where(stays.any(axis=0), stays.argmax(axis=0), -1)
    onset = np.where(first >= 0, steps[np.clip(first, 0, None)].astype(float), np.nan)
    return xr.DataArray(onset, dims=[dim], coords={dim: kl[dim].values}, name="collapse_onset",
                        attrs={"units": "steps", "epsilon": float(epsilon)})


def kl_history(history: xr.Dataset, *, epsilon: float | None = None, title: str | None = None) -> Figure:
    """Per-dimension KL against the training step, one panel per latent site.

    Dimensions below ``epsilon`` at the last step are drawn in grey (collapsed);
    the others in a colour-blind-safe palette. Both axes are logarithmic (the
    step axis is linear below 1, so step 0 is shown).

    Parameters
    ----------
    history
        The ``kl_history`` Dataset: ``<site>_kl`` over ``(step, <site>_dim)``, nats.
    epsilon
        Collapse threshold (default ``history.attrs['collapse_epsilon']``, else 0.01).
    """
    sites = sites_of(history, "_kl")
    if not sites or "step" not in history.dims:
        raise ValueError("history must hold <site>_kl variables over ('step', '<site>_dim') (the kl_history contract)")
    epsilon = float(epsilon if epsilon is not None else history.attrs.get("collapse_epsilon", 0.01))
    with themed():
        fig = new_figure(6.2 * len(sites), 3.6)  # room for the legend beside each panel
        axes = fig.subplots(1, len(sites), squeeze=False)[0]
        for ax, site in zip(axes, sites):
            kl = history[f"{site}_kl"]
            dim = next(d for d in kl.dims if d != "step")
            steps = kl["step"].values
            last = kl.isel(step=-1).values
            colours = iter(SAFE_COLOURS * (1 + kl.sizes[dim] // len(SAFE_COLOURS)))
            for j, index in enumerate(kl[dim].values):
                values = np.clip(kl.isel({dim: j}).values, 1e-6, None)
                collapsed = bool(last[j] < epsilon)
                ax.plot(steps, values, lw=1.2 if collapsed else 1.6, ls="--" if collapsed else "-",
                        color=COLLAPSED_GREY if collapsed else next(colours),
                        label=f"{index}" + (" (collapsed)" if collapsed else ""))
            ax.axhline(epsilon, color="0.3", ls=":", lw=1)
            step_axis(ax, steps)
            ax.set(yscale="log", xlabel="training step", ylabel="mean KL (nats)", title=f"KL per dimension, {site}")
            if kl.sizes[dim] <= 12:
                ax.legend(title=f"{site} dim", fontsize="x-small", title_fontsize="small", ncol=2,
                          loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if title:
            fig.suptitle(title)
    return fig
