"""``run_sweep``: train many configurations of one model, vectorised when possible.

>>> base = CVAEConfig(x_dim=16, y_dim=48, latent_dim=8)
>>> result = run_sweep(base, {"beta": [0.5, 1, 2], "eta_dec": [0.5, 1], "seed": [0, 1]}, bundle, steps=2000)
>>> result.dataset.loss            # (config, step), with beta / eta_dec / seed coordinates
>>> result.models[3]               # an ordinary trained model for configuration 3

Configurations that differ only in hyper-parameters (``config.hyperparameters()``)
and seeds are trained as ONE batched model (:mod:`ppl_vae.sweep.vectorised`);
otherwise each is trained on its own by :func:`ppl_vae.inference.fit`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from ppl_vae._device import resolve_device
from ppl_vae._validate import check_choice
from ppl_vae.models.config import check_data
from ppl_vae.sweep.backends import Backend, SweepTask, TaskResult, get_backend
from ppl_vae.sweep.vectorised import BatchedModel, can_vectorise, train_batched

VECTORISE_CHOICES = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A finished sweep.

    Attributes
    ----------
    configs
        The K model configs, in sweep order.
    seeds
        The K seeds.
    models
        K ordinary trained models (``build_model(config_k)`` holding the
        trained weights), on the CPU.
    dataset
        ``loss`` over ``(config, step)`` (per-sample negative beta-ELBO of the batch, as ``fit``), and for
        linear models the readout of :meth:`linear_readout` over
        ``(config, mode)``; hyper-parameters and ``seed`` are coordinates
        along ``config``. ``attrs`` hold ``path``, ``backend`` and ``wall_time``.
    path
        ``'vectorised'`` (one batched run) or ``'separate'`` (one run each).
    wall_time
        Seconds for the whole sweep, training and bookkeeping.
    """

    configs: tuple[Any, ...]
    seeds: tuple[int, ...]
    models: tuple[Any, ...]
    dataset: xr.Dataset
    path: str
    wall_time: float


def expand_grid(base_config: Any, grid: Mapping[str, Sequence[Any]], *, seed: int = 0
                ) -> tuple[list[Any], list[int]]:
    """The Cartesian product of ``grid`` applied to ``base_config``.

    Parameters
    ----------
    base_config
        A model config; every field not in ``grid`` keeps its value.
    grid
        Field name -> values. The key ``'seed'`` sets the seeds instead of a
        config field. Order: the last key varies fastest.
    seed
        Seed of every configuration when ``grid`` has no ``'seed'`` key.

    Returns
    -------
    (list of configs, list of int)
    """
    if not grid:
        raise ValueError("grid must name at least one field with at least one value")
    fields = {field.name for field in dataclasses.fields(base_config)} | {"seed"}
    unknown = sorted(set(grid) - fields)
    if unknown:
        raise ValueError(f"grid keys must be fields of {type(base_config).__name__} or 'seed', "
                         f"got {', '.join(map(repr, unknown))}")
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or len(values) == 0:
            raise ValueError(f"grid[{key!r}] must be a non-empty sequence of values, got {values!r}")
    configs, seeds = [], []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        seeds.append(int(values.pop("seed", seed)))
        configs.append(dataclasses.replace(base_config, **values))
    return configs, seeds


def _seeded_model(config: Any, seed: int, device: torch.device):
    """``build_model(config)`` with weights drawn from ``seed``, on ``device``."""
    from ppl_vae.models import build_model

    torch.manual_seed(seed)
    return build_model(config).to(device)


def run_task(task: SweepTask, bundle) -> TaskResult:
    """Train one task's configurations; the unit of work a backend runs."""
    options = dict(task.fit_options)
    device = resolve_device(options.pop("device", "cpu"))
    data = bundle.to(device)
    models = [_seeded_model(config, seed, device) for config, seed in zip(task.configs, task.seeds)]
    if task.vectorised:
        batched = BatchedModel(models)
        fitted = train_batched(batched, data.tensors(), seed=task.seeds[0], **options)
        batched.unstack_into(models)
        history, wall_time = fitted.loss_history, fitted.wall_time
    else:
        from ppl_vae.inference import fit

        (model,), (seed,) = models, task.seeds
        result = fit(model, data, seed=seed, device=device, progress=False, **options)
        history = np.asarray(result.loss.values, dtype=np.float64)[None, :]
        wall_time = float(result.wall_time)
    state_dicts = tuple({key: value.detach().cpu() for key, value in model.state_dict().items()}
                        for model in models)
    return TaskResult(index=task.index, state_dicts=state_dicts, loss_history=history, wall_time=wall_time)


def plan_tasks(configs: Sequence[Any], seeds: Sequence[int], fit_options: dict[str, Any],
               vectorise: str | bool = "auto") -> list[SweepTask]:
    """Split a sweep into tasks: one batched task when allowed and asked, else one per configuration.

    Raises
    ------
    ValueError
        ``vectorise='always'`` (or True) but the configurations cannot share one batched model.
    """
    mode = {True: "always", False: "never"}.get(vectorise, vectorise)
    check_choice("vectorise", mode, VECTORISE_CHOICES)
    possible, reason = can_vectorise(configs)
    if mode == "always" and not possible:
        raise ValueError(f"vectorise='always' but the configurations cannot be batched: {reason}")
    if mode != "never" and possible:
        return [SweepTask(tuple(configs), tuple(seeds), dict(fit_options), True, tuple(range(len(configs))))]
    return [SweepTask((config,), (seed,), dict(fit_options), False, (k,))
            for k, (config, seed) in enumerate(zip(configs, seeds))]


