"""Shared figure set-up: seaborn's whitegrid look, and figures that need no GUI backend.

Figures are built as :class:`matplotlib.figure.Figure` objects directly (not
through ``pyplot``), so nothing depends on the global backend or on figure
managers; they render with Agg when saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure


@contextmanager
def themed() -> Iterator[None]:
    """seaborn's ``whitegrid`` / ``notebook`` look for the figures drawn inside the block."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9), mpl.rc_context(
        {"figure.dpi": 100, "savefig.dpi": 100, "axes.titleweight": "bold"}
    ):
        yield


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """A constrained-layout figure (call inside :func:`themed`)."""
    return Figure(figsize=(width, height), layout="constrained")


def run_labels(ds, hyperparameters: tuple[str, ...] = ("beta", "beta1", "beta2", "eta_dec")) -> list[str]:
    """One legend label per ``run``: its name plus the hyper-parameters that vary across runs."""
    names = [str(r) for r in ds["run"].values]
    varying = [
        h for h in hyperparameters
        if h in ds.coords and ds[h].dims == ("run",) and len(set(map(str, ds[h].values))) > 1
    ]
    if not varying:
        return names
    labels = []
    for i, name in enumerate(names):
        values = [f"{h}={float(ds[h].values[i]):g}" for h in varying if np.isfinite(float(ds[h].values[i]))]
        labels.append(f"{name} ({', '.join(values)})" if values else name)
    return labels


def runs_with(values, ds):
    """``values`` and ``ds`` restricted to the runs where ``values`` is not all NaN (mixed families)."""
    if "run" not in values.dims:
        return values, ds
    keep = values.notnull().any([d for d in values.dims if d != "run"]) if values.ndim > 1 else values.notnull()
    return values.sel(run=keep), ds.sel(run=keep)


def sites_of(ds, suffix: str) -> list[str]:
    """Latent site names ``s`` for which ``s{suffix}`` is a variable of ``ds`` (e.g. ``_kl_mean``)."""
    return [name[: -len(suffix)] for name in ds.data_vars if name.endswith(suffix)]


#: seaborn's colour-blind-safe qualitative palette (Wong-style), as hex strings
SAFE_COLOURS = sns.color_palette("colorblind").as_hex()


def line_colours(n: int) -> list:
    """``n`` distinguishable, colour-blind-safe colours (the qualitative palette, then viridis beyond 10)."""
    return list(SAFE_COLOURS[:n]) if n <= len(SAFE_COLOURS) else sns.color_palette("viridis", n)


def step_axis(ax, steps) -> None:
    """A logarithmic training-step axis that still shows step 0 (linear below 1)."""
    steps = np.asarray(steps)
    if steps.size and steps.max() > 1:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=max(0.0, float(steps.min())))


def integer_axis(axis) -> None:
    """Only integer tick labels on ``axis`` (an ``ax.xaxis`` / ``ax.yaxis``) of counts or indices."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
