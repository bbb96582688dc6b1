"""``ppl-vae theory``: which latent modes of a linear model collapse, from the data alone."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ppl_vae._io import write_netcdf
from ppl_vae._validate import check_grid_size

if TYPE_CHECKING:
    import xarray as xr
from ppl_vae.cli._common import data_options, load_data, output_path, parse_float_list, parse_int_list

#: Settings ``ppl-vae theory`` computes without ``--yes`` (each prints a table).
THEORY_GRID_LIMIT = 10_000

# Variables shown in the per-mode table, in this order, for each model.
_TABLE_COLUMNS = {
    "vae": ("theta", "decoder_sv", "encoder_sv", "encoder_std", "collapsed"),
    "cvae": ("theta", "decoder_sv", "encoder_std", "collapsed"),
    "mhvae": ("theta", "z1_encoder_sv", "z2_decoder_sv", "z2_encoder_std", "z1_collapsed", "z2_collapsed"),
}


def predict(family: str, bundle, *, latent_dim: int, latent_dims: tuple[int, int], beta: float, beta1: float,
            beta2: float, eta_enc: float, eta_dec: float, encoder_std, sigma1: float, sigma2) -> xr.Dataset:
    """The closed-form prediction of ``ppl_vae.theory`` for one hyper-parameter setting."""
    from ppl_vae import theory

    x = bundle.x.numpy()
    if family == "vae":
        return theory.linear_vae(x, latent_dim, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec, encoder_std=encoder_std)
    if family == "cvae":
        return theory.linear_cvae(x, bundle.y.numpy(), latent_dim, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)
    return theory.linear_mhvae(x, latent_dims, beta1=beta1, beta2=beta2, eta_enc=eta_enc, eta_dec=eta_dec,
                               sigma1=sigma1, sigma2=sigma2)


def collapsed_count(family: str, prediction: xr.Dataset) -> dict[str, int]:
    """Number of collapsed modes per latent level."""
    if family == "mhvae":
        return {"z1": int(prediction["z1_collapsed"].sum()), "z2": int(prediction["z2_collapsed"].sum())}
    return {"z": int(prediction["collapsed"].sum())}


def format_table(family: str, prediction: xr.Dataset) -> str:
    """The per-mode table as fixed-width text."""
    columns = [name for name in _TABLE_COLUMNS[family] if name in prediction]
    frame = prediction[columns].to_dataframe()
    return frame.to_string(float_format=lambda value: f"{value:.6g}")


def _data_scale_eta_dec(family: str, bundle, latent_dim: int, latent_dims) -> float:
    """:func:`ppl_vae.theory.data_scale_eta_dec` on the bundle, rounded to three significant digits."""
    from ppl_vae import theory

    x = bundle.x.numpy()
    if family == "cvae":
        spectrum, k = theory.cvae_thetas(x, bundle.y.numpy()), latent_dim
    else:
        spectrum, k = theory.vae_thetas(x), (latent_dims[0] if family == "mhvae" else latent_dim)
    return float(f"{theory.data_scale_eta_dec(spectrum, k, model=family):.3g}")


def _all_collapsed_advice(family: str, prediction: xr.Dataset) -> list[str]:
    """For each level where every mode collapsed: why, and the change that keeps one mode active."""
    from ppl_vae.report.advice import format_limit, what_to_change

    sites = ["z1", "z2"] if family == "mhvae" else ["z"]
    try:
        tables = what_to_change(prediction, sites)
    except (ValueError, KeyError):
        return []
    lines = []
    for change in tables:
        if change.predicted_active > 0 or change.table.sizes["n_active"] < 2:
            continue
        options = [f"{name} {format_limit(float(change.table[var].sel(n_active=1)), relation)}"
                   for var, name, relation in change.columns
                   if float(change.table[var].sel(n_active=1)) not in (0.0, float("inf"))]
        lines.append(f"{change.site}: every mode collapsed: the strongest theta is below the threshold that "
                     f"beta and eta_dec set against the data's scale. To keep one mode active: "
                     + (" or ".join(options) if options else "no single change of beta or eta_dec does")
                     + " (--thresholds lists every k).")
    return lines


def _describe_setting(family: str, setting: dict[str, float]) -> str:
    keys = ("beta1", "beta2", "eta_dec") if family == "mhvae" else ("beta", "eta_dec")
    return ", ".join(f"{key}={setting[key]:g}" for key in keys)


@click.command("theory")
@click.option("--model", "family", type=click.Choice(["vae", "cvae", "mhvae"]), default="cvae", show_default=True,
              help="Linear model family.")
@data_options
@click.option("--latent-dim", type=int, default=16, show_default=True, help="Latent dimension (vae, cvae).")
@click.option("--latent-dims", callback=parse_int_list, default="16,16", show_default=True,
              help="MHVAE latent dimensions d1,d2.")
@click.option("--beta", callback=parse_float_list("--beta"), default="1", show_default=True,
              help="KL weight (vae, cvae); a comma-separated list gives a grid.")
@click.option("--beta1", callback=parse_float_list("--beta1"), default="1", show_default=True,
              help="MHVAE KL weight on z1; a list gives a grid.")
@click.option("--beta2", callback=parse_float_list("--beta2"), default="1", show_default=True,
              help="MHVAE KL weight on z2; a list gives a grid.")
@click.option("--eta-dec", callback=parse_float_list("--eta-dec"), default=None,
              help="Decoder noise std; a list gives a grid.  Default: one on the data's scale (the noise std "
                   "probabilistic PCA fits with the latent dimension's components).")
@click.option("--eta-enc", type=float, default=1.0, show_default=True, help="Prior std.")
@click.option("--encoder-std", callback=parse_float_list("--encoder-std"), default=None,
              help="VAE: fixed encoder std (one value or one per latent dimension); default learnable.")
@click.option("--sigma1", type=float, default=1.0, show_default=True, help="MHVAE fixed z1 encoder std.")
@click.option("--sigma2", type=float, default=None, help="MHVAE fixed z2 encoder std; default learnable.")
@click.option("--thresholds", is_flag=True,
              help="Also print the largest beta / eta_dec (MHVAE: beta1, beta2, eta_dec) that keep k modes active.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Write the prediction(s) as netCDF.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --out file.")
@click.option("--yes", is_flag=True, help=f"Compute a grid of more than {THEORY_GRID_LIMIT:,} settings.")
def command(family, data_name, x_key, y_key, label_key, image_shape, split, classes, n_samples, dim, correlation, data_seed, mnist_dir, latent_dim,
            latent_dims, beta, beta1, beta2, eta_dec, eta_enc, encoder_std, sigma1, sigma2, thresholds, out,
            overwrite, yes):
    """Predict which latent modes of a linear VAE, CVAE or MHVAE collapse (closed form, no training).

    Prints one table per hyper-parameter setting (mode 0 = largest theta) and the
    number of collapsed modes; lists of --beta/--eta-dec give a grid and a summary.
    """
    from ppl_vae import theory

    out = None if out is None else Path(out)
    if out is not None and out.exists() and not overwrite:
        raise click.ClickException(f"{out} already exists; pass --overwrite to replace it")
    if family == "mhvae" and (latent_dims is None or len(latent_dims) != 2):
        raise click.BadParameter("--latent-dims takes two integers d1,d2", param_hint="--latent-dims")
    if family != "vae" and encoder_std is not None:
        raise click.BadParameter("--encoder-std applies to --model vae only", param_hint="--encoder-std")
    encoder_std_arg = None if encoder_std is None else (encoder_std[0] if len(encoder_std) == 1 else encoder_std)

    n_eta_dec = 1 if eta_dec is None else len(eta_dec)  # None: one noise level on the data's scale
    sizes = (len(beta1), len(beta2), n_eta_dec) if family == "mhvae" else (len(beta), n_eta_dec)
    try:  # counted as a product before anything is expanded or loaded
        check_grid_size("the theory grid (--beta x --eta-dec)", math.prod(sizes), THEORY_GRID_LIMIT, yes)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    bundle = load_data(family, data_name, split=split, classes=classes, n_samples=n_samples, dim=dim,
                       correlation=correlation, data_seed=data_seed, mnist_dir=mnist_dir,
                       x_key=x_key, y_key=y_key, label_key=label_key, image_shape=image_shape)
    given_eta_dec = eta_dec
    if eta_dec is None:
        eta_dec = (_data_scale_eta_dec(family, bundle, latent_dim, latent_dims),)
    grid_axes = {"beta1": beta1, "beta2": beta2} if family == "mhvae" else {"beta": beta}
    grid_axes["eta_dec"] = eta_dec
    settings = [dict(zip(grid_axes, values)) for values in itertools.product(*grid_axes.values())]

    shape = f"x {tuple(bundle.x.shape)}" + ("" if bundle.y is None else f", y {tuple(bundle.y.shape)}")
    click.echo(f"data: {bundle.name} ({shape})   model: linear {family}")
    if given_eta_dec is None:
        k = latent_dims[0] if family == "mhvae" else latent_dim
        click.echo(f"eta_dec not given: using {eta_dec[0]:g}, the noise std that probabilistic PCA with {k} "
                   "components fits to these data (their scale); --eta-dec sets it")
    predictions = []
    for setting in settings:
        try:
            prediction = predict(
                family, bundle, latent_dim=latent_dim, latent_dims=tuple(latent_dims or ()),
                beta=setting.get("beta", 1.0), beta1=setting.get("beta1", 1.0), beta2=setting.get("beta2", 1.0),
                eta_enc=eta_enc, eta_dec=setting["eta_dec"], encoder_std=encoder_std_arg, sigma1=sigma1,
                sigma2=sigma2,
            )
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
        predictions.append(prediction)
        counts = collapsed_count(family, prediction)
        n_modes = {level: int(prediction.sizes["mode"]) for level in counts}
        click.echo(f"\n{_describe_setting(family, setting)}")
        click.echo(format_table(family, prediction))
        click.echo("collapsed: " + ", ".join(f"{level} {counts[level]} of {n_modes[level]}" for level in counts))
        for line in _all_collapsed_advice(family, prediction):
            click.echo(line)

    if len(settings) > 1:
        click.echo("\nsummary (collapsed modes per setting):")
        for setting, prediction in zip(settings, predictions):
            counts = collapsed_count(family, prediction)
            click.echo(f"  {_describe_setting(family, setting):<32} "
                       + ", ".join(f"{level}: {count}" for level, count in counts.items()))

    if thresholds and family == "mhvae":
        table = theory.mhvae_collapse_thresholds(
            bundle.x.numpy(), tuple(latent_dims), beta1=settings[0]["beta1"], beta2=settings[0]["beta2"],
            eta_dec=settings[0]["eta_dec"], sigma1=sigma1)
        if sigma2 is not None:
            click.echo("\nthresholds: derived for a learnable z2 variance (Theorem 3) only; --sigma2 fixes it")
        else:
            click.echo("\nthresholds (z1_*_max / z2_*_max: largest value keeping at least n_active modes of that "
                       "level active; z2_beta1_min: smallest beta1 doing so):")
            click.echo(table.to_dataframe().to_string(float_format=lambda value: f"{value:.6g}"))
    elif thresholds:
        table = theory.collapse_thresholds(
            bundle.x.numpy(), None if bundle.y is None else bundle.y.numpy(), model=family, latent_dim=latent_dim,
            beta=settings[0].get("beta", 1.0), eta_dec=settings[0]["eta_dec"], eta_enc=eta_enc,
        )
        click.echo("\nthresholds (largest value that keeps at least n_active modes active):")
        click.echo(table.to_dataframe().to_string(float_format=lambda value: f"{value:.6g}"))

    if out is not None:
        if len(settings) > 1:
            # One dimension per grid axis, so that "collapse vs beta" is a plain .sel().
            import xarray as xr

            combined = xr.combine_by_coords(
                [prediction.expand_dims({key: [value] for key, value in setting.items()})
                 for setting, prediction in zip(settings, predictions)],
                combine_attrs="drop_conflicts",
            )
        else:
            combined = predictions[0]
        combined.attrs.update({"data": bundle.name, "data_spec": str(bundle.attrs.get("spec", {}))})
        write_netcdf(combined, out, exclusive=not overwrite)
        click.echo(f"\nwrote {out}")
