"""What a reader needs first: per-run headlines and one table of metrics."""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from functools import cache

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
    n_low_information: int = 0  # not collapsed, but under ``low_information_share`` of the level's KL
    low_information_share: float = 0.01

    def sentence(self) -> str:
        """'k of d latent dimensions collapsed[, j more carry under s% of the KL]; theory predicted m'."""
        text = f"{self.n_collapsed} of {self.n_dims} latent dimensions collapsed"
        if self.n_low_information:
            text += (f", {self.n_low_information} more carry under {100 * self.low_information_share:g}% "
                     "of the KL")
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
            n_low_information=int(collapse[f"{site}_n_low_information"]) if f"{site}_n_low_information" in collapse
            else 0,
            low_information_share=float(collapse.attrs.get("low_information_share", 0.01)),
        )
        for site in sites
    ]


def convergence_clause(idata: az.InferenceData) -> str | None:
    """'converged' / 'did not converge: counts not final' from ``attrs['converged']``; None when not judged."""
    value = idata.attrs.get("converged")
    if value is None:
        return None
    return "converged" if bool(int(value)) else "did not converge: counts not final"


def headline(idata: az.InferenceData, *, convergence: bool = True) -> str:
    """The run's headline; for several latent levels, one clause per level ('z1: ...; z2: ...').

    ``convergence``: end with the run's convergence flag when the diagnostics
    know it (the report page shows the flag beside the headline instead).
    """
    levels = level_summaries(idata)
    text = levels[0].sentence() if len(levels) == 1 else \
        " | ".join(f"{level.site}: {level.sentence()}" for level in levels)
    clause = convergence_clause(idata) if convergence else None
    return text if clause is None else f"{text} ({clause})"


@cache
def default_hyperparameters(family: str) -> dict[str, float]:
    """The model family's default hyper-parameter values (empty for a family the suite does not build)."""
    from ..models import CVAEConfig, MHVAEConfig, VAEConfig

    configs = {"vae": VAEConfig, "cvae": CVAEConfig, "mhvae": MHVAEConfig}
    if family not in configs:
        return {}
    return {f.name: f.default for f in fields(configs[family]) if f.default is not MISSING}


def json_attr(idata: az.InferenceData, name: str) -> dict:
    """A JSON-object attribute of the run as a dict ({} when absent, not JSON, or not an object)."""
    try:
        value = json.loads(str(idata.attrs.get(name, "{}") or "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def non_default_hyperparameters(idata: az.InferenceData) -> dict[str, float]:
    """The run's hyper-parameters that differ from its family's defaults (all of them for a user's model)."""
    defaults = default_hyperparameters(str(json_attr(idata, "model_config").get("family", "")))
    return {name: value for name, value in json_attr(idata, "hyperparameters").items()
            if name not in defaults or defaults[name] != value}


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def metrics_table(idatas: dict[str, az.InferenceData]) -> pd.DataFrame:
    """One row per run: model, non-default hyper-parameters, collapse counts and held-out fit.

    The importance-weighted log-likelihood is one column, its number of samples K another.
    """
    rows = []
    for name, idata in idatas.items():
        config = json_attr(idata, "model_config")
        levels = level_summaries(idata)
        many = len(levels) > 1
        row = {
            "run": name,
            "model": f"{config.get('family')} / {config.get('arch')}" if config.get("family") else "Pyro model",
            "hyper-parameters": ", ".join(f"{k}={_number(v)}" for k, v in non_default_hyperparameters(idata).items())
                                or "defaults",
            "collapsed (theory)": "; ".join(
                (f"{lv.site}: " if many else "") + f"{lv.n_collapsed}/{lv.n_dims} ({'-' if lv.predicted is None else lv.predicted})"
                for lv in levels
            ),
            "active units": "; ".join((f"{lv.site}: " if many else "") + str(lv.active_units) for lv in levels),
        }
        metrics = idata.metrics
        k = int(metrics.attrs.get("iw_samples", idata.attrs.get("iw_samples", 0)))
        row["IW log-lik"] = float(metrics.iw_log_likelihood)
        row["K"] = k
        row["ELBO"] = float(metrics.elbo)
        row["beta-ELBO"] = float(metrics.elbo_beta)
        row["recon MSE"] = float(metrics.reconstruction_mse)
        row["evaluated on"] = f"{idata.attrs.get('metrics_data', '?')} ({int(metrics.sizes['eval_obs'])} points)"
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")
