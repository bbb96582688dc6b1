"""SPEC 6.3: ReLU MLP CVAE on the quadrant split over beta and eta_dec: collapse, KL, AU and NLL.

beta in {0.1, 0.5, 1, 2} times eta_dec in {0.25, 0.5, 1, 2}: sixteen CVAEs
trained as one vectorised sweep, each diagnosed (per-dimension KL, active
units, epsilon-collapse curve, held-out importance-weighted NLL).

Outputs (``OUT/cvae_mlp_beta_eta/``): ``diagnostics.nc`` (all runs combined
along ``run``, beta and eta_dec as coordinates), ``collapse.csv`` (one row per
run), collapse curves and AU / NLL against beta (at eta_dec = 1) and against
eta_dec (at beta = 1), and a per-dimension KL heatmap.

    python analyses/cvae_mlp_beta_eta.py --quick --out results
"""

from __future__ import annotations

import sys

import numpy as np

from ppl_vae import plots
from ppl_vae.models import CVAEConfig
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, collapse_table, diagnose_sweep, image_data, is_monotone,
                               run_name, run_script, select_runs, training_options)
from ppl_vae.sweep import run_sweep

NAME = "cvae_mlp_beta_eta"
CLAIM = "Non-linear (ReLU MLP) CVAE: larger beta or larger eta_dec gives more posterior collapse."
#: A step against the claimed direction smaller than this (fraction of collapsed pairs) is noise, not a reversal.
TOLERANCE = 0.05


def violations(table, along: str, across: str) -> list[str]:
    """Rows of constant ``across`` where the collapse level decreases along ``along`` by more than TOLERANCE."""
    bad = []
    for value, rows in table.groupby(across):
        level = rows.sort_values(along).z_collapse_level.values
        if not is_monotone(level, tolerance=TOLERANCE):
            bad.append(f"{across}={value:g}: {np.round(level, 3).tolist()}")
    return bad


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    train, test = image_data(settings, split="quadrant")
    grid = settings.pick({"beta": [0.5, 2.0], "eta_dec": [0.5, 1.0]},
                         {"beta": [0.1, 0.5, 1.0, 2.0], "eta_dec": [0.25, 0.5, 1.0, 2.0]},
                         {"beta": [0.1, 0.5, 1.0, 2.0], "eta_dec": [0.25, 0.5, 1.0, 2.0]})
    base = CVAEConfig(train.x.shape[1], train.y.shape[1], settings.pick(4, 16, 64), arch="mlp",
                      hidden_dims=settings.pick((16,), (64,), (256,)))
    result = run_sweep(base, grid, train, **training_options(settings, kind="mlp"))
    combined = diagnose_sweep(result, train, test, settings, names=[run_name(c, grid) for c in result.configs])
    out.inference_data("diagnostics", combined, "diagnose() of every run, combined along run")
    table = collapse_table(combined)
    out.table("collapse", table, "per run: collapsed dimensions (mean KL < 0.01), active units, total KL (nats), "
              "collapse level (fraction of (point, dimension) pairs with KL < 0.01), held-out NLL (nats)")

    middle_eta = 1.0 if 1.0 in grid["eta_dec"] else grid["eta_dec"][-1]
    middle_beta = 1.0 if 1.0 in grid["beta"] else grid["beta"][-1]
    by_beta = select_runs(combined, eta_dec=middle_eta)
    by_eta = select_runs(combined, beta=middle_beta)
    out.figure("collapse_curves_beta", plots.collapse_curves(by_beta[0], title=f"MLP CVAE, eta_dec={middle_eta:g}"),
               f"epsilon-collapse curves for each beta at eta_dec={middle_eta:g}")
    out.figure("collapse_curves_eta_dec", plots.collapse_curves(by_eta[0], title=f"MLP CVAE, beta={middle_beta:g}"),
               f"epsilon-collapse curves for each eta_dec at beta={middle_beta:g}")
    out.figure("au_nll_beta", plots.metrics_vs_hyperparameter(*by_beta, "beta"),
               f"active units and held-out NLL against beta (eta_dec={middle_eta:g})")
    out.figure("au_nll_eta_dec", plots.metrics_vs_hyperparameter(*by_eta, "eta_dec"),
               f"active units and held-out NLL against eta_dec (beta={middle_beta:g})")
    out.figure("kl_per_dimension", plots.kl_per_dimension(combined.collapse),
               "log10 mean KL per latent dimension, every run")

    bad = violations(table, "beta", "eta_dec") + violations(table, "eta_dec", "beta")
    pivot = table.pivot(index="eta_dec", columns="beta", values="z_collapse_level").round(3)
    check = ClaimCheck(
        NAME, CLAIM, not bad,
        f"collapse level (fraction of pairs with KL < 0.01) non-decreasing in beta at every eta_dec and in eta_dec "
        f"at every beta, up to steps of {TOLERANCE}",
        {"collapse_level[eta_dec][beta]": {f"{k:g}": {f"{b:g}": v for b, v in row.items()}
                                           for k, row in pivot.iterrows()},
         "violations": bad})
    out.claim(check)
    return check


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees} {result.numbers}")
    sys.exit(0)
