"""What a reproduce job will train, before it trains it: configurations x steps x seeds, and a time estimate.

An analysis script may declare its training runs with ``plan(settings) ->
list[RunPlan]``, computed from the same functions its ``run`` uses (grid,
configurations, schedule), so the two cannot drift apart; the test suite
checks every declared plan against the calls of the tiny-scale run.
:func:`plan_experiments` collects the plans of a job, :func:`describe_plan`
prints them: ``ppl-vae reproduce`` does so before a full-scale job starts (and
``--plan`` prints them and stops). A script without ``plan`` is listed as "not
declared": its cost is unknown, and the total says so.

The hours are an estimate: the training steps one after another (a vectorised
run of K configurations is one step per step; runs declared not vectorised
train one after another) times
:data:`GPU_SECONDS_PER_STEP`, an assumption, not a measurement (no GPU was
available when it was set; ``ppl-vae bench --device cuda`` measures it). It
leaves out the diagnostics (importance sampling with K = 1000 in full mode),
which add to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

#: Assumed seconds per SVI step on one GPU, for one vectorised run of small configurations or one CNN run: Pyro
#: steps of models this size are bound by Python and kernel launches, not arithmetic. Not measured (see above).
GPU_SECONDS_PER_STEP = 0.005


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One group of training runs of an experiment.

    Attributes
    ----------
    label
        What is trained (e.g. ``"MLP MHVAE, beta1 / beta2 / eta_dec lines"``).
    configs
        Configurations (hyper-parameter sets).
    seeds
        Replicates of each configuration.
    steps
        SVI steps of each run.
    vectorised
        True when all ``configs * seeds`` runs train together as one batched
        run; False when they train one after another (e.g. ``vectorise='never'``).
    """

    label: str
    configs: int
    seeds: int
    steps: int
    vectorised: bool = True

    @property
    def runs(self) -> int:
        """Training runs: configurations x seeds."""
        return self.configs * self.seeds

    @property
    def sequential_steps(self) -> int:
        """Steps taken one after another: ``steps`` for a vectorised group, ``runs * steps`` otherwise."""
        return self.steps if self.vectorised else self.runs * self.steps

    def hours(self, seconds_per_step: float = GPU_SECONDS_PER_STEP) -> float:
        """Estimated training hours on one GPU (:data:`GPU_SECONDS_PER_STEP` per sequential step)."""
        return self.sequential_steps * seconds_per_step / 3600.0


def plan_experiments(settings, names: Sequence[str], analyses_dir) -> dict[str, list[RunPlan] | None]:
    """Each experiment's declared ``plan(settings)`` in ``names`` order: None for a script that declares none, or
    whose plan is sized by data files that are missing."""
    from ppl_vae.reproduce.analysis import MissingDataError
    from ppl_vae.reproduce.runner import load_script

    plans: dict[str, list[RunPlan] | None] = {}
    for name in names:
        module = load_script(name, analyses_dir)
        declared = getattr(module, "plan", None)
        try:
            plans[name] = None if declared is None else list(declared(settings))
        except MissingDataError:  # a plan sized by its data (e.g. full mode's MNIST rows) without the files
            plans[name] = None
    return plans


def describe_plan(plans: Mapping[str, Sequence[RunPlan] | None], *,
                  seconds_per_step: float = GPU_SECONDS_PER_STEP) -> str:
    """A text table: per experiment and group, configurations x steps x seeds, runs and estimated GPU hours;
    then the total, and which experiments declared no plan (their cost is not in it)."""
    lines = [f"{'experiment':32s} {'what':56s} {'configs x steps x seeds':>24s} {'runs':>6s} {'GPU h':>7s}"]
    total, missing = 0.0, []
    for name, groups in plans.items():
        if groups is None:
            missing.append(name)
            lines.append(f"{name:32s} {'(no plan, or its data is missing)':56s} {'?':>24s} {'?':>6s} {'?':>7s}")
            continue
        for group in groups:
            hours = group.hours(seconds_per_step)
            total += hours
            shape = f"{group.configs} x {group.steps:,} x {group.seeds}"
            label = group.label + ("" if group.vectorised else " (one after another)")
            lines.append(f"{name:32s} {label:56s} {shape:>24s} {group.runs:6d} {hours:7.2f}")
    lines.append(f"total: about {total:.2f} GPU hours ({total * 60:.0f} min) of training at an assumed "
                 f"{seconds_per_step * 1000:g} ms per step (not measured; diagnostics not included)"
                 + (f"; no plan (or its data missing) for {', '.join(missing)} (not in the total)" if missing else ""))
    return "\n".join(lines)
