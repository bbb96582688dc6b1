"""``ppl-vae reproduce``: run the paper's experiments and write one HTML report."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from ppl_vae.cli._common import LazyChoice, output_path, threads_option
from ppl_vae.cli._errors import INPUT_ERRORS, input_error


def _experiments() -> list[str]:
    from ppl_vae.reproduce import EXPERIMENTS  # imports the analyses' dependencies: not for --help

    return list(EXPERIMENTS)


@click.command("reproduce")
@click.option("--quick", is_flag=True, help="Embedded data (synthetic + 8x8 digits), short training: minutes on a CPU.")
@click.option("--tiny", is_flag=True, hidden=True, help="A few steps on tiny data (for tests).")
@click.option("--only", "only", multiple=True, type=LazyChoice(_experiments, "EXPERIMENT"),
              help="Run only this experiment (repeatable; the names are the analyses/ scripts'). Default: all.")
@click.option("--out", type=click.Path(file_okay=False), default="results/reproduce", show_default=True,
              callback=output_path,
              help="Results folder; must be new or empty unless --overwrite.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="First seed: data splits use it, replicate k trains from seed + k.")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=None,
              help="Replicates per configuration; trends are judged on seed means. [default: quick 3, full 5]")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, hidden=True,
              help="Cap every run's SVI steps (tests of the full-scale plumbing only).")
@click.option("--mnist-dir", type=click.Path(file_okay=False), default="data/mnist", show_default=True,
              help="MNIST IDX files for the full mode (nothing is downloaded).")
@click.option("--overwrite", is_flag=True, help="Reuse a non-empty results folder.")
@threads_option(0, " Shared equally among the --jobs; the full scale's runs use their share, the quick scale's "
                "small models run on one (two for full-batch image runs, within the share).")
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Experiments run at once, each in a process of its own with an equal share of --threads; 0: one "
                   "per CPU core at the --quick scale, one at the full scale (its runs share one GPU). 1: one "
                   "after another in this process.")
@click.option("--resume", is_flag=True,
              help="Continue a job in --out started with the same options: finished experiments are kept, the "
                   "others run again.")
@click.option("--objective", type=click.Choice(["standard", "authors"]), default="standard", show_default=True,
              help="Non-linear experiments: the standard beta-ELBO, or the authors' ReLU-script objective "
                   "(||y - mu||^2 / eta_dec^2 + beta KL with a gradient-norm clip of 0.01: twice the -ELBO at KL "
                   "weight beta / 2). Linear experiments always use the standard beta-ELBO.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print what the job would train (configurations x steps x seeds per experiment, and an estimate "
                   "of GPU hours) and stop. Full mode prints it before it starts anyway.")
@click.option("--analyses-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the analysis scripts (default: analyses/ of the source checkout).")
def command(quick, tiny, only, out, device, seed, n_seeds, max_steps, mnist_dir, overwrite, jobs, resume, objective,
            plan_only, analyses_dir) -> None:
    """Reproduce the experiments of Dang et al. (ICLR 2024); see docs/science.md and analyses/RESULTS.md.

    Without --quick the experiments run at the paper's scale on MNIST (local
    IDX files in --mnist-dir) and are meant for a GPU (--device cuda). Writes
    OUT/index.html: a summary table (each experiment's claim and whether the
    measured numbers agree) followed by every figure and table; OUT/RESULTS.md
    the same as Markdown (analyses/RESULTS.md is the quick job's). Exits with
    status 1 if any experiment failed.
    """
    from ppl_vae._io import RunDirectoryExistsError
    from ppl_vae.reproduce import Settings, run_experiments, write_index
    from ppl_vae.reproduce.markdown import write_results_markdown
    from ppl_vae.reproduce.report import INDEX

    if quick and tiny:
        raise click.UsageError("give at most one of --quick and --tiny")
    scale = "tiny" if tiny else "quick" if quick else "full"
    settings = Settings(scale=scale, out=Path(out), seed=seed, device=device, mnist_dir=Path(mnist_dir),
                        overwrite=overwrite, n_seeds=n_seeds, max_steps=max_steps, objective=objective)
    start = time.perf_counter()
    # Rebuilt from the parsed options (sys.argv is not this command's when called in process).
    words = ["ppl-vae", "reproduce", *([f"--{scale}"] if scale != "full" else []),
             *[w for name in only for w in ("--only", name)], "--out", str(out), "--seed", str(seed),
             "--seeds", str(settings.n_seeds), *(["--max-steps", str(max_steps)] if max_steps else []),
             "--device", device, *(["--mnist-dir", str(mnist_dir)] if scale == "full" else []),
             *(["--objective", objective] if objective != "standard" else []),
             *(["--jobs", str(jobs)] if jobs else [])]
    command_line = " ".join(shlex.quote(word) for word in words)

    if plan_only or scale == "full":  # the cost of a full job, before it starts
        click.echo(_plan_text(settings, list(only), analyses_dir))
        if plan_only:
            return

    def finish(outcomes) -> None:  # while the results folder is still claimed
        write_index(settings.out, outcomes, scale=scale, command=command_line)
        write_results_markdown(settings.out, outcomes, command=command_line, wall_time=time.perf_counter() - start,
                               scale=settings.scale, objective=objective)

    try:
        outcomes = run_experiments(settings, list(only) or None, analyses_dir=analyses_dir, finish=finish,
                                   resume=resume, jobs=jobs or None)
    except RunDirectoryExistsError as err:
        raise click.ClickException(f"{err} (nothing was run)") from None
    except INPUT_ERRORS as err:
        raise input_error(err) from None
    index = settings.out / INDEX
    failed = [o.name for o in outcomes if o.status == "failed"]
    agree = sum(o.status == "agrees" for o in outcomes)
    unconverged = sum(o.status == "not converged" for o in outcomes)
    click.echo(f"{agree}/{len(outcomes)} experiments agree with the paper; {unconverged} not converged (no "
               f"verdict); {len(failed)} failed; "
               f"{time.perf_counter() - start:.0f} s. Report: {index}")
    if failed:
        click.echo(f"failed: {', '.join(failed)} (details in {index})", err=True)
        sys.exit(1)


def _plan_text(settings, only: list[str], analyses_dir) -> str:
    """:func:`ppl_vae.reproduce.plan.describe_plan` of the selected experiments, with the settings it is for."""
    from ppl_vae.reproduce.plan import describe_plan, plan_experiments
    from ppl_vae.reproduce.runner import check_names, find_analyses_dir

    try:
        plans = plan_experiments(settings, check_names(only or None), find_analyses_dir(analyses_dir))
    except INPUT_ERRORS as err:
        raise input_error(err) from None
    return (f"Plan ({settings.scale} scale, {settings.n_seeds} seeds, objective {settings.objective}):\n"
            + describe_plan(plans))
