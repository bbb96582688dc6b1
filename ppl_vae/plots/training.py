"""Training loss curves from ``loss_history.nc``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._style import line_colours, step_axis, themed, new_figure


def loss_curves(losses: Mapping[str, xr.DataArray] | xr.DataArray, *, title: str | None = None) -> Figure:
    """The training loss (negative beta-ELBO per point) against the step, one line per run.

    The step axis is logarithmic (linear below 1): the first steps' spike does not flatten the rest.

    Parameters
    ----------
    losses
        Run name -> loss over ``step``, or one DataArray over ``step`` (and
        optionally ``run``).
    """
    if isinstance(losses, xr.DataArray):
        losses = {str(r): losses.sel(run=r) for r in losses["run"].values} if "run" in losses.dims else {"": losses}
    if not losses:
        raise ValueError("losses must hold at least one loss history")
    palette = line_colours(len(losses))
    with themed():
        fig = new_figure(6.4, 3.6)
        ax = fig.subplots()
        positive = True
        for color, (name, loss) in zip(palette, losses.items()):
            if "step" not in loss.dims:
                raise ValueError(f"loss history {name!r} must be over 'step', got dims {loss.dims}")
            values = loss.values
            positive &= bool(np.all(values[np.isfinite(values)] > 0))
            ax.plot(loss["step"].values, values, color=color, lw=1.5, label=name or None)
        step_axis(ax, np.concatenate([loss["step"].values for loss in losses.values()]))
        ax.set(xlabel="step", ylabel=losses[next(iter(losses))].attrs.get("long_name", "loss"), title="training loss")
        if positive:
            ax.set_yscale("log")
        if len(losses) > 1 or next(iter(losses)):
            ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if title:
            fig.suptitle(title)
    return fig
