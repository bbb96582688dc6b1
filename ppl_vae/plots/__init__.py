"""Figures drawn from the diagnostics' xarray objects only (seaborn style, headless).

Every function takes xarray objects (groups of :func:`ppl_vae.diagnostics.diagnose`,
possibly combined along ``run``) and returns a :class:`matplotlib.figure.Figure`
built without ``pyplot``; :func:`to_png` renders one with Agg.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure

from .collapse import collapse_curves, kl_per_dimension
from .history import collapse_onset, kl_history
from .learned import learned_vs_predicted
from .prior_posterior import pick_dimensions, prior_vs_posterior
from .images import completion_grid, reconstruction_grid, reconstruction_matrix
from .schedule import plot_kl_schedule
from .sweep import metrics_vs_hyperparameter
from .theory import singular_values
from .training import loss_curves


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


__all__ = [
    "collapse_curves",
    "collapse_onset",
    "completion_grid",
    "kl_history",
    "kl_per_dimension",
    "learned_vs_predicted",
    "loss_curves",
    "metrics_vs_hyperparameter",
    "pick_dimensions",
    "plot_kl_schedule",
    "prior_vs_posterior",
    "reconstruction_grid",
    "reconstruction_matrix",
    "singular_values",
    "to_png",
]
