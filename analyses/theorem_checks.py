"""SPEC 6.1: linear VAE, CVAE and MHVAE trained by SVI against the closed-form optima.

For each model (VAE with learnable and with fixed encoder variance, CVAE, MHVAE
with learnable and with fixed Sigma2) a grid of hyper-parameters is trained in
one vectorised sweep on synthetic Gaussian data with a known, well separated
spectrum, and every trained model is read out in the theory's coordinates
(singular values per mode) and compared with SPEC section 4. The real-data
counterparts run on the images of the scale (8x8 digits quick, MNIST full): a
linear VAE with fixed Sigma = I (latent 5, eta_enc = eta_dec = beta = 1)
against Theorem 1, the same VAE with a learnable Sigma (the authors' setting:
latent 5, eta_dec 1, beta 1), a linear MHVAE (sigma1 = 1 fixed, beta1 = 1,
beta2 from 0.1 to 7) against Theorem 3 and one with a fixed q(z2|z1) std
against Theorem 5. A synthetic MHVAE with beta1 = 2 checks Theorem 3 off
beta1 = 1. (The linear CVAE on real data is experiment 6.2.)

Steps: 3,500 full-batch quick (12,000 full), lr 0.05 decaying to 3e-3 of it
over the run (rescaled if the steps change): the rotation of nearly equal
modes into the latent axes is slow (the loss is flat along it); every run is
checked by the convergence gate. Measured (3 seeds, synthetic cases): 2,000
steps with the same decay freeze the model short of the optimum (the gate
passes, yet the CVAE's seed-mean singular-value error is 5.1%, one seed
7.3%): a decayed rate settles, it does not converge; 2,000 steps ending at
0.02 of the rate reach 2.7% (3,500: 1.4%). No setting sits within 7% of a
theorem's case boundary or collapse threshold (a test checks it): there the
loss is flat and SVI creeps, which is a design slip, not a finding.
Every setting trains once per seed; the rule reads seed means.

Outputs (``OUT/theorem_checks/``): ``errors.csv`` (one row per setting and
seed: predicted and measured collapsed modes, largest relative error of the
singular values of modes clear of the threshold), ``theory_<model>.nc`` (prediction and learned values over
``setting`` x ``mode``), one singular-value figure per model.

    python analyses/theorem_checks.py --quick --out results
"""

from __future__ import annotations

import contextlib
import math
import sys

import pandas as pd
import xarray as xr

from ppl_vae import plots
from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.diagnostics import theory_group
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig
from ppl_vae.models.readout import readout_summary
from ppl_vae.reproduce import (Check, ClaimCheck, ExperimentOutput, Verdict, bound_check, image_batch_threads,
                               image_data,
                               relative_error_above_floor, run_name, run_replicates, run_script, seed_summary)
from ppl_vae.reproduce.plan import RunPlan
from ppl_vae.sweep import expand_grid

NAME = "theorem_checks"
CLAIM = ("Linear VAE, CVAE and MHVAE trained by SVI reach the closed-form global optima (Theorems 1-3, 5): "
         "exactly the predicted modes collapse and the active singular values match.")

#: Variances of the principal directions: well separated, so no mode sits on a collapse threshold.
SPECTRUM = [9.0, 4.84, 1.96, 0.64, 0.25, 0.09]
LATENT = 4
#: Largest relative error of an active singular value still counted as agreement.
REL_TOL = 0.05
#: Modes whose predicted singular value is below this are left out of the relative error: next to the
#: collapse threshold the loss is flat (quartic) in that direction and SVI approaches it slowly.
SV_FLOOR = 0.25
#: Largest distance of a seed-mean collapsed-mode count from the theorem's (modes).
COUNT_TOL = 0.5


