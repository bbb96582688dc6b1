"""``ppl-vae train``: fit one model by SVI and write a run directory.

With ``--resume`` the model, the data and the training options are read back
from the run directory's ``config.json``; an option given that differs from the
saved value is refused by name (see :mod:`ppl_vae.cli._resume`), and
``--steps`` / ``--epochs`` give the new total length.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import click

from ppl_vae.cli._common import (INPUT_ERRORS, data_options, input_error, load_data, output_path, parse_int_list,
                                 threads_option)

from ppl_vae.cli._program import program_options
FAMILIES = ("vae", "cvae", "mhvae")


def _std_option(value: str | None) -> float | None:
    """``'learnable'`` (or nothing) -> None, else a number."""
    if value is None or str(value).lower() == "learnable":
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"expected a positive number or 'learnable', got {value!r}") from None


def kl_control_fields(family: str, *, kl_warmup: str | None, kl_cycle: str | None, kl_cycle_ratio: str | None,
                      free_bits: str | None, steps_per_epoch: int | None = None) -> dict[str, Any]:
    """Config fields of the KL controls from CLI values: one number, or ``a,b`` per MHVAE level.

    ``kl_warmup`` / ``kl_cycle`` are steps, or epochs with an ``e`` suffix (``5e``)
    when ``steps_per_epoch`` is known.
    """
    from ppl_vae.models.config import KL_CONTROLS

    levels = ("1", "2") if family == "mhvae" else ("",)
    fields: dict[str, Any] = {}
    for name, raw in zip(KL_CONTROLS, (kl_warmup, kl_cycle, kl_cycle_ratio, free_bits)):
        if raw is None:
            continue
        parts = [part.strip() for part in str(raw).split(",")]
        if len(parts) == 1:
            parts = parts * len(levels)
        if len(parts) != len(levels):
            raise ValueError(f"--{name.replace('_', '-')} takes one value or one per latent level "
                             f"({len(levels)}), got {raw!r}")
        for level, part in zip(levels, parts):
            fields[f"{name}{level}"] = _control_value(name, part, steps_per_epoch)
    return fields


def _control_value(name: str, text: str, steps_per_epoch: int | None) -> float | int:
    option = f"--{name.replace('_', '-')}"
    try:
        if name in ("kl_warmup", "kl_cycle"):
            if text.endswith("e"):
                if steps_per_epoch is None:
                    raise ValueError
                return int(round(float(text[:-1]) * steps_per_epoch))
            return int(text)
        return float(text)
    except ValueError:
        unit = "steps, or epochs as e.g. 5e" if name in ("kl_warmup", "kl_cycle") else "a number"
        raise ValueError(f"{option} must be {unit}, got {text!r}") from None


def build_config(family: str, bundle, *, arch: str, latent_dim: int, latent_dims, hidden, beta: float,
                 beta1: float, beta2: float, eta_enc: float, eta_dec: float, encoder_std, sigma1, sigma2,
                 prior: str, latent_mapping: str, kl_controls: dict[str, Any] | None = None):
    """The model config for ``family`` with dimensions taken from ``bundle``."""
    from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig

    common: dict[str, Any] = {"arch": arch, "hidden_dims": tuple(hidden), "eta_enc": eta_enc, "eta_dec": eta_dec,
                              "image_shape": bundle.image_shape if arch == "cnn" else None, **(kl_controls or {})}
    if family == "vae":
        return VAEConfig(bundle.x.shape[1], latent_dim, beta=beta, encoder_std=encoder_std, **common)
    if family == "cvae":
        if bundle.y is None:
            raise ValueError("the CVAE needs paired data (x, y)")
        return CVAEConfig(bundle.x.shape[1], bundle.y.shape[1], latent_dim, beta=beta, prior=prior,
                          latent_mapping=latent_mapping, split=bundle.split if arch == "cnn" else None, **common)
    return MHVAEConfig(bundle.x.shape[1], tuple(latent_dims), beta1=beta1, beta2=beta2, sigma1=sigma1,
                       sigma2=sigma2, **common)


def summary_lines(result, info_theory: dict | None) -> list[str]:
    """The closing summary printed after training (with a warning line when a linear model did not converge)."""
    from ppl_vae.inference.convergence import summary_line

    lines = [f"final loss {result.final_loss:.6g} nats/sample after {result.steps} steps "
             f"({result.wall_time:.1f} s on {result.device})"]
    warning = summary_line(result.convergence)
    if warning is not None:
        lines.append(f"warning: {warning} (metrics.json: converged false)")
    if info_theory is not None:
        lines.append(f"collapsed modes: measured {info_theory['n_collapsed_measured']}, "
                     f"predicted {info_theory['n_collapsed_predicted']}; max relative error of active "
                     f"decoder singular values {info_theory['max_rel_error_active_decoder_sv']:.3g}")
    if result.run_dir is not None:
        lines.append(f"run directory: {result.run_dir}")
    return lines


@click.command("train")
@program_options
@threads_option()
@click.option("--model", "family", type=click.Choice(FAMILIES), default="cvae", show_default=True,
              help="Model family.")
@click.option("--arch", type=click.Choice(["linear", "mlp", "cnn"]), default="linear", show_default=True,
              help="Encoder/decoder architecture (cnn needs image data).")
@data_options
@click.option("--latent-dim", type=int, default=8, show_default=True, help="Latent dimension (vae, cvae).")
@click.option("--latent-dims", callback=parse_int_list, default="8,8", show_default=True,
              help="MHVAE latent dimensions d1,d2.")
@click.option("--hidden", callback=parse_int_list, default="128", show_default=True,
              help="Hidden widths of the mlp/cnn networks, e.g. 128,128.")
@click.option("--beta", type=float, default=1.0, show_default=True, help="KL weight (vae, cvae).")
@click.option("--beta1", type=float, default=1.0, show_default=True, help="MHVAE weight of the z1 term.")
@click.option("--beta2", type=float, default=1.0, show_default=True, help="MHVAE weight of the z2 KL.")
@click.option("--eta-enc", type=float, default=1.0, show_default=True, help="Prior std.")
@click.option("--eta-dec", type=float, default=1.0, show_default=True, help="Decoder noise std.")
@click.option("--encoder-std", default=None, help="VAE: fixed encoder std (default: learnable).")
@click.option("--sigma1", default="1.0", show_default=True, help="MHVAE: fixed std of q(z1|x), or 'learnable'.")
@click.option("--sigma2", default="learnable", show_default=True,
              help="MHVAE: fixed std of q(z2|z1), or 'learnable'.")
@click.option("--prior", type=click.Choice(["standard", "learned"]), default="standard", show_default=True,
              help="CVAE prior: N(0, eta_enc^2) or a learned p(z|x).")
@click.option("--latent-mapping", type=click.Choice(["joint", "separate"]), default="joint", show_default=True,
              help="CVAE encoder: shared network on (x, y), or separate latent mappings of x and y.")
@click.option("--kl-warmup", default=None,
              help="Linear KL warm-up length: steps, or epochs as e.g. 5e (MHVAE: one or 'z1,z2').")
@click.option("--kl-cycle", default=None, help="Cyclical KL annealing period: steps or epochs (5e).")
@click.option("--kl-cycle-ratio", default=None, help="Fraction of each cycle spent ramping up (default 0.5).")
@click.option("--free-bits", default=None, help="Free-bits floor per latent dimension, nats (MHVAE: one or 'z1,z2').")
@click.option("--steps", type=int, default=None, help="Training steps (or --epochs).")
@click.option("--epochs", type=int, default=None, help="Training epochs (or --steps).")
@click.option("--batch-size", type=int, default=None, help="Minibatch size (default: full batch).")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--lr-decay", type=float, default=1.0, show_default=True,
              help="Per-step learning-rate decay: lr_t = lr * lr_decay**t.")
@click.option("--optimizer", type=click.Choice(["adam", "clipped_adam"]), default="adam", show_default=True)
@click.option("--clip-norm", type=float, default=None, help="Gradient clipping.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of initialisation, batches and MC draws.")
@click.option("--test-fraction", type=float, default=0.1, show_default=True,
              help="Fraction of the data held out (not trained on) for the report's held-out metrics; 0 keeps all.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, callback=output_path,
              help="Run directory to write.")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True, help="Steps between checkpoints.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run in an existing run directory (its files are removed before training starts).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--jit/--no-jit", default=True, show_default=True,
              help="Record the loss once per batch shape (checked against the eager loss before it is trusted); "
                   "--no-jit runs every step eagerly.")
def command(program, settings, jit, family, arch, data_name, x_key, y_key, label_key, image_shape, split, classes, n_samples, dim, correlation, data_seed, mnist_dir, latent_dim,
            latent_dims, hidden, beta, beta1, beta2, eta_enc, eta_dec, encoder_std, sigma1, sigma2, prior,
            latent_mapping, kl_warmup, kl_cycle, kl_cycle_ratio, free_bits, steps, epochs, batch_size, lr, lr_decay, optimizer, clip_norm, seed, test_fraction,
            device, out, checkpoint_every, overwrite, resume, progress):
    """Train a model by SVI and write config, checkpoint, loss history and metrics to --out."""
    import torch

    from ppl_vae._provenance import check_before_training
    from ppl_vae.data.holdout import check_split
    from ppl_vae.inference import TrainingDivergedError, fit
    from ppl_vae.inference.convergence import NotConvergedWarning
    from ppl_vae.models import build_model, config_from_dict

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    run_dir = Path(out)
    if program is not None:
        _train_program(program, settings, run_dir, family=family, data_name=data_name, split=split, classes=classes,
                       n_samples=n_samples, dim=dim, correlation=correlation, data_seed=data_seed, mnist_dir=mnist_dir,
                       x_key=x_key, y_key=y_key, label_key=label_key, image_shape=image_shape,
                       fit_options={"steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                                    "optimizer": optimizer, "lr_decay": lr_decay, "clip_norm": clip_norm, "seed": seed,
                                    "test_fraction": test_fraction, "split_seed": seed, "device": device,
                                    "checkpoint_every": checkpoint_every, "jit": jit},
                       resume=resume, overwrite=overwrite, progress=progress)
        return
    elif settings:
        raise click.UsageError("--set gives the keyword arguments of a --program's builder")
    try:
        if resume:
            from ppl_vae.cli._resume import read_resumable
            from ppl_vae.data import load

            saved = read_resumable(run_dir, click.get_current_context(), _std_option)
            config = config_from_dict(saved["model"])
            bundle = load(**saved["data"])
            train = saved["train"]
            batch_size, lr, lr_decay = train["batch_size"], train["lr"], train["lr_decay"]
            optimizer = train["optimizer"]
            clip_norm, seed, checkpoint_every = train["clip_norm"], saved["seed"], train["checkpoint_every"]
            test_fraction = train.get("test_fraction", 0.0)
            if steps is None and epochs is None:
                steps, epochs = train["steps"], None
        else:
            if steps is None and epochs is None:
                raise click.UsageError("give --steps or --epochs")
            bundle = load_data(family, data_name, split=split, classes=classes, n_samples=n_samples, dim=dim,
                               correlation=correlation, data_seed=data_seed, mnist_dir=mnist_dir,
                               x_key=x_key, y_key=y_key, label_key=label_key, image_shape=image_shape)
            n_train = check_split(bundle.n, test_fraction, "--test-fraction")[0]  # 0.999 of 80 rows: refused
            steps_per_epoch = math.ceil(n_train / min(batch_size or n_train, n_train))
            controls = kl_control_fields(family, kl_warmup=kl_warmup, kl_cycle=kl_cycle,
                                         kl_cycle_ratio=kl_cycle_ratio, free_bits=free_bits,
                                         steps_per_epoch=steps_per_epoch)
            config = build_config(
                family, bundle, arch=arch, latent_dim=latent_dim, latent_dims=latent_dims, hidden=hidden,
                beta=beta, beta1=beta1, beta2=beta2, eta_enc=eta_enc, eta_dec=eta_dec,
                encoder_std=_std_option(encoder_std), sigma1=_std_option(sigma1), sigma2=_std_option(sigma2),
                prior=prior, latent_mapping=latent_mapping, kl_controls=controls)
        torch.manual_seed(seed)  # parameter initialisation
        model = build_model(config)
        check_before_training(config, bundle, run_dir)  # the theory's d x d cost, the run name's length
        with warnings.catch_warnings():  # said once, in the summary below
            warnings.simplefilter("ignore", NotConvergedWarning)
            result = fit(model, bundle, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                         lr_decay=lr_decay, clip_norm=clip_norm, seed=seed, test_fraction=test_fraction,
                         split_seed=seed, device=device, run_dir=run_dir, checkpoint_every=checkpoint_every,
                         resume=resume, overwrite=overwrite, progress=progress, jit=jit)
    except (*INPUT_ERRORS, TrainingDivergedError) as err:
        raise input_error(err) from None
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    from ppl_vae._io import read_json
    from ppl_vae.inference.runs import METRICS_NAME

    metrics = read_json(run_dir / METRICS_NAME)
    for line in summary_lines(result, metrics.get("theory")):
        click.echo(line)


def _train_program(program: str, settings, run_dir: Path, *, family: str, fit_options: dict[str, Any], resume: bool,
                   overwrite: bool, progress: bool, **data) -> None:
    """``train --program``: the user's program on the data the options name (see :mod:`ppl_vae.cli._program`)."""
    from ppl_vae.cli._program import train_program
    from ppl_vae.inference import TrainingDivergedError

    ctx = click.get_current_context()
    defaults = (click.core.ParameterSource.DEFAULT, None)
    given = [option for option, name in (("--model", "family"), ("--arch", "arch"))
             if ctx.get_parameter_source(name) not in defaults]
    if given:
        raise click.UsageError(f"{' / '.join(given)} name a suite model; --program trains yours")
    if fit_options["steps"] is None and fit_options["epochs"] is None and not resume:
        raise click.UsageError("give --steps or --epochs")

    def load(paired: bool):
        return load_data("cvae" if paired else "vae", **data)

    try:
        lines = train_program(program=program, settings=settings, load=load, run_dir=run_dir,
                              fit_options=fit_options, resume=resume, overwrite=overwrite, progress=progress)
    except (*INPUT_ERRORS, TrainingDivergedError) as err:
        raise input_error(err) from None
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    for line in lines:
        click.echo(line)
