"""Theory against training: singular values mode by mode."""

from __future__ import annotations

import xarray as xr
from matplotlib.figure import Figure

from ._style import SAFE_COLOURS, integer_axis, new_figure, themed


def predicted_singular_values(theory: xr.Dataset) -> list[str]:
    """Names of the predicted singular-value variables (``decoder_sv``, ``z1_encoder_sv``, ...)."""
    return [
        name for name in theory.data_vars
        if name.endswith("_sv") and not name.startswith("learned_")
    ]


def singular_values(theory: xr.Dataset, *, title: str | None = None) -> Figure:
    """Predicted and (when present) learned singular values against the mode index.

    Parameters
    ----------
    theory
        The ``theory`` group: ``<name>_sv`` over ``mode`` and, for linear
        models, ``learned_<name>_sv``. Its ``attrs['prediction']`` (closed
        form, or linear-model prediction) is shown in the title.
    """
    names = predicted_singular_values(theory)
    if not names:
        raise ValueError("theory must hold *_sv variables over 'mode' (the 'theory' group of diagnose)")
    blue, orange = SAFE_COLOURS[:2]
    with themed():
        fig = new_figure(4.6 * len(names), 3.6)
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        for ax, name in zip(axes, names):
            mode = theory["mode"].values
            ax.plot(mode, theory[name].values, "o-", color=blue, label="theory", lw=2, ms=5)
            learned = theory.get(f"learned_{name}")
            if learned is not None:
                ax.plot(learned["mode"].values, learned.values, "s--", color=orange, label="learned", ms=5)
            ax.set(xlabel="mode (0 = largest theta)", ylabel=name.replace("_", " "), title=name)
            if mode.size <= 16:
                ax.set_xticks(mode)
            else:
                integer_axis(ax.xaxis)
            ax.legend(fontsize="small")
        prediction = str(theory.attrs.get("prediction", ""))
        heading = title or ""
        if prediction.startswith("linear-model"):
            heading = f"{heading}  (linear-model prediction; no learned values for a non-linear model)".strip()
        if heading:
            fig.suptitle(heading, fontsize="medium")
    return fig
