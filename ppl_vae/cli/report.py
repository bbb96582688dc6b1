"""``ppl-vae report``: one HTML page of collapse diagnostics for trained runs."""

from __future__ import annotations

import click

from ppl_vae.cli._common import output_path, threads_option
from ppl_vae.cli._errors import INPUT_ERRORS, input_error


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), callback=output_path,
              help="The HTML file to write (one self-contained page).")
@click.option("--iw-samples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Importance samples K per point for the held-out log-likelihood.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every diagnostic draw.")
@click.option("--device", default="auto", show_default=True,
              help="One of auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@threads_option()
def command(run_dirs, out, iw_samples, seed, device, overwrite, progress):
    """Diagnose RUN_DIR... (reusing each run's diagnostics.nc when it matches) and write --out.

    Each argument is a run directory (ppl-vae train / sweep) or an InferenceData
    file (.nc) saved from ppl_vae.diagnostics.diagnose, for instance of your
    own Pyro model. The page opens with "k of d latent dimensions collapsed; theory predicted m"
    for every run, then a table of metrics and the figures.
    """
    from ppl_vae.report.runs import write_report

    try:
        path = write_report(run_dirs, out, iw_samples=iw_samples, seed=seed, device=device,
                            overwrite=overwrite, progress=progress)
    except INPUT_ERRORS as err:
        raise input_error(err) from None
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    click.echo(f"wrote {path}")