def experiments(dim: int, latent: int):
    """(label, base config, grid) of every model variant checked on synthetic data."""
    hyper = {"beta": [0.5, 1.0, 3.0]}
    return [
        ("vae_learnable", VAEConfig(dim, latent), hyper),
        ("vae_fixed", VAEConfig(dim, latent, encoder_std=0.5), hyper),
        # thresholds beta eta_dec^2 of 0.19 to 3 against the residual variances theta = 2.27, 2.04, 1.18, 0.54:
        # each at least 25% from a theta. (beta 0.5 / 2 put thresholds of 0.5 and 2 next to theta 0.54 and 2.04,
        # modes of singular value 0.2 on a flat loss: an active one still drifting after 3,500 steps.)
        ("cvae", CVAEConfig(dim, dim, latent), {"beta": [0.75, 1.5, 3.0], "eta_dec": [0.5, 1.0]}),
        # beta2 = 1 would sit on Theorem 3's case boundary sigma1^2 = (beta2 / beta1) eta_dec^2, where z2's loss is
        # flat and SVI creeps (one mode in three seeds still off after 3,000 steps); beta2 = 3 put z2's first mode
        # on its own threshold theta_1 = beta2 (3.01: a singular value of 0.14, still drifting), so 2.5
        ("mhvae_learnable", MHVAEConfig(dim, (latent, latent), sigma1=1.0), {"beta2": [0.5, 1.5, 2.5]}),
        ("mhvae_fixed", MHVAEConfig(dim, (latent, latent), sigma1=1.0, sigma2=0.5), {"beta2": [0.5, 1.0, 2.0]}),
        # beta1 != 1 (issue 22): Theorem 3's case boundary moves to beta2 = beta1 sigma1^2 / eta_dec^2 = 3, left
        # out; z2 mode i's threshold is theta_i = beta2 / sqrt(beta1) (2.6 at beta2 4.5, between theta 3.01 and
        # 2.22) and z1's sqrt(beta1) sigma1 = 1.73 lies between theta 2.22 and 1.37. (beta1 = 2 put z1's
        # threshold 1.41 next to theta 1.37, and beta2 = 3 z2's 2.12 next to 2.22: flat losses.)
        ("mhvae_beta1_3", MHVAEConfig(dim, (latent, latent), sigma1=1.0, beta1=3.0), {"beta2": [0.5, 4.5, 8.0]}),
    ]


def real_experiments(dim: int, settings):
    """(label, base config, grid) of the real-data counterparts (SPEC 6.1): a linear VAE with fixed Sigma = I
    (eta_enc = eta_dec = beta = 1, latent 5, Theorem 1) and a linear MHVAE (sigma1 fixed, beta1 = 1, beta2 from
    0.1 to 7, Theorem 3)."""
    latent = settings.pick(4, 8, 32)
    # beta2 = 1 puts sigma1^2 = (beta2 / beta1) eta_dec^2 exactly on Theorem 3's case boundary (z2's loss is
    # flat there); quick mode leaves out beta2 = 0.1 too, whose smallest active modes are still 10-30% short
    # of the optimum after 6,000-15,000 steps (measured): not converged is not a finding.
    beta2 = settings.pick([0.5, 3.0], [0.5, 2.0, 3.0, 7.0], [0.1, 0.5, 2.0, 3.0, 5.0, 7.0])
    return [
        ("real_vae_fixed_identity", VAEConfig(dim, settings.pick(3, 5, 5), encoder_std=1.0), {"beta": [1.0]}),
        # the authors' linear VAE setting (issue 22): latent 5, eta_dec 1, beta 1, learnable encoder variance
        ("real_vae_learnable_authors", VAEConfig(dim, settings.pick(3, 5, 5)), {"beta": [1.0]}),
        ("real_mhvae_learnable", MHVAEConfig(dim, (latent, latent), sigma1=1.0), {"beta2": beta2}),
        # Theorem 5 on real data (issue 22): the MHVAE with a fixed q(z2|z1) std
        ("real_mhvae_fixed", MHVAEConfig(dim, (latent, latent), sigma1=1.0, sigma2=0.5),
         {"beta2": settings.pick([0.5, 3.0], [0.5, 2.0, 3.0], [0.5, 2.0, 3.0, 7.0])}),
    ]


def judge(table: pd.DataFrame) -> Verdict:
    """The rule, a pure function of the per-seed table (counterfactual tests in ``tests/analyses``).

    Per model: in every setting the seed mean of the measured collapsed-mode
    count is within half a mode of the theorem's (the optimum is exact, so
    one seed in three may miss by one mode, not more), and the seed mean of
    the largest relative error of the singular values of modes clear of the
    threshold is at most 5% in every setting.
    """
    summary = seed_summary(table, ["model", "setting", "n_collapsed_predicted"],
                           ["n_collapsed_measured", "max_rel_error_sv_above_floor"])
    checks = []
    for model, rows in summary.groupby("model", sort=False):
        miss = (rows.n_collapsed_measured_mean - rows.n_collapsed_predicted).abs()
        worst = rows.loc[miss.idxmax()]
        checks.append(Check(f"{model}: largest |collapsed modes - theorem| over {len(rows)} settings "
                            f"(at {worst.setting})", float(miss.max()), float(worst.n_collapsed_measured_se),
                            f"<= {COUNT_TOL:g}", bool(miss.max() <= COUNT_TOL)))
        error = rows.loc[rows.max_rel_error_sv_above_floor_mean.idxmax()]
        checks.append(bound_check(f"{model}: largest relative error of active singular values (at {error.setting})",
                                  float(error.max_rel_error_sv_above_floor_mean),
                                  float(error.max_rel_error_sv_above_floor_se), below=REL_TOL))
    rule = (f"per model, in every setting: seed-mean collapsed-mode count (singular value < 0.05) within "
            f"{COUNT_TOL:g} of the theorem's, and seed-mean relative error of every singular value of a mode whose "
            f"predicted singular values are all >= {SV_FLOOR} at most {REL_TOL:.0%}")
    return Verdict(rule, tuple(checks), int(summary.n_seeds.min()))


