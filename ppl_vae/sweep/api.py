"""``run_sweep``: train many configurations of one model, vectorised when possible.

>>> base = CVAEConfig(x_dim=16, y_dim=48, latent_dim=8)
>>> result = run_sweep(base, {"beta": [0.5, 1, 2], "eta_dec": [0.5, 1], "seed": [0, 1]}, bundle, steps=2000)
>>> result.dataset.loss            # (config, step), with beta / eta_dec / seed coordinates
>>> result.models[3]               # an ordinary trained model for configuration 3

Every sweep goes through :func:`run_task`, the one unit of work of ``run_sweep``, of
the spec-file study (``ppl-vae sweep``) and of the Ray backend. A task is a group of
configurations sharing an architecture, trained by :func:`ppl_vae.inference.fit` as
one run (configuration k from its own seed, so the grouping never changes a
number), after holding out ``test_fraction`` of the rows; its diagnostics are
computed on (at most ``max_points`` of) those held-out rows, and each model leaves
Pyro's parameter store afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ppl_vae._device import resolve_device
from ppl_vae._validate import check_choice
from ppl_vae.models.config import as_training_data, check_data
from ppl_vae.sweep.backends import Backend, SweepTask, TaskResult, get_backend
from ppl_vae.inference.batched import can_vectorise, structural_fields

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
        ``'vectorised'`` (at least one batched run) or ``'separate'`` (one run each).
    wall_time
        Seconds for the whole sweep, training, diagnostics and bookkeeping.
    diagnostics
        One ``InferenceData`` per configuration, computed on held-out rows (None
        for a diverged configuration), or None when run without diagnostics.
    diverged
        Configuration -> first step with a non-finite loss (stopped; the others went on).
    convergence
        ``fit``'s convergence record per configuration
        (:func:`ppl_vae.inference.convergence.judge`; None: diverged).
    """

    configs: tuple[Any, ...]
    seeds: tuple[int, ...]
    models: tuple[Any, ...]
    dataset: xr.Dataset
    path: str
    wall_time: float
    diagnostics: tuple[Any, ...] | None = None
    diverged: dict[int, int] = dataclasses.field(default_factory=dict)
    convergence: tuple[Any, ...] = ()


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


