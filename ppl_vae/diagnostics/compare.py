"""Compare runs by their held-out predictive fit, with ArviZ's :func:`arviz.compare`.

``metrics.iw_log_likelihood_pointwise`` of :func:`~ppl_vae.diagnostics.diagnose`
holds, for each held-out point i, an importance-weighted estimate of log p(obs_i)
(the ``log_likelihood`` group holds the same values for the ``n_obs`` points
of ``observed_data``).
Held-out points need no leave-one-out correction: the expected log
predictive density is their sum, its standard error ``sqrt(n var_i)``, and the
difference between two runs is the sum of the pointwise differences, with
the standard error of those differences. :func:`heldout_elpd` packs one run
as ArviZ's ``ELPDData`` so that :func:`arviz.compare` computes exactly that
(its columns keep ArviZ's names ``elpd_loo`` / ``p_loo``; here ``p_loo`` is 0
because nothing is corrected for).

ArviZ's :func:`arviz.loo` and :func:`arviz.waic` need a log-likelihood per
posterior draw of the model's parameters. A VAE's networks are point
estimates and its latents are local (one per point): there are no such
draws, and the ``log_likelihood`` group holds one value per point (chain =
draw = 1), on which PSIS-LOO has nothing to smooth and WAIC's penalty is 0.
:func:`loo` and :func:`waic` here say so instead of returning such numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import arviz as az
import numpy as np
import pandas as pd
from arviz.stats.stats_utils import ELPDData


#: Why PSIS-LOO and WAIC do not apply to these files (raised by :func:`loo` and :func:`waic`).
NO_POSTERIOR_DRAWS = (
    "{name} needs the log-likelihood of each point under many posterior draws of the model's parameters; a VAE's "
    "networks are point estimates and its latents are per point, so diagnose() stores one importance-weighted "
    "log p(x_i) per point (chain = draw = 1) and {name} would have nothing to average (p_{short} = 0). These are "
    "held-out points, which need no leave-one-out correction: use ppl_vae.diagnostics.heldout_elpd(idata) (an "
    "ELPDData) or compare_heldout(runs), which call arviz.compare on it"
)


def loo(idata: az.InferenceData, *args, **kwargs):
    """Refuse :func:`arviz.loo` on diagnose output, saying why (module docstring); always raises ``ValueError``."""
    raise ValueError(NO_POSTERIOR_DRAWS.format(name="PSIS-LOO (arviz.loo)", short="loo"))


def waic(idata: az.InferenceData, *args, **kwargs):
    """Refuse :func:`arviz.waic` on diagnose output, saying why (module docstring); always raises ``ValueError``."""
    raise ValueError(NO_POSTERIOR_DRAWS.format(name="WAIC (arviz.waic)", short="waic"))


def _pointwise(idata: az.InferenceData, var_name: str | None) -> tuple[str, np.ndarray]:
    """The log_likelihood variable's name and the pointwise held-out values (every held-out point)."""
    if "log_likelihood" not in idata.groups():
        raise ValueError("the InferenceData has no log_likelihood group (diagnose() writes one)")
    group = idata.log_likelihood
    names = list(group.data_vars)
    name = var_name if var_name is not None else (names[0] if len(names) == 1 else None)
    if name not in names:
        raise ValueError(f"var_name must be one of {names}, got {var_name!r}")
    values = group[name]
    if values.sizes.get("chain", 1) != 1 or values.sizes.get("draw", 1) != 1:
        raise ValueError(f"log_likelihood.{name} must hold one value per point (chain = draw = 1), "
                         f"got sizes {dict(values.sizes)}")
    if "metrics" in idata.groups() and "iw_log_likelihood_pointwise" in idata.metrics:
        values = idata.metrics["iw_log_likelihood_pointwise"]  # every held-out point, not the n_obs shown
    values = np.asarray(values).reshape(-1).astype(np.float64)
    return name, values[~np.isnan(values)]  # points whose observed site is masked have no likelihood


def heldout_elpd(idata: az.InferenceData, var_name: str | None = None) -> ELPDData:
    """One run's held-out expected log predictive density as ArviZ's ``ELPDData``.

    Parameters
    ----------
    idata
        Output of :func:`~ppl_vae.diagnostics.diagnose` (or :func:`~ppl_vae.diagnostics.load`).
    var_name
        The ``log_likelihood`` variable (default: its only one).

    Returns
    -------
    ELPDData
        ``elpd_loo`` = sum of the n pointwise values (nats), ``se`` =
        ``sqrt(n var)``, ``p_loo`` = 0, ``loo_i`` the ``(n,)`` values,
        ``scale`` 'log'; accepted by :func:`arviz.compare`.
    """
    name, values = _pointwise(idata, var_name)
    n = values.size
    pointwise = az.convert_to_dataset({name: values[None, None]}).squeeze(("chain", "draw"), drop=True)[name]
    return ELPDData(
        data=[values.sum(), float(np.sqrt(n * values.var())), 0.0, 1, n, False, pointwise.rename("loo_i"),
              np.zeros(n), "log", 0.7],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "pareto_k", "scale",
               "good_k"],
    )


def compare_heldout(idatas: Mapping[str, az.InferenceData] | Sequence[az.InferenceData], var_name: str | None = None,
                    run_names: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`arviz.compare` of several runs on their held-out pointwise log-likelihoods.

    ``idatas`` takes the forms :func:`~ppl_vae.diagnostics.combine` takes: a
    list (names ``run_names``, default ``run0``, ``run1``, ...) or a dict
    name -> InferenceData.

    ``elpd_diff`` and ``dse`` are the difference to the best run and its
    standard error over the paired points, so every run must have been
    evaluated on the same held-out points (checked through
    ``log_likelihood.attrs['eval_data_sha256']``).

    Raises
    ------
    ValueError
        Fewer than two runs, or runs evaluated on different points.
    """
    from .io import named_runs

    idatas = named_runs(idatas, run_names)
    if len(idatas) < 2:
        raise ValueError(f"compare_heldout needs at least two runs, got {len(idatas)}")
    digests = {name: idata.log_likelihood.attrs.get("eval_data_sha256") for name, idata in idatas.items()
               if "log_likelihood" in idata.groups()}
    if len(set(digests.values())) > 1:
        raise ValueError("the runs were evaluated on different held-out points (eval_data_sha256 differs: "
                         f"{digests}); pointwise differences need the same points")
    return az.compare({name: heldout_elpd(idata, var_name) for name, idata in idatas.items()}, ic="loo")
