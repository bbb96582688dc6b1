"""SPEC 6.7: VAE with learnable vs fixed encoder variance: complete collapse needs a learnable (or prior-sized)
variance.

With a learnable Sigma a mode below the threshold sqrt(beta) eta_dec collapses
completely (q = prior, KL = 0, Theorem 1). With Sigma fixed at s^2 the mean
collapses below sqrt(beta) c s (c = eta_dec / eta_enc), and q can equal the
prior only when s = eta_enc (SPEC 4.2). So three variances are trained on
full images: learnable; fixed s = eta_enc = 1, where complete collapse is
reachable and Theorem 1 predicts the same count; fixed s = 0.5 < eta_enc,
where every dimension keeps at least 0.32 nats of KL by construction, so
collapse there is judged on active units (collapse of the encoder mean), not
on the KL. A fixed isotropic variance leaves the latent basis free (the loss
is rotation invariant), so active units are counted in the principal basis
of Cov_x(E_q[z]), not along the axes. Linear VAEs are held to the closed forms; ReLU MLP VAEs (NLL, KL,
AU) are compared between learnable and s = 0.5.

Every configuration trains once per seed; the rule reads seed means.

Outputs (``OUT/vae_fixed_vs_learnable_variance/``): ``diagnostics.nc`` (every
run along ``run``), ``runs.csv`` (per architecture, variance, beta and seed,
with the closed forms' counts), ``summary.csv`` (seed means and standard
errors), active units and KL-collapsed dimensions against beta, and the MLP's
collapse curves at beta = 1.

    python analyses/vae_fixed_vs_learnable_variance.py --quick --out results
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys

import numpy as np
import pandas as pd

from ppl_vae import plots
from ppl_vae.diagnostics.collapse import AU_THRESHOLD
from ppl_vae.models import VAEConfig
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, RunCollector, Verdict, close_check, image_batch_threads,
                               image_data, order_check, run_replicates, run_script, seed_summary, seed_trends,
                               training_options)
from ppl_vae.reproduce.plan import RunPlan
from ppl_vae.theory import linear_vae

NAME = "vae_fixed_vs_learnable_variance"
CLAIM = ("A learnable encoder variance lets posterior collapse be complete (q = prior); a fixed variance below the "
         "prior's gives partial collapse only, with more active units.")
ETA_ENC, ETA_DEC = 1.0, 0.5
#: Encoder std per variant: learned, fixed at the prior's std, fixed below it.
VARIANCES = {"learnable": None, "fixed_prior_std": ETA_ENC, "fixed_0.5": 0.5}
#: Variants the MLP is trained with (SPEC 6.7: ReLU VAE with sigma = 0.5 against learnable).
MLP_VARIANCES = ("learnable", "fixed_0.5")
#: Architectures, in training order.
ARCHS = ("linear", "mlp")


def predicted_counts(x, latent: int, beta: float, std: float | None) -> dict[str, float]:
    """Closed-form active units and completely collapsed dimensions of the linear VAE (SPEC 4.1 / 4.2).

    The encoder means' covariance over the data has eigenvalues lambda_i^2 (the encoder singular values), so
    the closed form's active-unit count is #{lambda_i^2 > 0.01}: a mode just above its collapse threshold
    is active but may fall below the AU cut.
    """
    theory = linear_vae(x, latent, beta=beta, eta_enc=ETA_ENC, eta_dec=ETA_DEC, encoder_std=std)
    return {"predicted_active_units": float((theory.encoder_sv.values ** 2 > AU_THRESHOLD).sum()),
            "predicted_complete_collapse": float(theory.attrs["n_complete_collapse"])}


def judge(summary: pd.DataFrame) -> Verdict:
    """The rule, a pure function of the seed summary (counterfactual tests in ``tests/analyses``).

    Active units are counted in the principal basis (eigenvalues of
    Cov_x(E_q[z]) above 0.01): a fixed isotropic variance leaves the latent
    basis free, so the axis count would read every dimension as active.

    Linear VAE, every variance and beta: active units within max(1, 2 SE) of
    the closed form's active means; learnable variance: as many dimensions
    with KL < 0.01 as the closed form collapses completely (with s = eta_enc
    the collapsed subspace is q = prior by construction, so its count is the
    active-unit check). MLP VAE: at no beta does s = 0.5 have fewer active
    units than the learnable variance by more than max(1, 2 SE), and at the
    largest beta it has more by more than that.
    """
    checks = []
    linear = summary[summary.arch == "linear"]
    for row in linear.itertuples():
        where = f"linear {row.variance}, beta {row.beta:g}"
        checks.append(close_check(f"{where}: active units (principal)", row.z_principal_au_mean,
                                  row.z_principal_au_se, row.predicted_active_units, floor=1.0, source="closed form"))
        if row.variance == "learnable":
            checks.append(close_check(f"{where}: dimensions with KL < 0.01", row.z_n_collapsed_mean,
                                      row.z_n_collapsed_se, row.predicted_complete_collapse, floor=1.0,
                                      source="complete collapse, Theorem 1"))
    mlp = summary[summary.arch == "mlp"].set_index(["variance", "beta"])
    betas = sorted({beta for _, beta in mlp.index})
    for beta in betas:
        fixed, learned = mlp.loc[("fixed_0.5", beta)], mlp.loc[("learnable", beta)]
        checks.append(order_check(f"mlp, beta {beta:g}: active units (principal), fixed 0.5 minus learnable",
                                  (fixed.z_principal_au_mean, fixed.z_principal_au_se),
                                  (learned.z_principal_au_mean, learned.z_principal_au_se), floor=1.0,
                                  strict=beta == betas[-1]))
    rule = ("active units counted in the principal basis; linear: at every beta and variance, active units within "
            "max(1, 2 SE) of the closed form's active means, and for the learnable variance the dimensions with "
            "KL < 0.01 within max(1, 2 SE) of Theorem 1's complete collapse; MLP: active units with s = 0.5 never "
            "below the learnable variance's by more than max(1, 2 SE), and above it by more than that at the "
            "largest beta")
    return Verdict(rule, tuple(checks), int(summary.n_seeds.min()))


def beta_grid(settings) -> list[float]:
    """The betas each architecture and variance is trained at."""
    return settings.pick([0.5, 2.0], [0.5, 1.0, 2.0, 4.0], [0.5, 1.0, 2.0, 4.0])


def variants(arch: str) -> dict[str, float | None]:
    """Encoder-variance variants of an architecture: name -> fixed std (None: learnable)."""
    return VARIANCES if arch == "linear" else {k: VARIANCES[k] for k in MLP_VARIANCES}


def training_overrides(settings, arch: str) -> dict:
    """The linear model's own schedule (its kind's defaults for the MLP)."""
    if arch != "linear":
        return {}
    # the linear model is held to the closed form, so it trains to convergence: full batch on the
    # digits; minibatches on MNIST (full batch would hold all 60,000 images per step)
    return {"steps": settings.steps(40, 2500, 20000), "lr": 0.05, "final_lr_fraction": 3e-3,
            "batch_size": settings.pick(None, None, 512)}


def plan(settings) -> list[RunPlan]:
    """What :func:`run` trains (``ppl-vae reproduce`` prints it before a full job): one vectorised run over beta
    per architecture and variance."""
    return [RunPlan(f"{arch} VAE, encoder variance {variance}, beta line", len(beta_grid(settings)),
                    settings.n_seeds, (training_options(settings, kind=arch) | training_overrides(settings, arch))
                    ["steps"])
            for arch in ARCHS for variance in variants(arch)]


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    train, test = image_data(settings, split=None)
    betas = beta_grid(settings)
    latent = settings.pick(4, 16, 64)
    hidden = settings.pick((16,), (64,), (256,))
    runs = RunCollector(settings)
    x = train.x.double()
    for arch in ARCHS:
        for variance, std in variants(arch).items():
            base = VAEConfig(train.x.shape[1], latent, arch=arch, hidden_dims=hidden, eta_enc=ETA_ENC,
                             eta_dec=ETA_DEC, encoder_std=std)
            overrides = training_overrides(settings, arch)
            with image_batch_threads(settings) if arch == "linear" else contextlib.nullcontext():
                result = run_replicates([dataclasses.replace(base, beta=b) for b in betas], train, settings,
                                        kind=arch, **overrides)
            runs.add(result, train, test, [f"{arch},{variance},beta={c.beta:g}" for c in result.configs],
                     [{"arch": arch, "variance": variance,
                       **(predicted_counts(x, latent, c.beta, std) if arch == "linear" else {})}
                      for c in result.configs])
    combined, table = runs.write(out, "diagnose() of every architecture, variance, beta and seed",
                                 "per architecture, variance, beta and seed: active units, dimensions with mean "
                                 "KL < 0.01, total KL, held-out NLL; for the linear VAE the closed forms' active "
                                 "units and complete collapse")
    summary = seed_summary(table.fillna({"predicted_active_units": -1, "predicted_complete_collapse": -1}),
                           ["arch", "variance", "beta", "predicted_active_units", "predicted_complete_collapse"],
                           ["z_principal_au", "z_active_units", "z_n_collapsed", "z_kl_total", "nll"])
    out.table("summary", summary, "seed means and standard errors (predicted columns -1 where there is no theory)")
    table["model"] = table.arch + " " + table.variance
    out.figure("units_vs_beta", seed_trends(table, "beta", ["z_principal_au", "z_n_collapsed", "z_kl_total"],
                                            hue="model", title=f"VAE, eta_dec={ETA_DEC}", logx=True),
               "active units, dimensions with KL < 0.01 and total KL against beta, per architecture and encoder "
               "variance")
    middle = 1.0 if 1.0 in betas else betas[-1]
    at_middle = np.flatnonzero(np.isclose(table.beta, middle) & (table.arch == "mlp") & (table.seed == settings.seed))
    out.figure("collapse_curves_mlp", plots.collapse_curves(combined.collapse.isel(run=at_middle),
                                                           title=f"MLP VAE, beta={middle:g}, seed {settings.seed}"),
               f"epsilon-collapse curves of the MLP VAE at beta={middle:g}, learnable vs fixed variance")

    check = ClaimCheck.from_verdict(NAME, CLAIM, judge(summary), {"eta_dec": ETA_DEC, "latent": latent})
    out.claim(check)
    return check


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees}")
    sys.exit(0)
