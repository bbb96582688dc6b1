"""The run directory: what a training run leaves behind, and how to get it back.

Layout (read by the report and the sweeps; keep it stable)::

    config.json       {"model": config.to_dict(), "data": bundle.attrs["spec"], "train": {fit options},
                       "seed": int, "version": ppl_vae.__version__, "device": str}
    checkpoint.pt     parameters, optimiser state, step, RNG states (see checkpoint.py)
    loss_history.nc   xr.Dataset with variable ``loss`` over ``step``
    kl_history.nc     per-dimension KL of each latent site over ``step`` (one-model runs; see kl_history.py)
    metrics.json      final_loss, steps, wall_time_s, device; for linear models ``theory``:
                      n_collapsed_measured / _predicted, max_rel_error_active_decoder_sv, ...,
                      and ``converged`` / ``convergence`` (see convergence.py)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

import ppl_vae
from ppl_vae._device import resolve_device
from ppl_vae._io import DamagedFileError, atomic_write, atomic_write_json, read_json
from ppl_vae.inference.checkpoint import CHECKPOINT_NAME, check_split_matches, check_state, load_checkpoint

CONFIG_NAME = "config.json"
LOSS_NAME = "loss_history.nc"
KL_HISTORY_NAME = "kl_history.nc"
METRICS_NAME = "metrics.json"
#: Diagnostics cache of a run (written by the report, or by a sweep with the sweep's settings).
DIAGNOSTICS_NAME = "diagnostics.nc"
#: The report's own cache in a sweep's run, whose ``diagnostics.nc`` belongs to the sweep.
REPORT_DIAGNOSTICS_NAME = "diagnostics_report.nc"
#: Every file a run directory may hold; ``--overwrite`` removes these (and refuses a folder holding more).
RUN_FILES = (CONFIG_NAME, CHECKPOINT_NAME, LOSS_NAME, KL_HISTORY_NAME, METRICS_NAME, DIAGNOSTICS_NAME, REPORT_DIAGNOSTICS_NAME,
             "error.json")


def write_config(run_dir: Path, config: dict | list[dict], bundle, train_options: dict[str, Any],
                 seeds: tuple[int, ...], device: torch.device) -> Path:
    """Write ``config.json`` (atomically): ``model``/``seed`` for one model, ``models``/``seeds`` for K."""
    one = isinstance(config, dict)
    return atomic_write_json(run_dir / CONFIG_NAME, {
        ("model" if one else "models"): config,
        "data": bundle.attrs.get("spec"),
        "train": train_options,
        ("seed" if one else "seeds"): seeds[0] if one else list(seeds),
        "version": ppl_vae.__version__,
        "device": str(device),
    })


def linear_theory_metrics(model, bundle) -> dict[str, Any] | None:
    """Readout-vs-theory headline figures for a linear model a theorem covers, else None."""
    from ppl_vae.models.readout import readout_summary, theory_for

    theory = theory_for(model.config, bundle)
    if theory is None:
        return None
    return readout_summary(model.linear_readout(bundle), theory)


def write_results(run_dir: Path, result, bundle) -> None:
    """Write ``loss_history.nc``, ``kl_history.nc`` (one model) and ``metrics.json`` for a finished fit."""
    dataset = result.loss.to_dataset(name="loss")
    atomic_write(run_dir / LOSS_NAME, lambda tmp: dataset.to_netcdf(tmp))
    kl = getattr(result, "kl_history", None)
    if kl is not None and kl.data_vars and "config" not in kl.dims:
        atomic_write(run_dir / KL_HISTORY_NAME, lambda tmp: kl.to_netcdf(tmp))
    metrics: dict[str, Any] = {
        "final_loss": result.final_loss,
        "steps": result.steps,
        "wall_time_s": result.wall_time,
        "device": result.device,
    }
    if result.diverged:
        metrics["diverged"] = {str(k): step for k, step in result.diverged.items()}
    metrics.update(convergence_metrics(result.convergence))
    cpu = bundle.to("cpu")
    theories = [None if k in result.diverged else linear_theory_metrics(model, cpu)
                for k, model in enumerate(result.models)]
    if len(theories) == 1 and theories[0] is not None:
        metrics["theory"] = theories[0]
    elif any(theory is not None for theory in theories):
        metrics["theory"] = theories
    atomic_write_json(run_dir / METRICS_NAME, metrics)


def convergence_metrics(verdicts: list[dict[str, Any] | None]) -> dict[str, Any]:
    """``converged`` and ``convergence`` entries of ``metrics.json``.

    Nothing when no configuration was judged (a user's program, or a diverged run).

    One model: ``converged`` is True, False or None (not judged) and
    ``convergence`` the verdict; K models: a list of each.
    """
    if not verdicts or all(verdict is None for verdict in verdicts):
        return {}
    if len(verdicts) == 1:
        return {"converged": verdicts[0]["converged"], "convergence": verdicts[0]}
    return {"converged": [None if v is None else v["converged"] for v in verdicts], "convergence": list(verdicts)}


def is_sweep_run(info: dict[str, Any]) -> bool:
    """Whether ``config.json`` content ``info`` is of one run of a sweep (written by ``ppl_vae.sweep.study``)."""
    return isinstance(info.get("train"), dict) and "vectorised" in info["train"]


def clear_results(run_dir: Path) -> None:
    """Remove ``loss_history.nc`` and ``metrics.json``: a resumed run rewrites them when it ends.

    Until then a run directory holds no results that the newer checkpoints would
    contradict (an interrupted resume leaves no stale metrics behind).
    """
    for name in (METRICS_NAME, LOSS_NAME, KL_HISTORY_NAME):
        (run_dir / name).unlink(missing_ok=True)


def check_checkpoint_matches(config: dict[str, Any], state: dict[str, Any], config_path: Path,
                             checkpoint_path: Path) -> None:
    """Refuse a ``config.json`` whose model config is not the one the checkpoint was trained with.

    Raises
    ------
    DamagedFileError
        The two disagree; the message names both files and the differing fields.
    """
    saved = state.get("config")  # a sweep's run
    if saved is None and len(state.get("configs") or ()) == 1:  # fit's checkpoint of one model
        saved = state["configs"][0]
    if saved is None:
        return
    before, now = json.loads(json.dumps(saved)), json.loads(json.dumps(config))
    changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
    if changed:
        raise DamagedFileError(
            f"{config_path} does not match {checkpoint_path}: the model config differs in {', '.join(changed)} "
            f"(e.g. {changed[0]} is {now.get(changed[0])!r} in config.json, {before.get(changed[0])!r} in the "
            "checkpoint); the run directory was edited or mixed with another run")


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "auto"):
    """Rebuild a trained model and its data from a run directory.

    Returns
    -------
    model
        The model of ``config.json`` with the checkpoint's parameters, on ``device``, in eval mode.
    bundle
        The training data, reloaded through ``ppl_vae.data.load(**spec)`` (on the CPU).
    run_info
        ``config.json``'s content plus ``step`` (of the checkpoint), ``run_dir`` and,
        when present, ``metrics`` (``metrics.json``).
    """
    from ppl_vae.data import load
    from ppl_vae.models import build_model, config_from_dict

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG_NAME} is missing")
    info = read_json(config_path)
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise DamagedFileError(f"{config_path} holds no 'model' config: it is not the config of a one-model run")
    if info["model"].get("family") == "program":
        raise ValueError(f"{run_dir} is a run of a user's Pyro program, which load_run cannot rebuild (it never "
                         "runs code from a run directory): build the program again and call "
                         "ppl_vae.inference.load_program_state(run_dir, model, guide)")
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    check_checkpoint_matches(info["model"], state, config_path, run_dir / CHECKPOINT_NAME)
    check_split_matches(info, state, config_path, run_dir / CHECKPOINT_NAME)
    try:
        model = build_model(config_from_dict(info["model"]))
    except (TypeError, ValueError, KeyError) as err:
        raise DamagedFileError(f"{config_path}: its model config cannot be built ({' '.join(str(err).split())})"
                               ) from None
    check_state(state, run_dir / CHECKPOINT_NAME, model)
    model.load_state_dict(state["model_state"])
    model.to(resolve_device(device)).eval()
    spec = info.get("data")
    if not spec:
        raise ValueError(f"{config_path} has no data spec; the data set cannot be reloaded")
    if not isinstance(spec, dict):
        raise DamagedFileError(f"{config_path}: 'data' must be a data spec (a mapping), got {str(spec)[:60]!r}")
    bundle = load(**spec)
    info = dict(info, step=int(state["step"]), run_dir=str(run_dir))
    if (run_dir / METRICS_NAME).is_file():
        info["metrics"] = read_json(run_dir / METRICS_NAME)
    return model, bundle, info