def run_sweep(base_config: Any, grid: Mapping[str, Sequence[Any]] | Sequence[Any], bundle, *,
              seeds: Sequence[int] | None = None, steps: int | None = None, epochs: int | None = None,
              batch_size: int | None = None, lr: float = 1e-3, optimizer: str = "adam",
              lr_decay: float = 1.0, clip_norm: float | None = None, seed: int = 0,
              device: str | torch.device = "auto", backend: str | Backend = "local",
              vectorise: str | bool = "auto", readout: bool = True) -> SweepResult:
    """Train K configurations of one model family on ``bundle``.

    Parameters
    ----------
    base_config
        The config the grid varies (ignored when ``grid`` is a list of configs,
        except that it may be None then).
    grid
        Field -> values (Cartesian product, see :func:`expand_grid`; a
        ``'seed'`` key varies the seed), or a sequence of configs.
    bundle
        The training data (``bundle.tensors()`` feeds every model).
    seeds
        One seed per configuration when ``grid`` is a sequence of configs;
        default: ``seed`` for all.
    steps, epochs, batch_size, lr, optimizer, lr_decay, clip_norm
        Training options, as :func:`ppl_vae.inference.fit` (gradient
        clipping acts on each configuration's own gradient norm).
    seed
        Default seed (see ``grid`` and ``seeds``).
    device
        ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``: data, weights and
        batches all live there.
    backend
        ``'local'`` or a :class:`~ppl_vae.sweep.backends.Backend`.
    vectorise
        ``'auto'``: one batched run when the configurations share an
        architecture (differ only in ``hyperparameters()`` and seed) and it has
        batched layers (linear, mlp), else one run each. ``'always'``: batched
        or ValueError. ``'never'``: one run each.
    readout
        Add each linear model's ``linear_readout`` to the dataset.

    Returns
    -------
    SweepResult
    """
    start = time.perf_counter()
    if isinstance(grid, Mapping):
        if base_config is None:
            raise ValueError("base_config must be a model config when grid is a mapping of field values")
        configs, grid_seeds = expand_grid(base_config, grid, seed=seed)
        if seeds is not None:
            raise ValueError("give seeds either through grid['seed'] or through seeds, not both")
        seeds = grid_seeds
    else:
        configs = list(grid)
        if not configs:
            raise ValueError("grid must hold at least one configuration")
        seeds = [seed] * len(configs) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(configs):
            raise ValueError(f"seeds must hold one seed per configuration ({len(configs)}), got {len(seeds)}")
    device = resolve_device(device)
    # Every configuration shares the data: one check before any work starts.
    check_data(configs[0], bundle)
    fit_options = {"steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                   "lr_decay": lr_decay, "clip_norm": clip_norm, "device": str(device)}
    tasks = plan_tasks(configs, seeds, fit_options, vectorise)
    runner = get_backend(backend)
    results = runner.map(run_task, tasks, bundle)
    path = "vectorised" if tasks[0].vectorised else "separate"
    models = _rebuild_models(configs, results)
    dataset = sweep_dataset(configs, seeds, results, models, bundle if readout else None)
    wall_time = time.perf_counter() - start
    dataset.attrs.update({"path": path, "backend": runner.name, "wall_time": wall_time,
                          "training_time": float(sum(r.wall_time for r in results)), "device": str(device)})
    return SweepResult(tuple(configs), tuple(seeds), tuple(models), dataset, path, wall_time)


def _rebuild_models(configs: Sequence[Any], results: Sequence[TaskResult]) -> list[Any]:
    from ppl_vae.models import build_model

    models: list[Any] = [None] * len(configs)
    for result in results:
        for k, state in zip(result.index, result.state_dicts):
            model = build_model(configs[k])
            model.load_state_dict(state)
            models[k] = model
    return models


def sweep_dataset(configs: Sequence[Any], seeds: Sequence[int], results: Sequence[TaskResult],
                  models: Sequence[Any], bundle) -> xr.Dataset:
    """Loss curves (and linear readouts) of every configuration, labelled by hyper-parameters.

    Returns
    -------
    xr.Dataset
        ``loss`` ``(config, step)``; for ``arch='linear'`` with the standard
        prior also the variables of ``model.linear_readout`` over
        ``(config, mode)`` (``bundle`` None: no readouts). Coordinates along
        ``config``: every hyper-parameter and ``seed``.
    """
    n_steps = max(result.loss_history.shape[1] for result in results)
    loss = np.full((len(configs), n_steps), np.nan)
    for result in results:
        loss[list(result.index), : result.loss_history.shape[1]] = result.loss_history
    coords: dict[str, Any] = {"config": np.arange(len(configs)), "step": np.arange(n_steps),
                              "seed": ("config", np.asarray(seeds))}
    for name in configs[0].hyperparameters():
        coords[name] = ("config", np.asarray([config.hyperparameters()[name] for config in configs]))
    dataset = xr.Dataset({"loss": (("config", "step"), loss, {"units": "nats per sample"})}, coords=coords)
    readouts = None if bundle is None else _linear_readouts(models, bundle)
    if readouts is not None:
        dataset = dataset.merge(readouts)
    dataset.attrs.update({"family": configs[0].family, "arch": configs[0].arch, "n_configs": len(configs)})
    return dataset


def _linear_readouts(models: Sequence[Any], bundle) -> xr.Dataset | None:
    if models[0].config.arch != "linear":
        return None
    try:
        per_config = [model.linear_readout(bundle) for model in models]
    except ValueError:  # e.g. a learned prior: the theory has no counterpart
        return None
    stacked = xr.concat(per_config, dim="config", coords="minimal", compat="override", combine_attrs="drop")
    return stacked.assign_coords(config=np.arange(len(models)))
