"""SPEC 6.3, the completions: ReLU MLP CVAE image completions of held-out quadrant inputs per beta and eta_dec.

The authors' CVAE (their ``MNIST_CVAE_Relu.py``): x = the bottom-left
quadrant, y = the other three, encoder mean f(x) + g(y)
(``latent_mapping='separate'``), latent 16, hidden 16, eta_enc = 1. One
factor at a time, as ``cvae_mlp_beta_eta`` (and with its grid, for the same
reason: on the 8x8 digits the residual variances theta lie between about 0.04
and 0.9, so the quick grid puts the threshold beta eta_dec^2 across that range,
eta_dec = 0.4 as the reference; full mode uses the paper's values at
eta_dec = 1). Every configuration trains once per seed (one vectorised run).

A completion of a held-out x is the decoder mean dec_z(z) + dec_x(x) at a draw
z ~ p(z|x). The collapse shows in them directly: a collapsed dimension of z is
ignored by the decoder, so the draws from the prior stop changing the
completion; when every dimension has collapsed all completions of an x are
the one regression image E[y|x]. Measured on every held-out row with
:data:`N_DRAWS` prior draws (units: pixel intensity, in [0, 1]):

- ``completion_spread``: the root mean (over rows and pixels) of the variance
  of the completions across draws: how much the completions differ;
- ``completion_mse``: mean squared error of a completion against the true y
  (reported, not judged: it is the squared bias of the mean completion plus
  the spread^2, and the two move in opposite directions as z collapses);
- ``posterior_mse``: mean squared error of the reconstruction of y from the
  posterior mean of q(z|x, y): what z carries about y.

The rule (:func:`judge`): along beta (eta_dec = reference) and along eta_dec
(beta = 1) the completion spread falls and the posterior reconstruction error
rises (z carries less of y), each step against the direction at most
max(resolution, 2 SE), the end-to-end change larger than that.

Steps: quick mode trains 6,000 minibatch steps of 128 at lr 4e-3 decaying to
0.2% of it over the run (full: 20,000 steps at lr 1e-3 to a tenth, the MLP
default). Until the regenerated RESULTS.md the schedule was lr 3e-3 decaying
to 1%: measured on the loaded 2-core machine at 3 seeds, against 8,000 steps
of it, seed-mean completion spread within 0.004, posterior MSE within 0.0014,
collapse level within 0.05, the same verdict; but 20 of the 21 runs passed
the convergence gate: at beta = 0.1 (the weakest KL pull) dimensions near
0.01 nats still drifted across it at the final rate (seed 0: two rising
0.0083 -> 0.0106 and 0.0069 -> 0.0105 nats, the count 9, 9, 8, 7). The
present schedule has the same summed learning rate (6,000 x 6.4e-4 against
6.45e-4 per step) and a final rate about a quarter of the old one (8e-6 against
3e-5): all 21 runs pass the gate, the same 16 of 16 checks pass, the judged
seed means move by at most 0.005 (spread) and 0.001 (posterior MSE), the
collapse levels by at most 0.08 (beta 0.5: 0.85 -> 0.77; eta_dec 0.2: 0.64
-> 0.55, within their seed spread), at the same step count. Keeping lr 3e-3
and decaying to 0.2% also passed the gate, but trains less (summed rate 25%
lower) and ended at eta_dec = 0.1 with a collapse level 0.22 lower: rejected.
Shorter or faster schedules were further off: at 3,000 steps the collapse
levels were up to 0.2 lower, and at lr 1e-2 the runs passed the gate but
reached other solutions (collapse levels up to 0.35 higher).

Outputs (``OUT/cvae_completions/``): ``diagnostics.nc`` (all runs along
``run``), ``runs.csv`` and ``summary.csv`` (collapse level, active units, the
three completion metrics), their trends with error bars, and the completions of
the same held-out inputs by every configuration (seed ``--seed``).

    python analyses/cvae_completions.py --quick --out results
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import torch

from ppl_vae import plots
from ppl_vae.data.images import join_split
from ppl_vae.models import CVAEConfig
from ppl_vae.reproduce import (ClaimCheck, ExperimentOutput, Verdict, collapse_table, diagnose_sweep, image_data,
                               quick_overrides, run_name, run_replicates, run_script, seed_summary, seed_trends,
                               training_options, trend_checks)
from ppl_vae.reproduce.plan import RunPlan

NAME = "cvae_completions"
CLAIM = ("ReLU MLP CVAE on held-out quadrant inputs: a larger beta or eta_dec (more collapse) gives completions "
         "from p(z|x) that vary less from draw to draw, and a posterior that reconstructs y worse.")
METRICS = ("z_collapse_level", "z_active_units", "completion_spread", "completion_mse", "posterior_mse")
#: Resolution of the judged metrics (pixel intensity; squared pixel intensity): a smaller difference is no trend.
FLOORS = {"completion_spread": 0.01, "posterior_mse": 0.001}
#: Prior draws per held-out input for the completion metrics.
N_DRAWS = 16
#: Held-out inputs shown in the completion figure, and completions shown per input.
N_SHOWN, N_SHOWN_DRAWS = 3, 4
#: Quick-mode schedule (see the module docstring): steps, initial learning rate, final rate over the initial.
QUICK_STEPS, QUICK_LR, QUICK_FINAL_LR_FRACTION = 6000, 4e-3, 0.002


def grid(settings) -> tuple[dict[str, list[float]], float]:
    """The one-factor-at-a-time values and the reference eta_dec of the beta line (as ``cvae_mlp_beta_eta``)."""
    reference = settings.pick(0.4, 0.4, 1.0)
    betas = settings.pick([0.5, 2.0], [0.1, 0.5, 1.0, 2.0], [0.1, 0.5, 1.0, 2.0])
    etas = settings.pick([0.2, 0.4], [0.1, 0.2, 0.4, 0.8], [0.25, 0.5, 1.0, 2.0])
    return {"beta": betas, "eta_dec": etas}, reference


def pairs(values: dict[str, list[float]], reference: float) -> list[tuple[float, float]]:
    """(beta, eta_dec): beta over its values at eta_dec = reference, then eta_dec at beta = 1, each once."""
    return list(dict.fromkeys([(b, reference) for b in values["beta"]] + [(1.0, e) for e in values["eta_dec"]]))


def configurations(base: CVAEConfig, values: dict[str, list[float]], reference: float) -> list[CVAEConfig]:
    """One config per :func:`pairs` entry."""
    return [dataclasses.replace(base, beta=b, eta_dec=e) for b, e in pairs(values, reference)]


def training_overrides(settings) -> dict:
    """The quick schedule (:data:`QUICK_STEPS`...); tiny and full keep ``training_options``' MLP defaults."""
    return quick_overrides(settings, steps=QUICK_STEPS, lr=QUICK_LR, final_lr_fraction=QUICK_FINAL_LR_FRACTION)


