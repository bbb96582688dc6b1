"""One self-contained HTML page from diagnosed runs (figures embedded as base64 PNG).

This module gathers plain values and figures per run; :mod:`ppl_vae.report.page`
turns them into HTML through one autoescaping template (nothing here writes markup).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path

import arviz as az
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ppl_vae.inference.schedules import config_schedule

from .. import __version__, plots
from ..diagnostics import combine
from .advice import format_limit, predicted_kl, rows_to_show, what_to_change
from .page import render
from .summary import headline, json_attr, metrics_table, non_default_hyperparameters

FAMILY_TITLES = {
    "vae": "VAE (one latent level)",
    "cvae": "Conditional VAE (CVAE)",
    "mhvae": "Two-level hierarchical VAE (MHVAE)",
    "pyro": "Your own Pyro models",
}

#: one sentence per word the page uses
WORDS = (
    ("theta", "the data's spectrum: theta_i measures how much of the data varies along mode i (a standard deviation "
              "of x for the VAE and MHVAE; for the CVAE the variance of the part of y that x cannot predict "
              "linearly)."),
    ("mode", "one direction of that spectrum, numbered from the largest theta (mode 0); the linear theory says the "
             "latent dimension serving mode i collapses when theta_i falls below a threshold set by beta and eta_dec."),
    ("beta", "the weight of the KL term in the loss (beta1, beta2: the weights of the MHVAE's two levels)."),
    ("eta_enc", "the prior's standard deviation, p(z) = N(0, eta_enc^2 I)."),
    ("eta_dec", "the decoder's noise standard deviation, p(x | z) = N(decoder(z), eta_dec^2 I), in the data's units: "
                "the larger it is against the data's spread, the less a latent dimension is worth its KL."),
)


def science_href() -> str | None:
    """A link to docs/science.md when the package runs from a checkout that has it (None otherwise)."""
    path = Path(__file__).resolve().parents[2] / "docs" / "science.md"
    return path.as_uri() if path.is_file() else None


def figure_entry(make: Callable[[], Figure], caption: str) -> dict:
    """``{'caption', 'png'}`` (base64 PNG), or ``{'caption', 'error'}`` saying why it could not be drawn."""
    try:
        fig = make()
    except (ValueError, KeyError) as err:
        return {"caption": caption, "png": None, "error": str(err)}
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    fig.clear()
    return {"caption": caption, "png": data, "error": None}


def family_of(idata: az.InferenceData) -> str:
    """'vae', 'cvae', 'mhvae', or 'pyro' for a model the suite did not build."""
    family = json_attr(idata, "model_config").get("family")
    return family if family in ("vae", "cvae", "mhvae") else "pyro"


def _sites(idata: az.InferenceData) -> list[str]:
    return str(idata.collapse.attrs.get("latent_sites", idata.attrs.get("latent_sites", "z"))).split()


def _varying_hyperparameters(combined: az.InferenceData) -> list[str]:
    names = [name for name in ("beta", "beta1", "beta2", "eta_dec", "eta_enc") if name in combined.collapse.coords]
    return [
        name for name in names
        if np.unique(combined.collapse[name].values[np.isfinite(combined.collapse[name].values)]).size > 1
    ]


def change_tables(idata: az.InferenceData) -> tuple[list[dict], str]:
    """The 'what to change' tables as rows of strings, and a label (or the reason there are none)."""
    if "theory" not in idata.groups():
        return [], ("No linear-model prediction for this run (" + str(idata.attrs.get("theory_unavailable", "none"))
                    + "), so no thresholds.")
    theory = idata.theory
    try:
        tables = what_to_change(theory, _sites(idata))
    except (ValueError, KeyError) as err:
        return [], f"No thresholds: {err}"
    out = []
    for change in tables:
        heads = [name for _, name, _ in change.columns]
        n_max = int(change.table.n_active.values.max())
        rows = []
        for k in rows_to_show(n_max, change.predicted_active):
            cells = [format_limit(float(change.table[var].sel(n_active=k)), relation) for var, _, relation in
                     change.columns]
            current = k == change.predicted_active
            point = ", ".join(f"{name}={change.current[name]:g}" for _, name, _ in change.columns)
            rows.append({"k": k, "cells": cells, "current": current,
                         "note": f"this run ({point}): theory predicts {k} active" if current else ""})
        if change.predicted_active == 0:
            rows.insert(0, {"k": 0, "cells": ["-"] * len(heads), "current": True,
                            "note": "this run: theory predicts every dimension collapsed"})
        out.append({"site": change.site, "heads": heads, "rows": rows})
    prediction = str(theory.attrs.get("prediction", ""))
    label = ("Each value holds the others at this run's values. From the run's own closed form."
             if prediction.startswith("closed") else
             "Each value holds the others at this run's values. This run is not linear: this is the LINEAR model's "
             "answer for the same data and hyper-parameters, a guide to the direction and size of the change.")
    return out, label


def run_figures(name: str, idata: az.InferenceData, loss: xr.DataArray | None, history: xr.Dataset | None) -> list:
    """The run's figures, most telling first."""
    collapse = idata.collapse
    epsilon = float(collapse.attrs.get("collapse_epsilon", 0.01))
    figures = []
    if history is not None:
        figures.append(figure_entry(lambda: plots.kl_history(history),
                                    "since when: mean KL per dimension over training (grey dashed: below "
                                    f"{epsilon:g} nats at the end, collapsed)"))
    if "theory" in idata.groups():
        predicted = predicted_kl(idata.theory, _sites(idata))
        figures.append(figure_entry(lambda: plots.learned_vs_predicted(collapse, predicted),
                                    "learned against predicted: per-dimension KL sorted, beside the "
                                    + ("closed form's per-mode KL" if predicted.attrs["prediction"].startswith("closed")
                                       else "linear model's prediction")))
    else:
        figures.append(figure_entry(lambda: plots.learned_vs_predicted(collapse, xr.Dataset()),
                                    "per-dimension KL sorted (no theory prediction for this run)"))
    sites = _sites(idata)
    if "posterior" in idata.groups() and "prior" in idata.groups():
        for site in sites:
            if site in idata.posterior and site in idata.prior and f"{site}_kl_mean" in collapse:
                figures.append(figure_entry(
                    lambda site=site: plots.prior_vs_posterior(idata.posterior[site], idata.prior[site],
                                                               collapse[f"{site}_kl_mean"], epsilon=epsilon),
                    f"prior against aggregate posterior, {site}: a collapsed dimension's posterior sits on the prior"))
    figures.append(figure_entry(lambda: plots.kl_per_dimension(collapse),
                                "mean KL(q || p) per latent dimension, without beta"))
    figures.append(figure_entry(lambda: plots.collapse_curves(collapse), "epsilon-collapse curve"))
    if "theory" in idata.groups():
        figures.append(figure_entry(lambda: plots.singular_values(idata.theory),
                                    f"singular values per mode: {idata.theory.attrs.get('prediction', 'theory')}"))
    figures.extend(_image_figures(idata))
    if loss is not None:
        figures.append(figure_entry(lambda: plots.loss_curves({"": loss}), "training loss (log step axis)"))
    config = _config(idata)
    schedule = config_schedule(config, int(loss.sizes["step"]) if loss is not None else 1000) if config else None
    if schedule is not None:
        figures.append(figure_entry(lambda: plots.plot_kl_schedule(schedule),
                                    f"KL weight over training per latent level; free-bits floor "
                                    f"{schedule.attrs['free_bits']:g} nats per dimension"))
    return figures


