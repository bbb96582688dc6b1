"""Derived: KL warm-up, cyclical annealing and free bits on the CVAE, measured against the linear theory.

Not an experiment of the paper: the mitigations users reach for first, held against what the closed
forms predict. A schedule only changes the path (its weight is 1 at the end), so for the LINEAR CVAE
warm-up and cyclical annealing must end at the fixed-beta optimum of Theorem 2; free bits change the
objective, so each latent dimension ends at or above the floor lambda (``ppl_vae.theory.free_bits``).
How MANY dimensions sit at the floor is read off the GLOBAL optimum of the free-bits loss
(``ppl_vae.theory.free_bits``, ``global_n_at_floor``), in every mode: the closed form when no mode sits
at the floor ("certified", ``certified_global``) or when no sharing descends; the numerical full-matrix
minimum when mode sharing descends (then the mode-aligned closed form is not the optimum: a dimension at
the floor shares its free capacity across modes, the loss goes lower, and an active mode can be pushed
down to the floor, so the global optimum has MORE dimensions at the floor than the formula's count).
On the 8x8 digits quadrants sharing descends at every floor (0.05, 0.2, 0.5 nats): at beta 3 the
formula's 12 / 14 / 15 dimensions at the floor against the global optimum's 14 / 15 / 16. The MLP CVAE is
measured beside it, where no theory applies and a schedule may well change the end point: reported,
judged only on the floor.

Every variant and seed of one architecture trains as ONE run (each configuration from its own seed);
metrics are on held-out rows: collapsed dimensions (mean KL < 0.01 nats), active units, the smallest
per-dimension KL, and the importance-weighted log-likelihood.

Steps: the linear CVAE 4,000 full-batch quick (12,000 full), lr 0.02 decaying to 0.05 of it over the run
(the digits' residual spectrum is dense, the small modes move at a rate ~ theta); the MLP the suite's
minibatch default (``training_options``). Every run is checked by the convergence gate, whose window (the
last fifth) the schedules leave at full weight (:func:`variants`).

Outputs (``OUT/kl_schedules_free_bits/``): ``runs.csv`` (one row per architecture, variant, seed),
``summary.csv`` (seed means with standard errors next to the predictions), ``schedules.nc`` (the KL
weight over steps of each variant) and figures.

    python analyses/kl_schedules_free_bits.py --quick --out results
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import xarray as xr

from ppl_vae.diagnostics import diagnose
from ppl_vae.inference.schedules import schedule_curve
from ppl_vae.models import CVAEConfig
from ppl_vae.plots import plot_kl_schedule
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, Verdict, bound_check, close_check,
                               diagnose_options, image_data, run_replicates, run_script, seed_summary, subsample,
                               training_options)
from ppl_vae.reproduce.plan import RunPlan
from ppl_vae.theory.closed_form import linear_cvae

NAME = "kl_schedules_free_bits"
CLAIM = ("A KL schedule changes the path, not the optimum: the linear CVAE ends warm-up and cyclical annealing "
         "at the fixed-beta collapse of Theorem 2; free bits change the optimum and keep every dimension at or "
         "above lambda, the modes fixed beta collapses sitting at the floor.")
#: Decoder noise std and KL weight: 12 of the 16 digits modes collapse at the fixed-beta optimum. The threshold
#: beta eta_dec^2 = 0.1875 lies 15% from the nearest residual variance theta (0.162, 0.239) and the smallest
#: active singular value is 0.23. beta = 1 put the threshold at 0.0625 on theta = 0.0622 (a collapse that
#: flipped over the last steps); at beta = 1.5 (threshold 0.094, active singular values down to 0.12) 7 of
#: 18 linear runs still drifted after 4,000 steps, at beta = 3 only the cyclical ones (3 seeds, measured).
ETA_DEC, BETA = 0.25, 3.0
FREE_BITS = (0.05, 0.2, 0.5)
#: A dimension "sits at the floor" within this relative distance of lambda.
FLOOR_RTOL = 0.25
#: Architectures, in training order.
ARCHS = ("linear", "mlp")
#: Fraction of each annealing cycle spent ramping (Fu et al. use 0.5). With 0.5 the last ramp ended at 75% of
#: the steps, 5% before the gate's window, and the MLP's total KL was still falling back after it: 15%, 18% and
#: 12% over the window (seeds 0-2, 1,500 steps; not converged). A quarter leaves the last cycle at full weight
#: from 62.5% of the steps: 6.4%, 2.8% and 2.1%, all settled, at the fixed variant's collapse (13, 15, 14 of 16
#: dimensions against 12, 13, 14); the linear runs settle either way (12 collapsed, Theorem 2's 12; largest
#: total-KL change over the window 2.0% at 0.5, 1.3% at 0.25). Measured, quick, loaded.
CYCLE_RATIO = 0.25


def variants(steps: int) -> dict[str, dict]:
    """Config fields of each variant: warm-up over the first quarter of training; cyclical annealing in two
    cycles of half the run, each ramping over its first quarter (ratio :data:`CYCLE_RATIO`).

    Two cycles, not four: a run is judged on its last fifth (the convergence gate's window) and read at its
    end, so the last ramp must end before that stretch and the run finish at full weight, as Fu et al.'s
    schedule holds beta = 1 for the rest of training. With cycles of a quarter the fourth ramp (75% to 87.5%
    of the steps) lay inside the window: the KL and the decoder still moved by half, and the run ended a
    few hundred steps after reaching full weight, which is not the end point the theory predicts.
    """
    out = {"fixed": {}, "warm-up": {"kl_warmup": steps // 4},
           "cyclical": {"kl_cycle": -(-steps // 2), "kl_cycle_ratio": CYCLE_RATIO}}
    out.update({f"free bits {lam:g}": {"free_bits": lam} for lam in FREE_BITS})
    return out


def arch_options(settings, arch: str) -> dict:
    """Training options of an architecture: its kind's defaults; the linear model full batch, 4,000 steps quick,
    lr 0.02 decaying to 0.05 of it."""
    options = training_options(settings, kind=arch)
    if arch == "linear":
        options["steps"] = settings.steps(40, 4000, 12000)
        options["lr"], options["final_lr_fraction"] = 0.02, 0.05
    return options


def plan(settings) -> list[RunPlan]:
    """What :func:`run` trains (``ppl-vae reproduce`` prints it before a full job): one vectorised run of every
    variant per architecture."""
    return [RunPlan(f"{arch} CVAE, fixed / warm-up / cyclical / free bits", len(variants(1)), settings.n_seeds,
                    arch_options(settings, arch)["steps"]) for arch in ARCHS]


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    train, test = image_data(settings, split="quadrant")
    test = subsample(test, settings.seed)
    latent = settings.pick(4, 16, 64)
    rows, curves = [], {}
    for arch in ARCHS:
        options = arch_options(settings, arch)
        steps = options.pop("steps")
        base = CVAEConfig(train.x.shape[1], train.y.shape[1], latent, arch=arch, beta=BETA, eta_dec=ETA_DEC,
                          hidden_dims=(settings.pick(8, 64, 128),))
        named = variants(steps)
        result = run_replicates([dataclasses.replace(base, **fields) for fields in named.values()], train, settings,
                                kind=arch, steps=steps, **options)
        labels = [name for name in named for _ in settings.seeds]
        for label, config, seed, model in zip(labels, result.configs, result.seeds, result.models):
            idata = diagnose(model, train, test_data=test, theory=False, **diagnose_options(settings))
            kl = idata.collapse["z_kl_mean"].values
            rows.append({"arch": arch, "variant": label, "seed": seed, "free_bits": config.free_bits,
                         "n_collapsed": int((kl < 0.01).sum()), "active_units": int(idata.collapse["z_active_units"]),
                         "min_kl": float(kl.min()), "n_at_floor": _at_floor(kl, config.free_bits),
                         "iw_log_likelihood": float(idata.metrics["iw_log_likelihood"])})
        curves[arch] = schedule_curve(steps, [fields.get("kl_warmup", 0) for fields in named.values()],
                                      [fields.get("kl_cycle", 0) for fields in named.values()],
                                      [fields.get("kl_cycle_ratio", 0.5) for fields in named.values()]
                                      ).assign_coords(config=list(named)).rename(config="variant")
    table = pd.DataFrame(rows)
    predictions = predicted(train, latent)
    summary = summarise(table, predictions)
    out.table("runs", table, "one row per architecture, variant and seed; metrics on held-out rows")
    out.table("summary", summary, "seed means and standard errors, with the linear theory's predictions")
    weights = xr.Dataset({f"kl_weight_{arch}": curve.reset_coords(drop=True).drop_attrs().rename(step=f"step_{arch}")
                         for arch, curve in curves.items()})
    out.dataset("schedules", weights, "KL weight multiplier w(t) of each variant over the steps of each architecture")
    shown = curves["mlp"].sel(variant=["fixed", "warm-up", "cyclical"]).assign_attrs(free_bits=FREE_BITS[1])
    out.figure("kl_schedules", plot_kl_schedule(shown, title=f"KL weight over the MLP run (free-bits floor "
                                                             f"{FREE_BITS[1]:g} nats shown)"),
               "the KL weight multiplier of the fixed, warm-up and cyclical variants, and one free-bits floor")
    verdict = judge(summary)
    check = ClaimCheck.from_verdict(NAME, CLAIM, verdict, {"table": summary.round(4).to_dict("records")})
    out.claim(check)
    return check


def _at_floor(kl: np.ndarray, floor: float) -> int:
    return int((np.abs(kl - floor) <= FLOOR_RTOL * floor).sum()) if floor > 0 else 0


def predicted(train, latent: int) -> dict[str, float | bool]:
    """The linear theory on the training rows: collapsed modes at fixed beta; modes at each floor.

    ``at_floor {lambda}`` is the number of latent dimensions at the floor at the GLOBAL optimum;
    ``formula {lambda}`` the mode-aligned closed form's; ``case {lambda}`` which case of
    ``ppl_vae.theory.free_bits`` holds; ``certified {lambda}`` what the module calls certified
    (``certified_global``: no mode at the floor, the closed form is the global optimum).
    """
    from ppl_vae.theory.free_bits import linear_cvae_free_bits

    fixed = linear_cvae(train.x, train.y, latent, beta=BETA, eta_dec=ETA_DEC)
    out: dict[str, float | bool] = {"fixed": float(fixed["collapsed"].sum())}
    for lam in FREE_BITS:
        floored = linear_cvae_free_bits(train.x, train.y, latent, beta=BETA, eta_dec=ETA_DEC, free_bits=lam)
        out[f"at_floor {lam:g}"] = float(floored.attrs["global_n_at_floor"])
        out[f"formula {lam:g}"] = float(floored["at_floor"].sum())
        out[f"case {lam:g}"] = floored.attrs["case"]
        out[f"certified {lam:g}"] = bool(floored.attrs["certified_global"])
    return out


def summarise(table: pd.DataFrame, predictions: dict[str, float]) -> pd.DataFrame:
    """Seed means and standard errors per architecture and variant, with the theory's numbers (linear)."""
    metrics = ["n_collapsed", "active_units", "min_kl", "n_at_floor", "iw_log_likelihood"]
    summary = seed_summary(table, ["arch", "variant", "free_bits"], metrics)
    summary["predicted_collapsed"] = np.where(summary.free_bits > 0, 0.0, predictions["fixed"])
    summary["predicted_at_floor"] = [predictions.get(f"at_floor {lam:g}", 0.0) for lam in summary.free_bits]
    summary["formula_at_floor"] = [predictions.get(f"formula {lam:g}", n) for lam, n in
                                   zip(summary.free_bits, summary.predicted_at_floor)]
    summary["prediction_case"] = [predictions.get(f"case {lam:g}", "certified") for lam in summary.free_bits]
    summary["prediction_certified"] = [bool(predictions.get(f"certified {lam:g}", True)) for lam in summary.free_bits]
    summary.loc[summary.arch != "linear", ["predicted_collapsed", "predicted_at_floor", "formula_at_floor"]] = np.nan
    summary.loc[summary.arch != "linear", "prediction_case"] = "no theory"
    summary.loc[summary.arch != "linear", "prediction_certified"] = False
    return summary


def judge(summary: pd.DataFrame) -> Verdict:
    """The rule, a pure function of the summary table (see ``tests/analyses`` for its counterfactuals).

    Linear model: warm-up and cyclical end within one dimension (or two standard errors) of Theorem 2's
    fixed-beta collapsed count AND of the fixed variant's measured count; each free-bits variant has no
    dimension below 0.8 lambda (seed mean of the smallest KL) and as many dimensions at the floor as
    the GLOBAL optimum has (``predicted_at_floor``: the closed form where it is the optimum, the
    numerical full-matrix minimum where mode sharing descends), within the same tolerance, in every
    case. MLP: the floor part only (no theory for its end point).
    """
    rows = {(r.arch, r.variant): r for r in summary.itertuples()}
    checks = []
    fixed = rows[("linear", "fixed")]
    for name in ("warm-up", "cyclical"):
        row = rows[("linear", name)]
        checks.append(close_check(f"linear {name}: collapsed dimensions", row.n_collapsed_mean, row.n_collapsed_se,
                                  row.predicted_collapsed, floor=1.0, source="Theorem 2, fixed beta"))
        checks.append(close_check(f"linear {name}: collapsed dimensions against the fixed variant",
                                  row.n_collapsed_mean, row.n_collapsed_se, fixed.n_collapsed_mean, floor=1.0,
                                  source="fixed variant"))
    for (arch, name), row in rows.items():
        if row.free_bits <= 0:
            continue
        checks.append(bound_check(f"{arch} {name}: smallest per-dimension KL (nats)", row.min_kl_mean, row.min_kl_se,
                                  above=0.8 * row.free_bits))
        if arch == "linear":
            source = ("closed form, certified global" if row.prediction_certified else
                      f"global optimum ({row.prediction_case}; mode-aligned formula {row.formula_at_floor:g})")
            checks.append(close_check(f"{arch} {name}: dimensions at the floor", row.n_at_floor_mean,
                                      row.n_at_floor_se, row.predicted_at_floor, floor=1.0, source=source))
    rule = ("linear: warm-up and cyclical within max(1, 2 SE) of Theorem 2's fixed-beta count and of the fixed "
            "variant; free bits: smallest per-dimension KL >= 0.8 lambda and (linear) the number of dimensions at the "
            "floor within max(1, 2 SE) of the global optimum's (closed form when certified, numerical "
            "full-matrix minimum when mode sharing descends); seed means over the seeds of runs.csv")
    return Verdict(rule, tuple(checks), int(summary.n_seeds.min()))


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees}")
    sys.exit(0)
