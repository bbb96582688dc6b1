"""``ppl-vae bench``: measure SVI throughput, convergence and sweeps, print a table."""

from __future__ import annotations

from pathlib import Path

import click

from ppl_vae._io import atomic_write, atomic_write_text


@click.command("bench")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              help="Where to run: data, weights and batches all live there.")
@click.option("--quick", is_flag=True, help="Small data and few repeats: a few minutes on a 2-core CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads for the run (default: 1 on the CPU, where these small models run "
                   "fastest and timings are steadiest on a shared machine; torch's default on CUDA).")
@click.option("--section", "sections",
              type=click.Choice(["throughput", "overhead", "time_to_theory", "sweep", "grid", "elbo_variance"]),
              multiple=True, help="Measure only these sections (repeatable; default: all).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Also write the table: .csv, .json or .nc (xarray) by suffix.")
def command(device: str, quick: bool, threads: int | None, sections: tuple[str, ...], out: str | None) -> None:
    """Benchmark Pyro SVI against plain PyTorch, time to the theory, and the vectorised sweep.

    Every figure is the median of several timed repeats after a warm-up, all in
    this one process, so ratios between variants are robust to machine noise.
    """
    from ppl_vae._device import resolve_device
    from ppl_vae.bench import bench_dataset, format_table, run_bench
    from ppl_vae.bench.run import SECTIONS

    if out is not None and Path(out).suffix not in (".csv", ".json", ".nc"):
        raise click.BadParameter("--out must end in .csv, .json or .nc", param_hint="--out")
    try:
        if threads is None and resolve_device(device).type == "cpu":
            threads = 1
        table = run_bench(device, quick=quick, threads=threads,
                          sections=sections or SECTIONS,
                          log=lambda line: click.echo(line, err=True))
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(format_table(table))
    from ppl_vae.bench.grid import headline

    for line in headline(table):
        click.echo(line)
    if out is not None:
        path = Path(out)
        if path.suffix == ".csv":
            atomic_write_text(path, table.to_csv(index=False))
        elif path.suffix == ".json":
            atomic_write_text(path, table.to_json(orient="records", indent=2))
        else:
            dataset = bench_dataset(table)
            atomic_write(path, lambda tmp: dataset.to_netcdf(tmp))
        click.echo(f"wrote {path}", err=True)
