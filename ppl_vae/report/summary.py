"""What a reader needs first: per-run headlines and one table of metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass

import arviz as az
import pandas as pd

from ..diagnostics.theory_link import predicted_collapsed


@dataclass(frozen=True)
class LevelSummary:
    """Collapse of one latent level of one run."""

    site: str
    n_dims: int
    n_collapsed: int  # data-mean KL below the collapse epsilon
    active_units: int
    predicted: int | None  # collapsed modes predicted by the (linear) theory
    prediction: str  # 'closed form' or 'linear-model prediction' (or 'none')

    def sentence(self) -> str:
        """'k of d latent dimensions collapsed; theory predicted m'."""
        text = f"{self.n_collapsed} of {self.n_dims} latent dimensions collapsed"
        if self.predicted is None:
            return f"{text}; no theory prediction"
        qualifier = "" if self.prediction.startswith("closed") else " (linear-model prediction)"
        return f"{text}; theory predicted {self.predicted}{qualifier}"


def level_summaries(idata: az.InferenceData) -> list[LevelSummary]:
    """One :class:`LevelSummary` per latent site of a diagnosed run."""
    collapse = idata.collapse
    theory = idata.get("theory")
    prediction = "none" if theory is None else str(theory.attrs.get("prediction", ""))
    sites = str(collapse.attrs.get("latent_sites", idata.attrs.get("latent_sites", "z"))).split()
    return [
        LevelSummary(
            site=site,
            n_dims=int(collapse.sizes[f"{site}_dim"]),
            n_collapsed=int(collapse[f"{site}_n_collapsed"]),
            active_units=int(collapse[f"{site}_active_units"]),
            predicted=None if theory is None else predicted_collapsed(theory, site),
            prediction=prediction,
        )
        for site in sites
    ]


def headline(idata: az.InferenceData) -> str:
    """The run's headline; for several latent levels, one clause per level ('z1: ...; z2: ...')."""
    levels = level_summaries(idata)
    if len(levels) == 1:
        return levels[0].sentence()
    return " | ".join(f"{level.site}: {level.sentence()}" for level in levels)


def metrics_table(idatas: dict[str, az.InferenceData]) -> pd.DataFrame:
    """One row per run: model, hyper-parameters, collapse counts and held-out fit."""
    rows = []
    for name, idata in idatas.items():
        config = json.loads(idata.attrs["model_config"])
        hyperparameters = json.loads(idata.attrs.get("hyperparameters", "{}"))
        levels = level_summaries(idata)
        many = len(levels) > 1
        row = {
            "run": name,
            "model": f"{config.get('family')} / {config.get('arch')}",
            "hyper-parameters": ", ".join(f"{k}={v:g}" for k, v in hyperparameters.items()),
            "collapsed (theory)": "; ".join(
                (f"{lv.site}: " if many else "") + f"{lv.n_collapsed}/{lv.n_dims} ({'-' if lv.predicted is None else lv.predicted})"
                for lv in levels
            ),
            "active units": "; ".join((f"{lv.site}: " if many else "") + str(lv.active_units) for lv in levels),
        }
        metrics = idata.metrics
        k = int(metrics.attrs.get("iw_samples", idata.attrs.get("iw_samples", 0)))
        row[f"IW log-lik (K={k})"] = float(metrics.iw_log_likelihood)
        row["ELBO"] = float(metrics.elbo)
        row["beta-ELBO"] = float(metrics.elbo_beta)
        row["recon MSE"] = float(metrics.reconstruction_mse)
        row["evaluated on"] = f"{idata.attrs.get('metrics_data', '?')} ({int(metrics.sizes['eval_obs'])} points)"
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")
