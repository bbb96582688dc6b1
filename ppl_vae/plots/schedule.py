"""The KL-weight schedule over optimisation steps (from :func:`ppl_vae.inference.schedules.schedule_curve`)."""

from __future__ import annotations

import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._style import line_colours, new_figure, themed


def _as_curve(curve: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """The weight DataArray: itself, or a Dataset's ``kl_weight`` (or only) variable, keeping the Dataset's attrs."""
    if isinstance(curve, xr.DataArray):
        return curve
    if not isinstance(curve, xr.Dataset):
        raise ValueError(f"curve must be an xarray DataArray or Dataset, got {type(curve).__name__}")
    names = list(curve.data_vars)
    name = "kl_weight" if "kl_weight" in names else (names[0] if len(names) == 1 else None)
    if name is None:
        raise ValueError(f"curve Dataset must hold a 'kl_weight' variable or exactly one variable, got {names}")
    return curve[name].assign_attrs({**curve.attrs, **curve[name].attrs})


def _label(line: xr.DataArray, dim: str) -> str:
    """A configuration's legend label from its schedule coordinates (or ``dim=value``)."""
    coords = {name: float(line[name]) for name in ("warmup_steps", "cycle_steps", "cycle_ratio") if name in line.coords}
    if coords.get("cycle_steps", 0) > 0:
        return f"cyclical P={coords['cycle_steps']:g}, R={coords.get('cycle_ratio', float('nan')):g}"
    if coords.get("warmup_steps", 0) > 0:
        return f"warm-up W={coords['warmup_steps']:g}"
    if coords:
        return "constant"
    return f"{dim}={line[dim].item()}"


def plot_kl_schedule(curve: xr.DataArray | xr.Dataset, ax: Axes | None = None, *, title: str | None = None) -> Figure:
    """Draw the KL weight w(t) over ``step``: one line per configuration, plus the free-bits floor.

    Parameters
    ----------
    curve
        KL weight over ``step`` (dimensionless, in (0, 1]), optionally with one
        more dimension (e.g. ``config``): one line per entry of it.  A Dataset
        gives its ``kl_weight`` variable (or its only variable).
    ax
        Axes to draw on; a new figure is made if None.
    title
        Axes title (default "KL weight schedule").

    Returns
    -------
    The figure.  If ``attrs["free_bits"]`` (nats) is set and > 0, a dashed
    horizontal line marks it on a right-hand axis in nats (the weight is
    dimensionless, so the floor does not share its scale).
    """
    curve = _as_curve(curve)
    if "step" not in curve.dims or curve.ndim > 2:
        raise ValueError(f"curve must be over 'step' and at most one other dimension, got dims {curve.dims}")
    others = [dim for dim in curve.dims if dim != "step"]
    lines = [(curve.isel({others[0]: i}), others[0]) for i in range(curve.sizes[others[0]])] if others else [
        (curve, None)]
    palette = line_colours(len(lines))
    with themed():
        if ax is None:
            fig = new_figure(6.4, 3.4)
            ax = fig.subplots()
        fig = ax.get_figure()
        for color, (line, dim) in zip(palette, lines):
            ax.plot(line["step"].values, line.values, color=color, lw=1.5,
                    label=_label(line, dim) if dim else None)
        ax.set(xlabel="step", ylabel="KL weight w(t)", ylim=(0.0, 1.05), title=title or "KL weight schedule")
        if len(lines) > 1:
            ax.legend(fontsize="small", loc="lower right")
        floor = float(curve.attrs.get("free_bits", 0.0) or 0.0)
        if floor > 0:
            floor_ax = ax.twinx()
            floor_ax.axhline(floor, color="0.3", ls="--", lw=1.0, label=f"free bits = {floor:g} nats")
            floor_ax.set(ylabel="KL floor (nats per dimension)", ylim=(0.0, 1.5 * floor))
            floor_ax.grid(False)
            floor_ax.legend(fontsize="small", loc="center right")
    return fig
