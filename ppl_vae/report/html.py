"""One self-contained HTML page from diagnosed runs (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping

import arviz as az
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ppl_vae.inference.schedules import config_schedule

from .. import __version__, plots
from ..diagnostics import combine
from .summary import headline, metrics_table

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
.headline { font-size: 1.15em; background: #f3f6fb; border-left: 4px solid #4c72b0; padding: 0.5em 0.8em; margin: 0.4em 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; } th { background: #f0f0f0; }
.figs { display: flex; flex-wrap: wrap; gap: 0.5em 1.5em; align-items: flex-start; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def figure_html(fig: Figure, caption: str) -> str:
    """``<figure>`` holding ``fig`` as an inline PNG (the figure is closed afterwards)."""
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    fig.clear()
    alt = html.escape(caption, quote=True)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _try_figure(make: Callable[[], Figure], caption: str) -> str:
    """A figure, or a short note saying why it could not be drawn (the page is still useful)."""
    try:
        return figure_html(make(), caption)
    except (ValueError, KeyError) as err:
        return f'<p class="meta">({html.escape(caption)}: not drawn, {html.escape(str(err))})</p>'


def _varying_hyperparameters(combined: az.InferenceData) -> list[str]:
    names = [name for name in ("beta", "beta1", "beta2", "eta_dec", "eta_enc") if name in combined.collapse.coords]
    return [
        name for name in names
        if np.unique(combined.collapse[name].values[np.isfinite(combined.collapse[name].values)]).size > 1
    ]


def run_section(name: str, idata: az.InferenceData, loss: xr.DataArray | None) -> str:
    """Headline, configuration and figures of one run."""
    config = json.loads(idata.attrs["model_config"])
    spec = json.loads(idata.attrs.get("data_spec", "{}"))
    parts = [
        f'<section class="run" id="run-{html.escape(name, quote=True)}">',
        f"<h2>{html.escape(name)}</h2>",
        f'<p class="headline" data-run="{html.escape(name, quote=True)}">{html.escape(headline(idata))}</p>',
        f'<p class="meta">{html.escape(config.get("family", "").upper())}, arch <code>{html.escape(str(config.get("arch")))}</code>, '
        f"hyper-parameters <code>{html.escape(idata.attrs.get('hyperparameters', ''))}</code>, "
        f"data <code>{html.escape(json.dumps(spec, sort_keys=True))}</code>, seed {idata.attrs.get('seed')}.</p>",
        '<div class="figs">',
        _try_figure(lambda: plots.collapse_curves(idata.collapse), "epsilon-collapse curve"),
        _try_figure(lambda: plots.kl_per_dimension(idata.collapse), "mean KL(q || p) per latent dimension, without beta"),
    ]
    if "theory" in idata.groups():
        parts.append(_try_figure(lambda: plots.singular_values(idata.theory),
                                 f"singular values per mode: {idata.theory.attrs.get('prediction', 'theory')}"))
    parts.extend(_image_figures(idata))
    if loss is not None:
        parts.append(_try_figure(lambda: plots.loss_curves({name: loss}), "training loss"))
    schedule = config_schedule(config, int(loss.sizes["step"]) if loss is not None else 1000)
    if schedule is not None:
        parts.append(_try_figure(lambda: plots.plot_kl_schedule(schedule),
                                 f"KL weight over training per latent level; free-bits floor "
                                 f"{schedule.attrs['free_bits']:g} nats per dimension"))
    parts.append("</div></section>")
    return "\n".join(parts)


def _image_figures(idata: az.InferenceData) -> list[str]:
    if "image_shape" not in idata.attrs:
        return []
    shape = tuple(int(s) for s in np.atleast_1d(idata.attrs["image_shape"]))
    split = idata.attrs.get("split")
    observed = idata.attrs.get("observed_variable", idata.attrs.get("observed_site", "x"))
    mean = f"{observed}_mean"
    if split and "constant_data" in idata.groups() and mean in idata.prior_predictive:
        return [_try_figure(
            lambda: plots.completion_grid(next(iter(idata.constant_data.data_vars.values())),
                                          idata.observed_data[observed],
                                          idata.prior_predictive[mean], shape, split),
            "conditional completions: data, the given part, and outputs decoded from z ~ p(z | x)",
        )]
    if not split and "constant_data" not in idata.groups() and mean in idata.posterior_predictive:
        return [_try_figure(
            lambda: plots.reconstruction_grid(idata.observed_data[observed], idata.posterior_predictive[mean], shape),
            "reconstructions: data and decoder means for draws z ~ q(z | x)",
        )]
    return []


def comparison_section(idatas: Mapping[str, az.InferenceData], losses: Mapping[str, xr.DataArray]) -> str:
    """Figures across runs (only for two or more runs)."""
    combined = combine(list(idatas.values()), run_names=list(idatas))
    parts = ['<section id="comparison"><h2>Across runs</h2><div class="figs">',
             _try_figure(lambda: plots.collapse_curves(combined.collapse), "epsilon-collapse curves, one line per run"),
             _try_figure(lambda: plots.kl_per_dimension(combined.collapse), "mean KL per dimension across runs")]
    for name in _varying_hyperparameters(combined):
        parts.append(_try_figure(lambda name=name: plots.metrics_vs_hyperparameter(combined.collapse, combined.metrics, name),
                                 f"active units and held-out NLL against {name}"))
    if losses:
        parts.append(_try_figure(lambda: plots.loss_curves(dict(losses)), "training loss per run"))
    parts.append("</div></section>")
    return "\n".join(parts)


def build_html(idatas: Mapping[str, az.InferenceData], losses: Mapping[str, xr.DataArray] | None = None, *,
               title: str = "Posterior collapse report") -> str:
    """The report page for diagnosed runs.

    Parameters
    ----------
    idatas
        Run name -> output of :func:`ppl_vae.diagnostics.diagnose`.
    losses
        Run name -> training loss over ``step`` (``loss_history.nc``), optional.
    """
    if not idatas:
        raise ValueError("idatas must hold at least one diagnosed run")
    losses = dict(losses or {})
    table = metrics_table(dict(idatas)).reset_index().to_html(
        float_format=lambda v: f"{v:.4g}", na_rep="-", border=0, classes="metrics", table_id="metrics", index=False
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">ppl_vae {html.escape(__version__)}. A latent dimension counts as collapsed when its '
        "data-mean KL(q || p) is below 0.01 nats; the theory column is the closed-form optimum of the linear "
        "model with the same data and hyper-parameters (SPEC section 4).</p>",
        '<div id="headlines">',
        *(f'<p class="headline"><b>{html.escape(name)}</b>: {html.escape(headline(idata))}</p>'
          for name, idata in idatas.items()),
        "</div>",
        "<h2>Metrics</h2>",
        table,
    ]
    if len(idatas) > 1:
        body.append(comparison_section(idatas, losses))
    body.extend(run_section(name, idata, losses.get(name)) for name, idata in idatas.items())
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
