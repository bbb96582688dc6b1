"""SPEC 6.5: collapse level per digit class, against how well x predicts y in that class.

Digit classes differ in how much the bottom-left quadrant x tells about the
other three y. One ReLU MLP CVAE is trained per class; its collapse level is set
beside the class's linear predictability R^2 = 1 - tr(E) / tr(E[y y^T]) (E the
residual second moment of SPEC 3) and beside Theorem 2's prediction for the
linear CVAE on the same class.

Outputs (``OUT/collapse_per_class/``): ``diagnostics.nc`` (one run per class),
``collapse_per_class.csv``, the collapse curves per class and a figure of
collapse level and R^2 per class.

    python analyses/collapse_per_class.py --quick --out results
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import xarray as xr

from ppl_vae import plots
from ppl_vae.diagnostics import combine, diagnose
from ppl_vae.models import CVAEConfig
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, collapse_table, diagnose_options, image_data,
                               run_script, series, spearman, training_options)
from ppl_vae.sweep import run_sweep
from ppl_vae.theory import linear_cvae
from ppl_vae.theory.moments import residual_moment, second_moment

NAME = "collapse_per_class"
CLAIM = ("Collapse differs between digit classes: classes whose input x is more correlated with the output y "
         "collapse more.")
ETA_DEC = 0.25
#: Rank correlation over the classes that counts as a clear association (about p = 0.07, one-sided, for 10 classes).
MIN_RANK_CORRELATION = 0.5


def predictability(x, y) -> float:
    """R^2 of the best linear prediction of y from x (no intercept, as the theory): 1 - tr(E) / tr(E[y y^T])."""
    x, y = x.double().numpy(), y.double().numpy()
    return float(1.0 - np.trace(residual_moment(x, y)) / np.trace(second_moment(y)))


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    classes = settings.pick([0, 1], list(range(10)), list(range(10)))
    latent = settings.pick(4, 8, 32)
    idatas, rows = [], []
    for digit in classes:
        train, test = image_data(settings, split="quadrant", classes=[digit])
        config = CVAEConfig(train.x.shape[1], train.y.shape[1], latent, arch="mlp",
                            hidden_dims=settings.pick((16,), (64,), (256,)), eta_dec=ETA_DEC)
        result = run_sweep(None, [config], train, **training_options(settings, kind="mlp"))
        idatas.append(diagnose(result.models[0], train, test_data=test, **diagnose_options(settings)))
        theory = linear_cvae(train.x, train.y, latent, eta_dec=ETA_DEC)
        rows.append({"digit": digit, "n_train": train.n, "r2_x_predicts_y": predictability(train.x, train.y),
                     "predicted_linear_collapsed": theory.attrs["n_collapsed"]})
    combined = combine(idatas, run_names=[f"digit {d}" for d in classes])
    out.inference_data("diagnostics", combined, "diagnose() of the CVAE of every class, along run")
    table = pd.concat([pd.DataFrame(rows), collapse_table(combined).drop(columns=["run"])], axis=1)
    out.table("collapse_per_class", table, "per class: linear predictability R^2 of y from x, Theorem 2's collapsed "
              "modes for a linear CVAE, the MLP CVAE's collapsed dimensions, collapse level and held-out NLL")
    out.figure("collapse_curves", plots.collapse_curves(combined.collapse, title="MLP CVAE per digit class"),
               "epsilon-collapse curves, one line per digit class")
    summary = xr.Dataset({"collapse_level": ("digit", table.z_collapse_level.values),
                          "r2_x_predicts_y": ("digit", table.r2_x_predicts_y.values)}, coords={"digit": classes})
    out.dataset("collapse_per_class", summary, "collapse level and R^2 per digit class")
    out.figure("collapse_vs_class", series(summary, "digit", ["collapse_level", "r2_x_predicts_y"],
                                           title="collapse level and x-y predictability per class", ylabel="fraction"),
               "collapse level (fraction of pairs with KL < 0.01) and R^2 of y given x, per digit class")

    rho = spearman(table.r2_x_predicts_y, table.z_collapse_level)
    rho_theory = spearman(table.predicted_linear_collapsed, table.z_n_collapsed)
    check = ClaimCheck(
        NAME, CLAIM, bool(np.isfinite(rho) and rho >= MIN_RANK_CORRELATION),
        f"Spearman rank correlation between a class's R^2 of y given x and its collapse level is at least "
        f"{MIN_RANK_CORRELATION} (a clear positive association over the classes)",
        {"spearman_r2_vs_collapse_level": rho, "spearman_linear_theory_vs_measured_collapsed": rho_theory,
         "collapse_level": dict(zip(map(str, classes), table.z_collapse_level.round(3))),
         "r2": dict(zip(map(str, classes), table.r2_x_predicts_y.round(3)))})
    out.claim(check)
    return check


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees} {result.numbers}")
    sys.exit(0)