def _config(idata: az.InferenceData) -> dict:
    config = json_attr(idata, "model_config")
    return config if config.get("family") in ("vae", "cvae", "mhvae") else {}


def _image_figures(idata: az.InferenceData) -> list[dict]:
    if "image_shape" not in idata.attrs:
        return []
    try:
        shape = tuple(int(s) for s in np.atleast_1d(idata.attrs["image_shape"]))
    except (TypeError, ValueError):
        return []
    split = idata.attrs.get("split")
    observed = str(idata.attrs.get("observed_variable", idata.attrs.get("observed_site", "x")))
    mean = f"{observed}_mean"
    if split and "constant_data" in idata.groups() and mean in idata.prior_predictive:
        return [figure_entry(
            lambda: plots.completion_grid(next(iter(idata.constant_data.data_vars.values())),
                                          idata.observed_data[observed],
                                          idata.prior_predictive[mean], shape, split),
            "conditional completions: data, the given part, and outputs decoded from z ~ p(z | x)",
        )]
    if not split and "constant_data" not in idata.groups() and "posterior_predictive" in idata.groups() \
            and mean in idata.posterior_predictive:
        return [figure_entry(
            lambda: plots.reconstruction_grid(idata.observed_data[observed], idata.posterior_predictive[mean], shape),
            "reconstructions: data and decoder means for draws z ~ q(z | x)",
        )]
    return []


