"""SPEC 6.5: collapse per digit class, against the linear theory's prediction from the class's theta.

Digit classes differ in how much the bottom-left quadrant x tells about the
other three y. For each class the residual second moment E of y given x
(SPEC 3) has eigenvalues theta; Theorem 2 collapses mode i when theta_i <
beta eta_dec^2, so a class with smaller thetas (x predicts y better) should
collapse more. The authors' setting: latent 16, hidden 100, eta_enc = eta_dec
= 0.5, beta = 1, linear, ReLU MLP and CNN CVAEs (encoder f(x) + g(y)), per
class. On the 8x8 digits the per-class thetas are smaller than on MNIST, so
quick mode uses eta_dec = 0.25, where Theorem 2's count varies between 8 and
12 of 16 across the classes (at 0.5 nearly every mode of every class
collapses).

Every architecture and class trains once per seed. The rule reads, per
architecture, the Spearman rank correlation between the class's predicted
collapsed count and its seed-mean collapse level, with a bootstrap interval
over seeds.

Outputs (``OUT/collapse_per_class/``): ``diagnostics.nc`` (all runs along
``run``), ``runs.csv`` (per architecture, class and seed), ``summary.csv``
(seed means and standard errors with the theory's count and mean theta),
the collapse curves per class, and collapse level against the predicted count.

    python analyses/collapse_per_class.py --quick --out results
"""

from __future__ import annotations

import sys

import pandas as pd

from ppl_vae import plots
from ppl_vae.models import CVAEConfig
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, RunCollector, Verdict, image_data, mlp_schedule,
                               run_replicates, run_script, seed_summary, seed_trends, spearman_check,
                               training_options)
from ppl_vae.reproduce.plan import RunPlan
from ppl_vae.theory import linear_cvae

NAME = "collapse_per_class"
CLAIM = ("Collapse differs between digit classes: classes whose input x predicts the output y better (smaller "
         "theta) collapse more.")
ARCHITECTURES = ("linear", "mlp", "cnn")
BETA, ETA_ENC = 1.0, 0.5
#: The CNN's quick-mode learning rate and decay (measured, :func:`class_schedule`).
CNN_SCHEDULE = {"lr": 5e-3, "final_lr_fraction": 0.01}


def class_steps(settings, arch: str) -> int:
    """Minibatch steps of the MLP and CNN per class: about 160 training images per class in quick mode, so
    800 steps of 128 are some 600 epochs for the MLP; the CNN gets 1,600 (issue 22: at 400 it was
    under-trained, Spearman 0.40 p = 0.13; at 1,600 x 3 seeds 0.64, p = 0.023). The MLP's disagreement
    persists at 3,200 steps x 5 seeds (0.21, p = 0.28): a quick-scale finding, not under-training. The
    learning-rate decay follows these steps (``final_lr_fraction``), and the convergence gate checks
    every run."""
    return settings.steps(30, 1600 if arch == "cnn" else 800, 20000)


def class_schedule(settings, arch: str) -> dict:
    """Steps, learning rate and decay of the MLP and CNN per class (quick mode; full mode keeps the defaults).

    Measured with the convergence gate, 3 seeds: the MLP with lr 1e-2 decaying to 0.003 of it
    (``MLP_SCHEDULE``) settles 30 of 30 runs (one more, digit 7, had two dimensions at 0.0098-0.0102 nats,
    the threshold's resolution, which the gate does not count). The CNN with lr 3e-3 decaying to 0.1 of it
    was still improving at 1,600 steps (loss falling 0.09-0.15 nats per sample over the last fifth);
    with lr 5e-3 decaying to 0.01 of it (:data:`CNN_SCHEDULE`) 5 of 6 runs settle on digits 0 and 8 at the
    same 1,600 steps (the sixth: two dimensions still collapsing, 0.0101 -> 0.0071). Faster (lr 1e-2, 1,000
    full-batch steps) every run was still improving and some collapsed completely. The whole experiment
    at 3 seeds: MLP 30 of 30 and CNN 29 of 30 runs settle (that same digit-8 run does not); the CNN's
    Spearman is then 0.25 (p = 0.25), against 0.64 (p = 0.023) under the earlier, unsettled schedule: the
    CNN's per-class ordering depends on the optimiser's path at this scale. With each class's three seeds
    trained as one batched model (grouped convolutions: the same numbers up to float rounding, which the CNN
    amplifies over 1,600 steps) the 30 CNN runs all settle and its Spearman is 0.21 (p = 0.28); the linear
    digit-0 seed-1 run is the one left unsettled (analyses/RESULTS.md).
    """
    options = {"steps": class_steps(settings, arch)}
    if settings.scale != "full":
        options |= CNN_SCHEDULE if arch == "cnn" else mlp_schedule(settings)
    return options


def class_grid(settings) -> list[int]:
    """The digit classes, one training set each (three in tiny mode, all ten otherwise)."""
    return settings.pick([0, 1, 9], list(range(10)), list(range(10)))


