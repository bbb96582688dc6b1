"""Collapse diagnostics as ArviZ / xarray objects (SPEC section 5).

:func:`diagnose` turns a trained Pyro model (any model / guide pair, or one of
the suite's models) into an :class:`arviz.InferenceData` (layout in
:mod:`ppl_vae.diagnostics.core`); :func:`save` / :func:`load` round trip it
through netCDF; :func:`combine` stacks several runs along ``run`` with their
hyper-parameters as coordinates; :func:`compare_heldout` compares runs by
their held-out log-likelihood with :func:`arviz.compare` (:func:`loo` and
:func:`waic` say why ArviZ's PSIS-LOO / WAIC do not apply);
:func:`diagnose_group` diagnoses K configurations of one architecture in
batched passes (configuration k's result equals ``diagnose`` of its model).
The building blocks are exposed too.

Importing this package does not import ArviZ (a second or more, with matplotlib
and SciPy's statistics): the ArviZ-backed :mod:`~ppl_vae.diagnostics.compare`
functions are imported on first use (PEP 562), and an ``InferenceData`` is built
only when one is asked for (:mod:`~ppl_vae.diagnostics.plain`).
"""

import importlib
from typing import Any

from .collapse import (
    active_unit_statistic,
    active_units,
    collapse_dataset,
    collapsed_dimensions,
    epsilon_collapse_curve,
    epsilon_grid,
    kl_per_dimension,
    latent_statistics,
)
from .core import diagnose
from .draws import draw_groups, select_observations
from .group import diagnose_group
from .io import combine, load, save
from .likelihood import evaluation_metrics, iw_log_likelihood
from .monitor import CollapseMonitor
from .plain import PlainDiagnostics
from .target import PyroTarget, as_target
from .theory_link import predict, predicted_collapsed, theory_group


__all__ = [
    "active_unit_statistic",
    "active_units",
    "collapse_dataset",
    "collapsed_dimensions",
    "combine",
    "compare_heldout",
    "diagnose",
    "diagnose_group",
    "draw_groups",
    "epsilon_collapse_curve",
    "epsilon_grid",
    "evaluation_metrics",
    "heldout_elpd",
    "iw_log_likelihood",
    "kl_per_dimension",
    "latent_statistics",
    "load",
    "loo",
    "PlainDiagnostics",
    "PyroTarget",
    "as_target",
    "predict",
    "predicted_collapsed",
    "save",
    "select_observations",
    "theory_group",
    "waic",
]

#: Names imported on first use, with the module defining them (they import ArviZ).
_LAZY = {"compare_heldout": "compare", "heldout_elpd": "compare", "loo": "compare", "waic": "compare"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