def schedule(settings) -> dict:
    """The SVI options every run of this experiment trains with."""
    return training_options(settings, kind="mlp") | training_overrides(settings)


def plan(settings) -> list[RunPlan]:
    """What :func:`run` trains (``ppl-vae reproduce`` prints it before a full job)."""
    return [RunPlan("MLP CVAE, beta and eta_dec lines", len(pairs(*grid(settings))), settings.n_seeds,
                    schedule(settings)["steps"])]


@torch.no_grad()
def completions(model, x: torch.Tensor, n_draws: int, seed: int) -> torch.Tensor:
    """Decoder means at ``n_draws`` draws z ~ p(z|x) per row of ``x``: shape ``(n_draws, n, y_dim)``."""
    model.eval()
    loc, scale = model.prior_params(x)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n_draws, *loc.shape), generator=generator, dtype=loc.dtype)
    return model.decoder_z(loc + scale * noise) + model.decoder_x(x)


@torch.no_grad()
def completion_metrics(model, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
    """``completion_spread``, ``completion_mse`` and ``posterior_mse`` of one model on rows ``(x, y)``."""
    draws = completions(model, x, N_DRAWS, seed)
    loc, _ = model.encoder(x, y)
    posterior = model.decoder_z(loc) + model.decoder_x(x)
    return {"completion_spread": float(draws.var(dim=0).mean().sqrt()),
            "completion_mse": float(((draws - y) ** 2).mean()),
            "posterior_mse": float(((posterior - y) ** 2).mean())}


def judge(summary: pd.DataFrame, reference: float) -> Verdict:
    """The rule, a pure function of the seed summary (counterfactual tests in ``tests/analyses``).

    Along beta (at eta_dec = ``reference``) and along eta_dec (at beta = 1):
    the completion spread falls and the posterior reconstruction error of y
    rises, each step against the direction at most max(resolution, 2 SE) (a
    flat segment passes), the end-to-end change larger than that. The
    completion error against the true y is reported, not judged.
    """
    checks = []
    for along, fixed, value in (("beta", "eta_dec", reference), ("eta_dec", "beta", 1.0)):
        rows = summary[(summary[fixed] - value).abs() < 1e-9]
        label = f"{fixed} {value:g}"
        checks += trend_checks(rows, along, "completion_spread", increasing=False,
                               floor=FLOORS["completion_spread"], label=label)
        checks += trend_checks(rows, along, "posterior_mse", increasing=True, floor=FLOORS["posterior_mse"],
                               label=label)
    rule = ("along beta and along eta_dec: completion spread (RMS over held-out rows and pixels of the std across "
            f"{N_DRAWS} prior draws) down and the posterior reconstruction MSE of y up (seed means; a step against "
            "the direction allowed up to max(resolution, 2 SE), the end-to-end change must exceed it); the "
            "completion MSE is reported, not judged")
    return Verdict(rule, tuple(checks), int(summary.n_seeds.min()))


def main(argv=None) -> ClaimCheck:
    """Parse the command line, run the experiment, return its claim check."""
    return run_script(__doc__, run, argv)


def run(settings) -> ClaimCheck:
    out = ExperimentOutput(settings.out, NAME, overwrite=settings.overwrite)
    train, test = image_data(settings, split="quadrant")
    values, reference = grid(settings)
    base = CVAEConfig(train.x.shape[1], train.y.shape[1], settings.pick(4, 16, 16), arch="mlp",
                      hidden_dims=(16,), latent_mapping="separate")
    configs = configurations(base, values, reference)
    options = schedule(settings)
    result = run_replicates(configs, train, settings, kind="mlp", **training_overrides(settings))
    combined = diagnose_sweep(result, train, test, settings, names=[run_name(c, ["beta", "eta_dec"])
                                                                   for c in result.configs])
    out.inference_data("diagnostics", combined, "diagnose() of every configuration and seed, combined along run")
    x, y = test.x.float(), test.y.float()
    measured = pd.DataFrame([completion_metrics(model, x, y, settings.seed) for model in result.models])
    table = pd.concat([collapse_table(combined), measured], axis=1)
    out.table("runs", table, f"per configuration and seed: collapse level (fraction of (point, dimension) pairs "
              f"with KL < 0.01) and active units of z; on the {test.n} held-out rows: completion spread (RMS std "
              f"across {N_DRAWS} draws z ~ p(z|x)), completion MSE and posterior reconstruction MSE of y (pixels)")
    summary = seed_summary(table, ["beta", "eta_dec"], METRICS)
    out.table("summary", summary, "seed means and standard errors per configuration")

    for along, fixed, value in (("beta", "eta_dec", reference), ("eta_dec", "beta", 1.0)):
        rows = table[(table[fixed] - value).abs() < 1e-9]
        out.figure(f"trends_{along}", seed_trends(rows, along, list(METRICS), title=f"{fixed} = {value:g}",
                                                  logx=True),
                   f"collapse level, active units, completion spread, completion MSE and posterior MSE against "
                   f"{along} ({fixed} = {value:g})")
        out.figure(f"completions_{along}",
                   completion_figure(result, test, along, fixed, value, settings.seed),
                   f"held-out inputs x (bottom-left quadrant) completed by draws z ~ p(z|x), one row per {along} "
                   f"({fixed} = {value:g}, seed {settings.seed}); each cell: {N_SHOWN_DRAWS} completions of one "
                   "input")

    verdict = judge(summary, reference)
    check = ClaimCheck.from_verdict(NAME, CLAIM, verdict, {
        "reference_eta_dec": reference, "n_draws": N_DRAWS, "heldout_rows": test.n, "steps": options["steps"],
        "lr": options["lr"], "final_lr_fraction": options["final_lr_fraction"],
        "completion_mse (reported, not judged)": {f"beta={row.beta:g},eta_dec={row.eta_dec:g}":
                                                  round(float(row.completion_mse_mean), 4)
                                                  for row in summary.itertuples()}})
    out.claim(check)
    return check


def completion_figure(result, test, along: str, fixed: str, value: float, seed: int):
    """Rows: the values of ``along``; columns: :data:`N_SHOWN` held-out inputs, each completed :data:`N_SHOWN_DRAWS`
    times by the model of that row (seed ``seed``)."""
    x, y = test.x[:N_SHOWN].float(), test.y[:N_SHOWN].float()
    cells = {}
    for config, model, run_seed in zip(result.configs, result.models, result.seeds):
        if run_seed != seed or not np.isclose(getattr(config, fixed), value):
            continue
        draws = completions(model, x, N_SHOWN_DRAWS, seed).numpy()
        for j in range(N_SHOWN):
            images = join_split(np.repeat(x[j:j + 1].numpy(), N_SHOWN_DRAWS, axis=0), draws[:, j], test.image_shape,
                                test.split)
            cells[(getattr(config, along), float(j + 1))] = images.reshape(N_SHOWN_DRAWS, -1)
    originals = join_split(x.numpy(), y.numpy(), test.image_shape, test.split).reshape(N_SHOWN, -1)
    return plots.reconstruction_matrix(originals, cells, test.image_shape, rows=along, columns="input",
                                       title=f"completions of held-out inputs, z ~ p(z|x) ({fixed} = {value:g}, "
                                             f"seed {seed})")


if __name__ == "__main__":
    result = main()
    print(f"{result.experiment}: agrees={result.agrees}")
    sys.exit(0)
