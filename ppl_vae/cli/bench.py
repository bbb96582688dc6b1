"""``ppl-vae bench``: measure SVI throughput, convergence and sweeps, print a table."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ppl_vae._io import atomic_write, atomic_write_text
from ppl_vae._lock import claim_output
from ppl_vae.cli._common import output_path
from ppl_vae.cli._errors import INPUT_ERRORS, input_error


@click.command("bench")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              help="Where to run: data, weights and batches all live there.")
@click.option("--quick", is_flag=True, help="Small data and few repeats: a few minutes on a 2-core CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads for the run (default: 1 on the CPU, where these small models run "
                   "fastest and timings are steadiest on a shared machine; torch's default on CUDA).")
@click.option("--section", "sections",
              type=click.Choice(["throughput", "overhead", "time_to_theory", "sweep", "grid", "elbo_variance", "cold",
                                 "threads"]),
              multiple=True, help="Measure only these sections (repeatable; default: all).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Also write the table: .csv, .json or .nc (xarray) by suffix; never replaces a file unless "
                   "--overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def command(device: str, quick: bool, threads: int | None, sections: tuple[str, ...], out: str | None,
            overwrite: bool) -> None:
    """Benchmark Pyro SVI against plain PyTorch, time to the theory, and the vectorised sweep.

    Every figure is the median of several timed repeats after a warm-up, all in
    this one process, so ratios between variants are robust to machine noise.
    """
    if out is not None and Path(out).suffix not in (".csv", ".json", ".nc"):
        raise click.BadParameter("--out must end in .csv, .json or .nc", param_hint="--out")
    try:
        # Claimed and checked before minutes of measuring, written without replacing at the end.
        with claim_output(out, "ppl-vae bench", directory=False) if out else contextlib.nullcontext():
            if out is not None and Path(out).exists() and not overwrite:
                raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
            table = _measure(device, quick, threads, sections)
            if out is not None:
                _write_table(table, Path(out), exclusive=not overwrite)
    except INPUT_ERRORS as err:
        raise input_error(err) from None


def _measure(device: str, quick: bool, threads: int | None, sections: tuple[str, ...]):
    """Run the bench, print its table and headline; a bad option becomes a one-line error."""
    from ppl_vae._device import resolve_device
    from ppl_vae.bench import format_table, run_bench
    from ppl_vae.bench.grid import headline
    from ppl_vae.bench.run import SECTIONS

    try:
        if threads is None and resolve_device(device).type == "cpu":
            threads = 1
        table = run_bench(device, quick=quick, threads=threads, sections=sections or SECTIONS,
                          log=lambda line: click.echo(line, err=True))
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(format_table(table))
    for line in headline(table):
        click.echo(line)
    return table


def _write_table(table, path: Path, *, exclusive: bool) -> None:
    """The table as .csv, .json or .nc (by suffix), atomically; ``exclusive``: never over an existing file."""
    from ppl_vae.bench import bench_dataset

    if path.suffix == ".csv":
        atomic_write_text(path, table.to_csv(index=False), exclusive=exclusive)
    elif path.suffix == ".json":
        atomic_write_text(path, table.to_json(orient="records", indent=2), exclusive=exclusive)
    else:
        dataset = bench_dataset(table)
        atomic_write(path, lambda tmp: dataset.to_netcdf(tmp), exclusive=exclusive)
    click.echo(f"wrote {path}", err=True)