def comparison_figures(idatas: Mapping[str, az.InferenceData], losses: Mapping[str, xr.DataArray]) -> list[dict]:
    """Figures across the runs of one family (two or more runs; one likelihood, so NLLs share an axis)."""
    try:
        combined = combine(list(idatas.values()), run_names=list(idatas))
    except (ValueError, KeyError, TypeError) as err:  # runs whose files do not stack (e.g. a non-numeric attr)
        return [{"caption": "figures across these runs", "png": None, "error": str(err)}]
    figures = [figure_entry(lambda: plots.collapse_curves(combined.collapse),
                            "epsilon-collapse curves, one line per run"),
               figure_entry(lambda: plots.kl_per_dimension(combined.collapse),
                            "mean KL per dimension across runs (one colour scale for every panel)")]
    # An NLL axis must not mix likelihoods (a Bernoulli NLL beside Gaussian ones): the suite's families are all
    # Gaussian; users' Pyro models share an axis only when their files name one and the same likelihood.
    likelihoods = {str(idata.attrs.get("likelihood", "gaussian" if family_of(idata) != "pyro" else ""))
                   for idata in idatas.values()}
    if len(likelihoods) == 1 and "" not in likelihoods:
        for name in _varying_hyperparameters(combined):
            figures.append(figure_entry(
                lambda name=name: plots.metrics_vs_hyperparameter(combined.collapse, combined.metrics, name),
                f"active units and held-out NLL against {name}"))
    if losses:
        figures.append(figure_entry(lambda: plots.loss_curves(dict(losses)), "training loss per run (log step axis)"))
    return figures


def _table(idatas: Mapping[str, az.InferenceData]) -> dict:
    frame = metrics_table(dict(idatas)).reset_index()

    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if not np.isfinite(value) else f"{value:.4g}"
        return str(value)

    columns = [str(c) for c in frame.columns]
    rows = [{c: cell(v) for c, v in zip(columns, values)} for values in frame.itertuples(index=False)]
    text = {"run", "model", "hyper-parameters", "collapsed (theory)", "active units", "evaluated on"}
    return {"columns": columns, "rows": rows, "text_columns": text}


def _convergence(idata: az.InferenceData, given: bool | None) -> bool | None:
    if given is not None:
        return given
    value = idata.attrs.get("converged")
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _history(idata: az.InferenceData, given: xr.Dataset | None) -> xr.Dataset | None:
    if given is not None:
        return given
    return idata["kl_history"] if "kl_history" in idata.groups() else None


def build_html(idatas: Mapping[str, az.InferenceData], losses: Mapping[str, xr.DataArray] | None = None, *,
               histories: Mapping[str, xr.Dataset] | None = None, converged: Mapping[str, bool | None] | None = None,
               title: str = "Posterior collapse report") -> str:
    """The report page for diagnosed runs: one section per model family, one sub-section per run.

    Parameters
    ----------
    idatas
        Run name -> output of :func:`ppl_vae.diagnostics.diagnose`.
    losses
        Run name -> training loss over ``step`` (``loss_history.nc``), optional.
    histories
        Run name -> the ``kl_history`` Dataset (``<site>_kl`` over ``(step, <site>_dim)``);
        a run without one falls back to a ``kl_history`` group of its InferenceData.
    converged
        Run name -> the convergence flag (``metrics.json``'s ``converged``); else ``attrs['converged']``.
    """
    if not idatas:
        raise ValueError("idatas must hold at least one diagnosed run")
    losses, histories, converged = dict(losses or {}), dict(histories or {}), dict(converged or {})
    runs, by_family = [], {}
    for index, (name, idata) in enumerate(idatas.items()):
        changes, change_text = change_tables(idata)
        config = _config(idata)
        run = {
            "name": name, "anchor": str(index), "headline": headline(idata, convergence=False),
            "converged": _convergence(idata, converged.get(name)),
            "model": (f"{config['family'].upper()}, arch {config.get('arch')}" if config else "Pyro model"),
            "hyperparameters": ", ".join(f"{k}={v}" for k, v in non_default_hyperparameters(idata).items())
                               or "all defaults",
            "data": str(idata.attrs.get("data_spec", "")), "seed": str(idata.attrs.get("seed", "")),
            "changes": changes, "change_label": change_text if changes else "", "change_note": change_text,
            "figures": run_figures(name, idata, losses.get(name), _history(idata, histories.get(name))),
        }
        runs.append(run)
        by_family.setdefault(family_of(idata), []).append((name, idata, run))
    families = []
    for key in [k for k in FAMILY_TITLES if k in by_family]:
        members = by_family[key]
        comparison = []
        if len(members) > 1:
            comparison = comparison_figures({n: i for n, i, _ in members},
                                            {n: losses[n] for n, _, _ in members if n in losses})
        families.append({"key": key, "title": FAMILY_TITLES[key], "runs": [r for _, _, r in members],
                         "comparison": comparison})
    epsilon = float(next(iter(idatas.values())).collapse.attrs.get("collapse_epsilon", 0.01))
    return render(title=title, version=__version__, epsilon=f"{epsilon:g}", science_href=science_href(),
                  words=WORDS, runs=runs, table=_table(idatas), families=families)