def training_kind(arch: str) -> str:
    """``training_options``' kind of an architecture: the linear CVAE's full-batch schedule, minibatch otherwise."""
    return "linear" if arch == "linear" else "mlp"


def training_overrides(settings, arch: str) -> dict:
    """What a run of ``arch`` changes in its kind's ``training_options``: nothing for the linear CVAE,
    :func:`class_schedule` for the MLP and the CNN."""
    return {} if arch == "linear" else class_schedule(settings, arch)


def plan(settings) -> list[RunPlan]:
    """What :func:`run` trains (``ppl-vae reproduce`` prints it before a full job): per class, one run per
    architecture (one configuration, its seeds vectorised; the CNN's through grouped convolutions), in
    :func:`run`'s order."""
    steps = {arch: (training_options(settings, kind=training_kind(arch)) | training_overrides(settings, arch))["steps"]
             for arch in ARCHITECTURES}
    names = {arch: arch if arch == "linear" else arch.upper() for arch in ARCHITECTURES}
    return [RunPlan(f"{names[arch]} CVAE, digit {digit}", 1, settings.n_seeds, steps[arch])
            for digit in class_grid(settings) for arch in ARCHITECTURES]


def judge(runs: pd.DataFrame) -> Verdict:
    """The rule, a pure function of the per-seed table (counterfactual tests in ``tests/analyses``).

    For every architecture: the Spearman rank correlation between the classes'
    predicted collapsed counts (Theorem 2 from each class's theta) and their
    seed-mean collapse levels is positive, with the lower end of its 90%
    bootstrap interval (resampling seeds) above zero.
    """
    checks, n_seeds = [], int(runs.seed.nunique())
    for arch, rows in runs.groupby("arch", sort=False):
        per_seed = rows.pivot(index="seed", columns="digit", values="z_collapse_level")
        predicted = rows.groupby("digit").predicted_collapsed.first().reindex(per_seed.columns)
        checks.append(spearman_check(f"{arch}: Spearman(predicted collapsed count, collapse level) over "
                                     f"{per_seed.shape[1]} classes", predicted.to_numpy(), per_seed.to_numpy()))
    rule = ("per architecture, Spearman rank correlation between each class's Theorem 2 collapsed count (from its "
            "theta) and its seed-mean collapse level, with the 90% bootstrap interval over seeds above zero")
    return Verdict(rule, tuple(checks), n_seeds)


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    classes = class_grid(settings)
    latent, eta_dec = settings.pick(4, 16, 16), settings.pick(0.25, 0.25, 0.5)
    hidden = settings.pick((16,), (100,), (100,))
    runs = RunCollector(settings)
    for digit in classes:
        train, test = image_data(settings, split="quadrant", classes=[digit])
        side = int(round((4 * train.x.shape[1]) ** 0.5))  # x is one quadrant of a square image
        theory = linear_cvae(train.x.double(), train.y.double(), latent, beta=BETA, eta_enc=ETA_ENC, eta_dec=eta_dec)
        for arch in ARCHITECTURES:
            config = CVAEConfig(train.x.shape[1], train.y.shape[1], latent, arch=arch, hidden_dims=hidden,
                                beta=BETA, eta_enc=ETA_ENC, eta_dec=eta_dec, latent_mapping="separate",
                                image_shape=(side, side) if arch == "cnn" else None, split="quadrant")
            result = run_replicates([config], train, settings, kind=training_kind(arch),
                                    **training_overrides(settings, arch))
            runs.add(result, train, test, f"{arch},digit {digit}",
                     {"arch": arch, "digit": digit, "n_train": train.n,
                      "predicted_collapsed": int(theory.attrs["n_collapsed"]), "theta_mean": float(theory.theta.mean())})
    combined, table = runs.write(out, "diagnose() of every architecture, class and seed, along run",
                                 "per architecture, class and seed: Theorem 2's collapsed count and mean theta, the "
                                 "measured collapsed dimensions, collapse level, active units and held-out NLL")
    summary = seed_summary(table, ["arch", "digit", "predicted_collapsed", "theta_mean"],
                           ["z_collapse_level", "z_n_collapsed", "z_active_units", "nll"])
    out.table("summary", summary, "seed means and standard errors per architecture and class")
    first = (table.seed == settings.seed).to_numpy() & (table.arch == "mlp").to_numpy()
    out.figure("collapse_curves_mlp", plots.collapse_curves(combined.collapse.isel(run=first),
                                                           title=f"MLP CVAE per digit class, seed {settings.seed}"),
               f"epsilon-collapse curves of the MLP CVAE, one line per digit class (seed {settings.seed})")
    out.figure("collapse_vs_predicted", seed_trends(table, "predicted_collapsed", ["z_collapse_level"], hue="arch",
                                                    title="classes by Theorem 2's collapsed count"),
               "collapse level (seed mean +/- se over the classes sharing a count) against the class's predicted "
               "collapsed count, per architecture")

    verdict = judge(table)
    check = ClaimCheck.from_verdict(NAME, CLAIM, verdict, {"eta_dec": eta_dec, "latent": latent})
    out.claim(check)
    return check


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees}")
    sys.exit(0)
