"""SPEC 6.6: ReLU MLP MHVAE over beta1, beta2 and eta_dec: collapse of z1 and z2, reconstructions.

Two-level Markovian hierarchical VAE on full images (8x8 digits in quick mode,
MNIST in full mode), both encoder variances learnable. beta1 and beta2 in
{0.1, 0.5, 1, 2} are trained as one vectorised sweep, eta_dec as a second one
at beta1 = beta2 = 1; every model is diagnosed (per-dimension KL of z1 under
p(z1|z2) and of z2 under p(z2), active units, held-out NLL).

Outputs (``OUT/mhvae_beta1_beta2/``): ``diagnostics_beta.nc`` and
``diagnostics_eta_dec.nc`` (runs combined along ``run``), ``collapse_beta.csv``
and ``collapse_eta_dec.csv``, collapse curves, AU / NLL against beta2 and
eta_dec, and reconstruction grids at the smallest and largest beta2.

    python analyses/mhvae_beta1_beta2.py --quick --out results
"""

from __future__ import annotations

import sys

import numpy as np

from ppl_vae import plots
from ppl_vae.models import MHVAEConfig
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, collapse_table, diagnose_sweep, image_data, is_monotone,
                               run_name, run_script, select_runs, training_options)
from ppl_vae.sweep import run_sweep

NAME = "mhvae_beta1_beta2"
CLAIM = ("In the MHVAE, beta2 (the KL weight of the top latent) drives posterior collapse of both levels more than "
         "beta1 does, and a larger eta_dec collapses more.")
ETA_DEC = 0.5
#: A step against the claimed direction smaller than this (fraction of collapsed pairs) is noise, not a reversal.
TOLERANCE = 0.05


def pooled_level(table):
    """Collapse level of z1 and z2 together (mean of the two fractions of pairs with KL < 0.01)."""
    return (table.z1_collapse_level + table.z2_collapse_level) / 2


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    train, test = image_data(settings, split=None)
    values = settings.pick([0.1, 2.0], [0.1, 0.5, 1.0, 2.0], [0.1, 0.5, 1.0, 2.0])
    eta_values = settings.pick([0.25, 1.0], [0.25, 0.5, 1.0], [0.25, 0.5, 1.0, 2.0])
    latent = settings.pick(4, 16, 32)
    base = MHVAEConfig(train.x.shape[1], (latent, latent), arch="mlp", hidden_dims=settings.pick((16,), (64,), (256,)),
                       eta_dec=ETA_DEC, sigma1=None, sigma2=None)
    options = training_options(settings, kind="mhvae")

    grid = {"beta1": values, "beta2": values}
    result = run_sweep(base, grid, train, **options)
    combined = diagnose_sweep(result, train, test, settings, names=[run_name(c, grid) for c in result.configs])
    out.inference_data("diagnostics_beta", combined, "diagnose() of every (beta1, beta2) run, along run")
    table = collapse_table(combined)
    out.table("collapse_beta", table, f"per (beta1, beta2) at eta_dec={ETA_DEC}: collapsed dimensions, active units, "
              "total KL and collapse level of z1 and z2, held-out NLL")

    eta_grid = {"eta_dec": eta_values}
    eta_result = run_sweep(base, eta_grid, train, **options)
    eta_combined = diagnose_sweep(eta_result, train, test, settings,
                                  names=[run_name(c, eta_grid) for c in eta_result.configs])
    out.inference_data("diagnostics_eta_dec", eta_combined, "diagnose() of every eta_dec run (beta1 = beta2 = 1)")
    eta_table = collapse_table(eta_combined)
    out.table("collapse_eta_dec", eta_table, "per eta_dec at beta1 = beta2 = 1: collapse of z1 and z2, held-out NLL")

    middle = 1.0 if 1.0 in values else values[-1]
    by_beta2 = select_runs(combined, beta1=middle)
    out.figure("collapse_curves_beta2", plots.collapse_curves(by_beta2[0], title=f"MLP MHVAE, beta1={middle:g}"),
               f"epsilon-collapse curves of z1 and z2 for each beta2 (beta1={middle:g})")
    out.figure("au_nll_beta2", plots.metrics_vs_hyperparameter(*by_beta2, "beta2"),
               f"active units of z1 and z2 and held-out NLL against beta2 (beta1={middle:g})")
    by_beta1 = select_runs(combined, beta2=middle)
    out.figure("au_nll_beta1", plots.metrics_vs_hyperparameter(*by_beta1, "beta1"),
               f"active units of z1 and z2 and held-out NLL against beta1 (beta2={middle:g})")
    out.figure("collapse_curves_eta_dec", plots.collapse_curves(eta_combined.collapse, title="MLP MHVAE over eta_dec"),
               "epsilon-collapse curves of z1 and z2 for each eta_dec")
    out.figure("kl_per_dimension", plots.kl_per_dimension(combined.collapse), "log10 mean KL per dimension, every run")
    for beta2 in (values[0], values[-1]):
        index = int(np.flatnonzero(np.isclose(combined.collapse.beta1, middle)
                                   & np.isclose(combined.collapse.beta2, beta2))[0])
        fig = plots.reconstruction_grid(combined.observed_data.x.isel(run=index),
                                        combined.posterior_predictive.x_mean.isel(run=index), train.image_shape,
                                        title=f"reconstructions, beta1={middle:g}, beta2={beta2:g}")
        out.figure(f"reconstructions_beta2_{beta2:g}", fig, f"held-in images and reconstructions at beta2={beta2:g}")

    table["pooled"] = pooled_level(table)
    pivot = table.pivot(index="beta1", columns="beta2", values="pooled")
    effect_beta2 = float(pivot.iloc[:, -1].mean() - pivot.iloc[:, 0].mean())
    effect_beta1 = float(pivot.iloc[-1, :].mean() - pivot.iloc[0, :].mean())
    z2_monotone = all(is_monotone(rows.sort_values("beta2").z2_collapse_level, tolerance=TOLERANCE)
                      for _, rows in table.groupby("beta1"))
    eta_level = pooled_level(eta_table.sort_values("eta_dec")).round(3).tolist()
    agrees = z2_monotone and effect_beta2 > effect_beta1 and is_monotone(eta_level, tolerance=TOLERANCE)
    check = ClaimCheck(
        NAME, CLAIM, bool(agrees),
        f"z2 collapse level non-decreasing in beta2 at every beta1 (steps of {TOLERANCE} allowed); raising beta2 "
        "from its smallest to its largest value raises the pooled z1+z2 collapse level more than raising beta1 does; "
        "pooled level non-decreasing in eta_dec",
        {"effect_beta2": round(effect_beta2, 4), "effect_beta1": round(effect_beta1, 4),
         "z2_monotone_in_beta2": z2_monotone, "pooled_level_vs_eta_dec": dict(zip(map(str, eta_values), eta_level)),
         "pooled_level[beta1][beta2]": {f"{b1:g}": {f"{b2:g}": round(v, 3) for b2, v in row.items()}
                                        for b1, row in pivot.iterrows()}})
    out.claim(check)
    return check


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees} {result.numbers}")
    sys.exit(0)