def schedule(settings) -> dict:
    """Every run's training options: full batch, lr 0.05 decaying to 3e-3 of it (module docstring)."""
    # the rotation of nearly equal modes into the latent axes is slow (the loss is flat along it)
    return {"steps": settings.steps(40, 3500, 12000), "lr": 0.05, "final_lr_fraction": 3e-3}


def plan(settings) -> list[RunPlan]:
    """What :func:`run` trains (``ppl-vae reproduce`` prints it before a full job): one vectorised run per model
    variant (the configurations of its grid x the seeds), synthetic first, then the real-data counterparts."""
    dim, latent = (len(SPECTRUM) if settings.scale != "tiny" else 4), settings.pick(2, LATENT, LATENT)
    # the number of configurations does not depend on the images' width, so no data is read here
    variants = experiments(dim, latent) + real_experiments(dim, settings)
    steps = schedule(settings)["steps"]
    return [RunPlan(f"linear {base.family.upper()}, {label}", math.prod(len(v) for v in grid.values()),
                    settings.n_seeds, steps) for label, base, grid in variants]


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    n = settings.pick(200, 2000, 20000)
    spectrum = SPECTRUM if settings.scale != "tiny" else SPECTRUM[:4]
    dim, latent = len(spectrum), settings.pick(2, LATENT, LATENT)
    single = synthetic_gaussian(n, dim, spectrum=spectrum, seed=settings.seed)
    pairs = synthetic_pairs(n, dim, correlation="noise_1_2", spectrum=spectrum, seed=settings.seed)
    images, _ = image_data(settings, test_fraction=0.1)
    options = schedule(settings)

    cases = [(label, base, grid, pairs if base.family == "cvae" else single)
             for label, base, grid in experiments(dim, latent)]
    cases += [(label, base, grid, images) for label, base, grid in real_experiments(images.x.shape[1], settings)]
    rows = []
    for label, base, grid, bundle in cases:
        configs, _ = expand_grid(base, grid)
        with image_batch_threads(settings) if bundle is images else contextlib.nullcontext():
            result = run_replicates(configs, bundle, settings, kind="linear", **options)
        groups = []
        for config, seed, model in zip(result.configs, result.seeds, result.models):
            group = theory_group(model, bundle)
            readout = model.linear_readout(bundle)
            summary = readout_summary(readout, group)
            rows.append({"model": label, "setting": run_name(config, grid), "seed": seed,
                         **config.hyperparameters(), **summary,
                         "max_rel_error_sv_above_floor": relative_error_above_floor(group, SV_FLOOR)})
            if seed == settings.seed:
                groups.append(group.drop_vars([v for v in group.data_vars if group[v].dtype == bool]))
        stacked = xr.concat(groups, dim="setting", coords="minimal", compat="override", combine_attrs="drop")
        stacked = stacked.assign_coords(setting=[run_name(c, grid) for c in configs])
        out.dataset(f"theory_{label}", stacked,
                    f"{label}: closed-form and learned values per setting and mode (seed {settings.seed})")
        middle = (len(configs) // 2) * settings.n_seeds
        fig = plots.singular_values(theory_group(result.models[middle], bundle),
                                    title=f"{label}, {run_name(result.configs[middle], grid)}")
        out.figure(f"singular_values_{label}", fig,
                   f"{label}: theory vs SVI-trained singular values per mode (seed {settings.seed})")

    table = pd.DataFrame(rows)
    out.table("errors", table, "per setting and seed: predicted vs measured collapsed modes (decoder singular value "
              "< 0.05) and largest relative error of the singular values of modes clear of the threshold")
    verdict = judge(table)
    check = ClaimCheck.from_verdict(NAME, CLAIM, verdict, {
        "settings": int(table.setting.nunique()),
        "max_rel_error_by_model": table.groupby("model").max_rel_error_sv_above_floor.max().round(4).to_dict()})
    out.claim(check)
    return check


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees}")
    sys.exit(0)
