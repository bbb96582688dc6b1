"""Compare runs by their held-out predictive fit, with ArviZ's :func:`arviz.compare`.

The ``log_likelihood`` group of :func:`~ppl_vae.diagnostics.diagnose` holds,
for each held-out point i, an importance-weighted estimate of log p(obs_i).
Held-out points need no leave-one-out correction: the expected log
predictive density is their sum, its standard error ``sqrt(n var_i)``, and the
difference between two runs is the sum of the pointwise differences, with
the standard error of those differences. :func:`heldout_elpd` packs one run
as ArviZ's ``ELPDData`` so that :func:`arviz.compare` computes exactly that
(its columns keep ArviZ's names ``elpd_loo`` / ``p_loo``; here ``p_loo`` is 0
because nothing is corrected for).
"""

from __future__ import annotations

from collections.abc import Mapping

import arviz as az
import numpy as np
import pandas as pd
from arviz.stats.stats_utils import ELPDData


def _pointwise(idata: az.InferenceData, var_name: str | None) -> tuple[str, np.ndarray]:
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
    return name, np.asarray(values).reshape(-1).astype(np.float64)


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


def compare_heldout(idatas: Mapping[str, az.InferenceData], var_name: str | None = None) -> pd.DataFrame:
    """:func:`arviz.compare` of several runs on their held-out pointwise log-likelihoods.

    ``elpd_diff`` and ``dse`` are the difference to the best run and its
    standard error over the paired points, so every run must have been
    evaluated on the same held-out points (checked through
    ``log_likelihood.attrs['eval_data_sha256']``).

    Raises
    ------
    ValueError
        Fewer than two runs, or runs evaluated on different points.
    """
    if len(idatas) < 2:
        raise ValueError(f"compare_heldout needs at least two runs, got {len(idatas)}")
    digests = {name: idata.log_likelihood.attrs.get("eval_data_sha256") for name, idata in idatas.items()
               if "log_likelihood" in idata.groups()}
    if len(set(digests.values())) > 1:
        raise ValueError("the runs were evaluated on different held-out points (eval_data_sha256 differs: "
                         f"{digests}); pointwise differences need the same points")
    return az.compare({name: heldout_elpd(idata, var_name) for name, idata in idatas.items()}, ic="loo")