def held_out_rows(bundle, test_fraction: float, split_seed: int, max_points: int | None, seed: int = 0):
    """The held-out part of ``bundle`` (as ``fit`` splits it), at most ``max_points`` rows of it.

    Returns
    -------
    (DataBundle, DataBundle | None)
        The training rows and the (subsampled) held-out rows; None when nothing is held out.
    """
    from ppl_vae.data import train_test_split

    if test_fraction <= 0.0:
        return bundle, None
    train, test = train_test_split(bundle, test_fraction, seed=split_seed)
    if max_points is not None and test.n > max_points:
        keep = torch.randperm(test.n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values
        test = test.subset(keep)
    return train, test


def run_task(task: SweepTask, bundle, *, diagnostics: Mapping[str, Any] | None = None,
             checkpoint_dir: str | None = None) -> TaskResult:
    """Train one task's configurations as one run and, if asked, diagnose each on held-out rows.

    Parameters
    ----------
    task
        Configurations, their seeds and the training options (``fit``'s keywords,
        ``test_fraction`` and ``split_seed`` included).
    bundle
        The whole data set; ``fit`` holds out ``test_fraction`` of it.
    diagnostics
        None: no diagnostics. Else ``diagnose`` options (``iw_samples``, ``seed``,
        ``n_obs``, ``n_draws``, ``kl_samples``) plus ``max_points``, the cap on
        held-out rows diagnosed.
    checkpoint_dir
        Directory for this task's checkpoint (resumed when it holds one of the same
        configurations); None: no checkpoints.

    Returns
    -------
    TaskResult
        A configuration that diverged is listed in ``diverged`` (step) and has no diagnostics.
    """
    from ppl_vae.inference import fit

    options = dict(task.fit_options)
    device = resolve_device(options.pop("device", "cpu"))
    checkpoint_every = options.pop("checkpoint_every", 1000)
    models = [_seeded_model(config, seed, device) for config, seed in zip(task.configs, task.seeds)]
    resume = checkpoint_dir is not None and _has_checkpoint_for(checkpoint_dir, task)
    fitted = fit(models, bundle, seed=list(task.seeds), device=device, progress=False, on_divergence="stop",
                 run_dir=checkpoint_dir, resume=resume, overwrite=not resume and checkpoint_dir is not None,
                 checkpoint_every=checkpoint_every, provenance={"group": list(task.index)}, **options)
    idatas = None
    if diagnostics is not None:
        diagnose_options = dict(diagnostics)
        train, test = held_out_rows(bundle, options.get("test_fraction", 0.0), options.get("split_seed", 0),
                                    diagnose_options.pop("max_points", None), seed=diagnose_options.get("seed", 0))
        idatas = diagnose_task(models, fitted.diverged, train, test, diagnose_options, device, batched=task.vectorised)
    state_dicts = tuple({key: value.detach().cpu() for key, value in model.state_dict().items()}
                        for model in models)
    return TaskResult(index=task.index, state_dicts=state_dicts, loss_history=np.asarray(fitted.loss.values),
                      wall_time=float(fitted.wall_time), diverged=dict(fitted.diverged), diagnostics=idatas,
                      provenance=fitted.provenance, convergence=tuple(fitted.convergence))


def _has_checkpoint_for(checkpoint_dir: str, task: SweepTask) -> bool:
    """Whether ``checkpoint_dir`` holds a checkpoint of exactly this task's configurations."""
    from ppl_vae.inference import CHECKPOINT_NAME, CONFIG_NAME

    config_path = Path(checkpoint_dir) / CONFIG_NAME
    if not (Path(checkpoint_dir) / CHECKPOINT_NAME).is_file() or not config_path.is_file():
        return False
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    return saved.get("models") == [c.to_dict() for c in task.configs] and saved.get("seeds") == list(task.seeds)


@contextlib.contextmanager
def _param_store_restored():
    """Remove, on exit, every name the block added to Pyro's parameter store."""
    import pyro

    store = pyro.get_param_store()
    before = set(store.keys())
    try:
        yield
    finally:
        for name in set(store.keys()) - before:
            del store[name]


def diagnose_held_out(model, train, test, options: Mapping[str, Any], device):
    """``diagnose`` of one trained model on its held-out rows, leaving Pyro's parameter store as it was."""
    from ppl_vae.diagnostics import diagnose

    with _param_store_restored(), model.unregistered():
        return diagnose(model, train, test_data=test, device=device, progress=False, **options)


def diagnose_task(models: Sequence[Any], diverged: Mapping[int, int], train, test, options: Mapping[str, Any],
                  device, *, batched: bool) -> tuple[Any, ...]:
    """Each trained model's diagnostics on the held-out rows; None for a diverged one.

    ``batched``: the models share an architecture that trains as one batched model,
    so the ones that did not diverge are diagnosed in batched passes
    (:func:`ppl_vae.diagnostics.diagnose_group`: the numbers of ``diagnose`` of
    each, at a fraction of the cost), each returned as a
    :class:`~ppl_vae.diagnostics.plain.PlainDiagnostics` (stacked and written
    as they are, without importing ArviZ); else with :func:`diagnose_held_out`
    one by one (InferenceData).
    """
    from ppl_vae.diagnostics import diagnose_group

    kept = [k for k in range(len(models)) if k not in diverged]
    if batched and len(kept) > 1:
        with _param_store_restored():
            idatas = diagnose_group([models[k] for k in kept], train, test_data=test, device=device,
                                    progress=False, as_inference_data=False, **options)
    else:
        idatas = [diagnose_held_out(models[k], train, test, options, device) for k in kept]
    by_config = dict(zip(kept, idatas))
    return tuple(by_config.get(k) for k in range(len(models)))


#: ``diagnose`` options of a sweep, plus ``max_points``: the cap on held-out rows diagnosed.
DIAGNOSTICS_DEFAULTS: dict[str, Any] = {"iw_samples": 100, "n_obs": 16, "n_draws": 100, "kl_samples": 16,
                                        "seed": 0, "max_points": 2000}


def plan_tasks(configs: Sequence[Any], seeds: Sequence[int], fit_options: dict[str, Any],
               vectorise: str | bool = "auto", *, group_size: int | None = None,
               index: Sequence[int] | None = None) -> list[SweepTask]:
    """Split a sweep into tasks: configurations sharing an architecture are trained together.

    Configurations (those at ``index``, default all) are grouped by their
    structural fields (everything but the hyper-parameters), in sweep order, and
    each group is cut into chunks of at most ``group_size``. Each configuration
    draws everything from its own seed, so the grouping changes wall time only.

    Parameters
    ----------
    vectorise
        ``'auto'``: chunks of batchable architectures (linear, mlp, cnn) are one
        task, others (a user's network with layers that cannot be batched) one
        task per configuration; ``'always'`` (or True): batch or
        ValueError; ``'never'`` (or False): one task per configuration.

    Raises
    ------
    ValueError
        ``vectorise='always'`` but some configurations cannot share one batched model.
    """
    mode = {True: "always", False: "never"}.get(vectorise, vectorise)
    check_choice("vectorise", mode, VECTORISE_CHOICES)
    index = list(range(len(configs))) if index is None else list(index)
    groups: dict[str, list[int]] = {}
    for k in index:
        key = json.dumps(structural_fields(configs[k]), sort_keys=True, default=str)
        groups.setdefault(key, []).append(k)
    if mode == "always" and len(groups) > 1:
        _, reason = can_vectorise([configs[k] for k in index])
        raise ValueError(f"vectorise='always' but the configurations cannot be batched: {reason}")
    tasks: list[SweepTask] = []
    for members in groups.values():
        possible, reason = can_vectorise([configs[k] for k in members])
        if mode == "always" and not possible:
            raise ValueError(f"vectorise='always' but the configurations cannot be batched: {reason}")
        size = (group_size or len(members)) if mode != "never" and possible else 1
        for start in range(0, len(members), size):
            chunk = tuple(members[start:start + size])
            tasks.append(SweepTask(tuple(configs[k] for k in chunk), tuple(seeds[k] for k in chunk),
                                   dict(fit_options), len(chunk) > 1, chunk))
    return tasks


def run_sweep(base_config: Any, grid: Mapping[str, Sequence[Any]] | Sequence[Any], bundle, *,
              seeds: Sequence[int] | None = None, steps: int | None = None, epochs: int | None = None,
              batch_size: int | None = None, lr: float = 1e-3, optimizer: str = "adam",
              lr_decay: float = 1.0, clip_norm: float | None = None, seed: int = 0,
              test_fraction: float = 0.1, split_seed: int = 0, diagnostics: bool | Mapping[str, Any] = True,
              device: str | torch.device = "auto", backend: str | Backend = "local",
              vectorise: str | bool = "auto", group_size: int | None = None, readout: bool = True) -> SweepResult:
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
        Default seed (see ``grid`` and ``seeds``). Configuration k's weights,
        minibatch order and noise come from its own seed alone.
    test_fraction, split_seed
        Rows held out before training (the same rows for every configuration);
        the diagnostics are computed on them.
    diagnostics
        True: ``diagnose`` each configuration on (at most 2,000 of) the held-out
        rows with :data:`DIAGNOSTICS_DEFAULTS`; a mapping overrides those options
        (``max_points`` caps the rows); False: no diagnostics.
    device
        ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``: data, weights and
        batches all live there.
    backend
        ``'local'`` or a :class:`~ppl_vae.sweep.backends.Backend`.
    vectorise
        ``'auto'``: one batched run when the configurations share an
        architecture (differ only in ``hyperparameters()`` and seed) and it has
        batched layers (linear, mlp, cnn), else one run each. ``'always'``: batched
        or ValueError. ``'never'``: one run each.
    group_size
        At most this many configurations per run (None: all that share an architecture).
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
    bundle = as_training_data(bundle)
    for config in configs:  # widths are shared, but latent limits are per configuration
        check_data(config, bundle)
    fit_options = {"steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                   "lr_decay": lr_decay, "clip_norm": clip_norm, "test_fraction": test_fraction,
                   "split_seed": split_seed, "device": str(device)}
    tasks = plan_tasks(configs, seeds, fit_options, vectorise, group_size=group_size)
    runner = get_backend(backend)
    options = diagnostics_options(diagnostics)
    results = runner.map(functools.partial(run_task, diagnostics=options), tasks, bundle)
    path = "vectorised" if any(task.vectorised for task in tasks) else "separate"
    models = _rebuild_models(configs, results)
    train, _ = held_out_rows(bundle, test_fraction, split_seed, None)
    dataset = sweep_dataset(configs, seeds, results, models, train if readout else None)
    wall_time = time.perf_counter() - start
    dataset.attrs.update({"path": path, "backend": runner.name, "wall_time": wall_time,
                          "training_time": float(sum(r.wall_time for r in results)), "device": str(device),
                          "test_fraction": test_fraction, "split_seed": split_seed, "n_tasks": len(tasks)})
    by_config: list[Any] = [None] * len(configs)
    diverged: dict[int, int] = {}
    records: list[Any] = [None] * len(configs)
    for result in results:
        for row, k in enumerate(result.index):
            if result.diagnostics is not None:
                by_config[k] = _as_inference_data(result.diagnostics[row])
            if row in result.diverged:
                diverged[k] = result.diverged[row]
            if row < len(result.convergence):
                records[k] = result.convergence[row]
    return SweepResult(tuple(configs), tuple(seeds), tuple(models), dataset, path, wall_time,
                       tuple(by_config) if options is not None else None, diverged, tuple(records))


def _as_inference_data(diagnostics: Any) -> Any:
    """A task's diagnostics of one configuration as the InferenceData ``run_sweep`` promises (None stays None)."""
    from ppl_vae.diagnostics.plain import PlainDiagnostics

    return diagnostics.to_inference_data() if isinstance(diagnostics, PlainDiagnostics) else diagnostics


def diagnostics_options(diagnostics: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``run_task``'s diagnostics options: None (off), or the defaults updated by a mapping."""
    if diagnostics is None or diagnostics is False:
        return None
    overrides = {} if diagnostics is True else dict(diagnostics)
    unknown = sorted(set(overrides) - set(DIAGNOSTICS_DEFAULTS))
    if unknown:
        raise ValueError(f"diagnostics options must be among {', '.join(DIAGNOSTICS_DEFAULTS)}, "
                         f"got {', '.join(unknown)}")
    return {**DIAGNOSTICS_DEFAULTS, **overrides}


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
