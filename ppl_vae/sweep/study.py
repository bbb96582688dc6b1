"""Sweeps as studies on disk: a spec, one run directory per configuration, resumable.

>>> spec = load_spec("sweep.yaml")                   # or SweepSpec.from_dict({...})
>>> summary = run_study(spec, "sweeps/beta_eta")     # backend="ray", address="auto" for a cluster
>>> summary.counts                                   # {'finished': 30, 'failed': 2, 'skipped': 0}
>>> combined = rebuild_combined("sweeps/beta_eta")   # InferenceData, dimension ``run``

A spec (YAML or TOML) names a model family and architecture, the data set, the
model options held fixed, a grid of values (Cartesian product; ``seed`` varies
the seed) and the training / diagnostics options::

    model: cvae
    arch: mlp
    data: {name: digits, split: quadrant}
    model_options: {latent_dim: 8, hidden_dims: [64]}
    grid: {beta: [0.1, 0.5, 1, 2], eta_dec: "0.5,1", seed: "0-3"}
    train: {epochs: 5, batch_size: 128, lr: 0.001}
    diagnostics: {iw_samples: 100}
    execution: {group_size: 8, num_cpus: 1, num_gpus: 0}

Layout of a sweep directory::

    spec.json                  the validated spec; a rerun with another spec is refused
    runs/<name>/               one run directory per configuration, as ppl_vae.inference
                               writes them (config.json, checkpoint.pt, loss_history.nc,
                               metrics.json) plus diagnostics.nc; or error.json if it failed
    combined.nc                every finished run's diagnostics stacked along ``run``
    summary.json               counts and failures of the last invocation

A configuration is finished when its ``metrics.json`` exists: it is written
last, atomically, after everything else of that run. Rerunning skips finished
configurations and redoes the rest.

Configurations that share an architecture are trained together, as one run of
:func:`ppl_vae.inference.fit` over a ``configs`` plate, in tasks of at most
``group_size`` configurations (the unit a backend schedules); the tasks are planned
and run by the same :func:`ppl_vae.sweep.api.plan_tasks` / :func:`~ppl_vae.sweep.api.run_task`
as :func:`~ppl_vae.sweep.api.run_sweep`. Each configuration draws its weights,
minibatches and noise from its own seed, so grouping never changes a number and a
rerun that trains only the missing configurations reproduces them. ``train.test_fraction``
(default 0.1) of the rows is held out before training; diagnostics and metrics are
computed on (at most ``diagnostics.max_points`` of) those rows. With the local
backend a task checkpoints into ``groups/<id>/`` and an interrupted task resumes there.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import time
import traceback
import tomllib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ppl_vae._device import check_device_name
from ppl_vae._io import (DamagedFileError, atomic_write, atomic_write_json, check_path, read_json, reading,
                         visible_entries)
from ppl_vae._lock import claim_output
from ppl_vae._validate import check_choice, check_int_range, check_positive
from ppl_vae.sweep.api import DIAGNOSTICS_DEFAULTS, held_out_rows, plan_tasks, run_task
from ppl_vae.sweep.backends import Backend, LocalBackend, SweepTask, TaskResult

SPEC_NAME = "spec.json"
SUMMARY_NAME = "summary.json"
COMBINED_NAME = "combined.nc"
RUNS_DIR = "runs"
GROUPS_DIR = "groups"
ERROR_NAME = "error.json"
DIAGNOSTICS_NAME = "diagnostics.nc"  # as ppl_vae.inference.runs.DIAGNOSTICS_NAME

FAMILIES = ("vae", "cvae", "mhvae")
SPEC_SECTIONS = ("model", "arch", "data", "model_options", "grid", "train", "diagnostics", "execution")
#: Config fields fixed by the data set, never set by a spec.
DERIVED_FIELDS = ("input_dim", "x_dim", "y_dim", "image_shape", "split", "arch")
TRAIN_DEFAULTS: dict[str, Any] = {"steps": None, "epochs": None, "batch_size": None, "lr": 1e-3,
                                  "optimizer": "adam", "lr_decay": 1.0, "clip_norm": None, "test_fraction": 0.1,
                                  "split_seed": 0, "checkpoint_every": 1000}
#: Grids with more configurations than this are refused unless confirmed (``--yes``).
MAX_CONFIGS = 10_000
EXECUTION_DEFAULTS: dict[str, Any] = {"backend": "local", "address": None, "group_size": None, "num_cpus": 1,
                                      "num_gpus": 0, "max_retries": 0, "device": "auto", "vectorise": "auto",
                                      "max_configs": MAX_CONFIGS}
BACKENDS = ("local", "ray")

_INT_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class SpecMismatchError(ValueError):
    """A sweep directory holds results of a different spec."""


class GridTooLargeError(ValueError):
    """A grid larger than ``execution.max_configs`` that was not confirmed."""


# --------------------------------------------------------------------------- spec


def parse_values(entry: str, values: Any) -> tuple[Any, ...]:
    """One grid entry's values: a list, a scalar, ``'0.1,0.5,1'`` or an integer range ``'0-4'`` (inclusive).

    Raises
    ------
    ValueError
        Empty, malformed or decreasing range; the message names ``entry``.
    """
    if isinstance(values, str):
        parsed: list[Any] = []
        for part in (p.strip() for p in values.split(",")):
            if not part:
                continue
            match = _INT_RANGE.match(part)
            if match:
                first, last = int(match.group(1)), int(match.group(2))
                if last < first:
                    raise ValueError(f"sweep spec grid[{entry!r}]: range {part!r} must go up (first <= last)")
                parsed.extend(range(first, last + 1))
                continue
            try:
                number = float(part)
            except ValueError:
                raise ValueError(f"sweep spec grid[{entry!r}]: {part!r} is neither a number nor an integer range "
                                 "like '0-4'") from None
            parsed.append(int(number) if number.is_integer() and "." not in part and "e" not in part.lower()
                          else number)
        values = parsed
    elif not isinstance(values, (list, tuple)):
        values = [values]
    if len(values) == 0:
        raise ValueError(f"sweep spec grid[{entry!r}]: the range is empty; give at least one value")
    normalised = tuple(tuple(v) if isinstance(v, list) else v for v in values)
    if len(set(map(_value_key, normalised))) != len(normalised):  # 1 and 1.0 are one value
        raise ValueError(f"sweep spec grid[{entry!r}]: values repeat in {list(values)!r}")
    return normalised


def _value_key(value: Any) -> Any:
    """What makes two grid values the same: numbers by value, anything else by its repr."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return repr(value)


def _check_section(name: str, given: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ValueError(f"sweep spec {name!r} must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"sweep spec {name}: unknown entr{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(map(repr, unknown))}; allowed: {', '.join(map(repr, defaults))}")
    return {**defaults, **given}


def _config_class(family: str):
    from ppl_vae.models import CONFIG_CLASSES

    return CONFIG_CLASSES[family]


def _settable_fields(family: str) -> tuple[str, ...]:
    """Config fields a spec may set (everything but what the data set fixes)."""
    return tuple(f.name for f in dataclasses.fields(_config_class(family)) if f.name not in DERIVED_FIELDS)


def _check_train(train: Mapping[str, Any]) -> None:
    """Every training option of a spec, checked as ``fit`` will check it (before any directory is made)."""
    from ppl_vae.inference.trainer import OPTIMIZERS

    check_positive("sweep spec train['lr']", train["lr"])
    check_choice("sweep spec train['optimizer']", train["optimizer"], OPTIMIZERS)
    if not 0.0 < check_positive("sweep spec train['lr_decay']", train["lr_decay"]) <= 1.0:
        raise ValueError(f"sweep spec train['lr_decay'] must be in (0, 1], got {train['lr_decay']!r}")
    if train["clip_norm"] is not None:
        check_positive("sweep spec train['clip_norm']", train["clip_norm"])
    fraction = train["test_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"sweep spec train['test_fraction'] must be a number in [0, 1), got {fraction!r}")
    check_int_range("sweep spec train['split_seed']", train["split_seed"], 0)
    check_int_range("sweep spec train['checkpoint_every']", train["checkpoint_every"], 1)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: what to train (model, data, grid, training) and how to run it (execution).

    Build it with :meth:`from_dict` or :func:`load_spec`, which check every entry
    and raise ``ValueError`` naming the bad one before any work starts.

    Attributes
    ----------
    model, arch
        Model family (``'vae'``, ``'cvae'``, ``'mhvae'``) and architecture.
    data
        ``ppl_vae.data.load`` arguments: ``name`` plus the loader's options.
    model_options
        Config fields held fixed (``latent_dim``, ``hidden_dims``, ...).
    grid
        Field -> values, Cartesian product in key order (last key fastest);
        ``seed`` sets the seeds (default: seed 0 only).
    train
        Training options: ``steps`` or ``epochs``, ``batch_size``, ``lr``,
        ``optimizer``, ``lr_decay``, ``clip_norm``.
    diagnostics
        ``ppl_vae.diagnostics.diagnose`` options: ``iw_samples`` (default 100,
        modest on purpose), ``n_obs``, ``n_draws``, ``kl_samples``, ``seed``.
    execution
        ``backend``, ``address``, ``group_size`` (most configurations per task;
        None: all that share an architecture), ``num_cpus`` / ``num_gpus`` per
        task, ``max_retries`` (Ray, after a crashed worker), ``device``,
        ``vectorise``. Only ``group_size`` and ``vectorise`` change the numbers.
    """

    model: str
    arch: str
    data: dict[str, Any]
    model_options: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    train: dict[str, Any]
    diagnostics: dict[str, Any]
    execution: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SweepSpec:
        """Validate and normalise a spec read from YAML, TOML, JSON or built in code."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"a sweep spec must be a mapping of sections, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(SPEC_SECTIONS))
        if unknown:
            raise ValueError(f"sweep spec: unknown entr{'y' if len(unknown) == 1 else 'ies'} "
                             f"{', '.join(map(repr, unknown))}; allowed: {', '.join(SPEC_SECTIONS)}")
        family = check_choice("sweep spec 'model'", raw.get("model", "cvae"), FAMILIES)
        from ppl_vae.models import ARCHITECTURES

        arch = check_choice("sweep spec 'arch'", raw.get("arch", "linear"), ARCHITECTURES)
        data = dict(raw.get("data") or {"name": "digits"})
        if "name" not in data:
            raise ValueError("sweep spec 'data' must give the data set's 'name' (synthetic, digits, mnist, or the "
                             "path of a data file)")
        data.pop("paired", None)  # implied by the model family

        settable = _settable_fields(family)
        model_options = dict(raw.get("model_options") or {})
        bad = sorted(set(model_options) - set(settable))
        if bad:
            raise ValueError(f"sweep spec model_options: unknown parameter(s) {', '.join(map(repr, bad))} for "
                             f"model {family!r}; allowed: {', '.join(settable)}")
        model_options = {k: tuple(v) if isinstance(v, list) else v for k, v in model_options.items()}

        raw_grid = raw.get("grid")
        if not isinstance(raw_grid, Mapping) or not raw_grid:
            raise ValueError("sweep spec 'grid' must map at least one parameter to its values")
        grid: dict[str, tuple[Any, ...]] = {}
        hyper = set(_config_class(family)._hyperparameter_names)
        for entry, values in raw_grid.items():
            if entry != "seed" and entry not in settable:
                raise ValueError(f"sweep spec grid: unknown parameter {entry!r} for model {family!r}; "
                                 f"allowed: seed, {', '.join(settable)}")
            if entry in model_options:
                raise ValueError(f"sweep spec: {entry!r} is both in grid and in model_options")
            parsed = parse_values(entry, values)
            if entry == "seed":
                for seed in parsed:
                    check_int_range("sweep spec grid['seed'] values", seed, 0)
            elif entry in hyper:
                for value in parsed:
                    check_positive(f"sweep spec grid[{entry!r}] values", value)
            grid[entry] = parsed

        train = _check_section("train", raw.get("train"), TRAIN_DEFAULTS)
        if (train["steps"] is None) == (train["epochs"] is None):
            raise ValueError("sweep spec train: give exactly one of 'steps' or 'epochs' (>= 1)")
        for key in ("steps", "epochs", "batch_size"):
            if train[key] is not None:
                check_int_range(f"sweep spec train[{key!r}]", train[key], 1)
        _check_train(train)
        diagnostics = _check_section("diagnostics", raw.get("diagnostics"), DIAGNOSTICS_DEFAULTS)
        for key in ("iw_samples", "n_obs", "n_draws", "kl_samples"):
            check_int_range(f"sweep spec diagnostics[{key!r}]", diagnostics[key], 1)
        check_int_range("sweep spec diagnostics['seed']", diagnostics["seed"], 0)
        execution = _check_section("execution", raw.get("execution"), EXECUTION_DEFAULTS)
        check_choice("sweep spec execution['backend']", execution["backend"], BACKENDS)
        if execution["group_size"] is not None:
            check_int_range("sweep spec execution['group_size']", execution["group_size"], 1)
        if float(execution["num_cpus"]) < 0 or float(execution["num_gpus"]) < 0:
            raise ValueError("sweep spec execution: num_cpus and num_gpus must be >= 0")
        check_int_range("sweep spec execution['max_retries']", execution["max_retries"], 0)
        check_int_range("sweep spec execution['max_configs']", execution["max_configs"], 1)
        check_device_name(execution["device"], "sweep spec execution['device']")
        from ppl_vae.sweep.api import VECTORISE_CHOICES

        check_choice("sweep spec execution['vectorise']", execution["vectorise"], VECTORISE_CHOICES)
        return cls(family, arch, data, model_options, grid, train, diagnostics, execution)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (tuples become lists); ``from_dict(to_dict())`` equals ``self``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict[str, Any]:
        """What fixes the results: everything but where and how the tasks run."""
        spec = self.to_dict()
        spec["execution"] = {k: spec["execution"][k] for k in ("group_size", "vectorise")}
        spec["grid_order"] = list(self.grid)  # the order fixes run names and task groups
        return spec

    def with_execution(self, **options: Any) -> SweepSpec:
        """A copy with some execution options replaced (None values are ignored)."""
        given = {k: v for k, v in options.items() if v is not None}
        return SweepSpec.from_dict({**self.to_dict(), "execution": {**self.execution, **given}})

    @property
    def n_configs(self) -> int:
        return math.prod(len(values) for values in self.grid.values())

    def check_size(self, yes: bool = False) -> None:
        """Refuse a grid larger than ``execution['max_configs']`` unless ``yes`` (costs nothing per point).

        Raises
        ------
        GridTooLargeError
            Too many configurations and ``yes`` is False.
        """
        limit = self.execution["max_configs"]
        if self.n_configs > limit and not yes:
            raise GridTooLargeError(
                f"the sweep grid has {self.n_configs:,} configurations, more than the limit of {limit:,} "
                "(--max-configs, or execution.max_configs in the spec); pass --yes to run it anyway")

    def points(self) -> list[dict[str, Any]]:
        """The grid's points, each a field -> value mapping, in sweep order."""
        return [dict(zip(self.grid, combination)) for combination in itertools.product(*self.grid.values())]

    def load_data(self):
        """The data set (``ppl_vae.data.load``), paired for a CVAE."""
        from ppl_vae.data import load

        options = dict(self.data)
        name = options.pop("name")
        try:
            with reading(f"the {name} data of the sweep spec"):
                return load(name, paired=self.model == "cvae", **options)
        except DamagedFileError:
            raise
        except ValueError as err:
            raise ValueError(f"sweep spec data: {err}") from None

    def base_fields(self, bundle) -> dict[str, Any]:
        """Config fields the data set fixes, plus ``arch`` and the fixed model options."""
        fields: dict[str, Any] = {"arch": self.arch}
        if self.model == "cvae":
            if bundle.y is None:
                raise ValueError("sweep spec: model 'cvae' needs paired data")
            fields.update(x_dim=bundle.x.shape[1], y_dim=bundle.y.shape[1])
            if self.arch == "cnn":
                fields.update(image_shape=bundle.image_shape, split=bundle.split)
        else:
            fields["input_dim"] = bundle.x.shape[1]
            if self.arch == "cnn":
                fields["image_shape"] = bundle.image_shape
        if "latent_dim" in _settable_fields(self.model) and "latent_dim" not in self.model_options \
                and "latent_dim" not in self.grid:
            fields["latent_dim"] = 8
        return {**fields, **self.model_options}

    def expand(self, bundle) -> tuple[list[Any], list[int], list[str]]:
        """Every configuration, its seed and its run name, in sweep order.

        Raises
        ------
        ValueError
            A point of the grid makes an invalid config (message names the point).
        """
        cls = _config_class(self.model)
        base = self.base_fields(bundle)
        configs, seeds, names = [], [], []
        for point in self.points():
            fields = dict(point)
            seed = int(fields.pop("seed", 0))
            try:
                configs.append(cls(**{**base, **fields}))
            except (TypeError, ValueError) as err:
                raise ValueError(f"sweep spec grid point {run_name(point)}: {err}") from None
            seeds.append(seed)
            names.append(run_name(point))
        _check_names(names)
        return configs, seeds, names


def _check_names(names: Sequence[str]) -> None:
    """Refuse run names that two grid points share or that are not plain folder names (before any training)."""
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in seen:
            raise ValueError(f"sweep spec grid: configurations {seen[name]} and {k} would both be written to "
                             f"runs/{name}; make the grid values distinct")
        seen[name] = k
        if "/" in name or "\\" in name or "\0" in name or name.startswith("."):
            raise ValueError(f"sweep spec grid: run name {name!r} is not a plain folder name")


def run_name(point: Mapping[str, Any]) -> str:
    """Directory name of a grid point, e.g. ``beta=0.5_eta_dec=1_seed=0``.

    A float is written short (``%g``) when that gives back the same number, else
    in full (``0.1234561``), so distinct values never share a name.
    """

    def text(value: Any) -> str:
        if isinstance(value, float):
            short = f"{value:g}"
            return short if float(short) == value else repr(value)
        if isinstance(value, (tuple, list)):
            return "x".join(text(v) for v in value)
        return str(value)

    return "_".join(f"{key}={text(value)}" for key, value in point.items()) or "run"


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON spec file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep spec at {path}")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"sweep spec file must end in .yaml, .yml, .toml or .json, got {path.name!r}")
    raw = _parse_spec_file(path, suffix)
    try:
        return SweepSpec.from_dict(raw or {})
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _parse_spec_file(path: Path, suffix: str) -> Any:
    """The content of a spec file; a syntax error becomes one line naming the file and the position."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ValueError(f"sweep spec {path} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ValueError(f"sweep spec {path} is not valid YAML{where}: {problem}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        kind = "TOML" if suffix == ".toml" else "JSON"
        raise ValueError(f"sweep spec {path} is not valid {kind}: {' '.join(str(err).split())}") from None


# --------------------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class ConfigOutcome:
    """What a worker sends back for one configuration (plain, picklable data).

    Attributes
    ----------
    index
        Position in the sweep.
    state_dict
        Trained weights on the CPU (None if training failed).
    loss_history
        ``(steps,)`` per-sample loss, nats (None if training failed).
    metrics
        ``metrics.json`` content (final_loss, steps, wall_time_s, device, theory).
    diagnostics
        ``ppl_vae.diagnostics.diagnose`` output (None on failure).
    error
        ``{"type", "message", "traceback"}`` on failure, else None.
    provenance
        The task's training record from ``fit`` (estimator, seeds, K, group, split).
    """

    index: int
    state_dict: dict | None = None
    loss_history: np.ndarray | None = None
    metrics: dict | None = None
    diagnostics: Any = None
    error: dict | None = None
    provenance: dict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def error_record(err: BaseException) -> dict[str, str]:
    """``{"type", "message", "traceback"}`` of an exception (a Ray error reports its cause's type)."""
    cause = getattr(err, "cause", None)
    kind = type(cause).__name__ if isinstance(cause, BaseException) else type(err).__name__
    return {"type": kind, "message": str(cause if isinstance(cause, BaseException) else err),
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__))}


def diagnose_options(diagnostics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``diagnose`` keyword options (besides ``iw_samples`` and ``seed``) that differ from its defaults.

    ``ppl-vae report`` keys its diagnostics cache on the options it passes; a
    sweep using the defaults thus writes a ``diagnostics.nc`` the report reuses.
    """
    import inspect

    from ppl_vae.diagnostics import diagnose

    defaults = inspect.signature(diagnose).parameters
    return {key: diagnostics[key] for key in ("n_obs", "n_draws", "kl_samples")
            if diagnostics[key] != defaults[key].default}


def group_id(task: SweepTask) -> str:
    """A name for a task's checkpoint folder: a digest of its configurations and seeds."""
    payload = json.dumps([[c.to_dict() for c in task.configs], list(task.seeds), task.fit_options],
                         sort_keys=True, default=str)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def run_group(task: SweepTask, bundle, *, diagnostics: Mapping[str, Any] | None = None,
              groups_dir: str | None = None) -> list[ConfigOutcome]:
    """Train one task (via :func:`ppl_vae.sweep.api.run_task`), diagnosing each configuration on held-out rows.

    This is what a worker runs. A failure of the whole task (an exception in
    training) is returned as an error for each of its configurations; a
    configuration whose loss diverged, or whose diagnostics failed, is an error
    of its own while the others of the task finish. With ``groups_dir`` the task
    checkpoints into ``groups_dir/<group_id>`` and resumes from it.
    """
    from ppl_vae.inference import TrainingDivergedError
    from ppl_vae.inference.convergence import NotConvergedWarning
    from ppl_vae.inference.runs import convergence_metrics, linear_theory_metrics
    from ppl_vae.models import build_model

    options = {**DIAGNOSTICS_DEFAULTS, **(diagnostics or {})}
    checkpoint_dir = None if groups_dir is None else str(Path(groups_dir) / group_id(task))
    try:
        with warnings.catch_warnings():  # recorded per run and summed up in the sweep's summary instead
            warnings.simplefilter("ignore", NotConvergedWarning)
            result: TaskResult = run_task(task, bundle, diagnostics=options, checkpoint_dir=checkpoint_dir)
    except Exception as err:  # noqa: BLE001 - recorded per configuration, the sweep goes on
        record = error_record(err)
        return [ConfigOutcome(index=k, error=record) for k in task.index]
    # The rows the task trained on (as fit split them): what the linear theory describes.
    train, _ = held_out_rows(bundle, task.fit_options.get("test_fraction", 0.0), task.fit_options.get("split_seed", 0),
                             None)
    outcomes = []
    for row, (k, config, state) in enumerate(zip(task.index, task.configs, result.state_dicts)):
        history = np.asarray(result.loss_history[row], dtype=np.float64)
        if row in result.diverged:
            step = result.diverged[row]
            err = TrainingDivergedError(step, float(history[step]) if step < history.size else float("nan"))
            outcomes.append(ConfigOutcome(index=k, loss_history=history,
                                          error={"type": type(err).__name__, "message": str(err), "traceback": ""},
                                          provenance=result.provenance))
            continue
        try:
            model = build_model(config)
            model.load_state_dict(state)
            metrics: dict[str, Any] = {
                "final_loss": float(np.mean(history[-min(100, history.size):])),
                "steps": int(history.size),
                "wall_time_s": float(result.wall_time),
                "configs_in_task": len(task.index),
                "vectorised": bool(task.vectorised),
                "metrics_data": "test",
                "n_train": train.n,
            }
            theory = linear_theory_metrics(model, train.to("cpu"))
            if theory is not None:
                metrics["theory"] = theory
            if row < len(result.convergence):
                metrics.update(convergence_metrics([result.convergence[row]]))
            idata = result.diagnostics[row]
            metrics["device"] = str(idata.attrs.get("device", task.fit_options.get("device", "cpu")))
            outcomes.append(ConfigOutcome(index=k, state_dict=state, loss_history=history, metrics=metrics,
                                          diagnostics=idata, provenance=result.provenance))
        except Exception as err:  # noqa: BLE001
            outcomes.append(ConfigOutcome(index=k, error=error_record(err)))
    if checkpoint_dir is not None and all(outcome.ok for outcome in outcomes):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: the run directories hold everything
    return outcomes


# --------------------------------------------------------------------------- run directories


def run_status(run_dir: str | os.PathLike) -> str:
    """``'finished'`` (``metrics.json`` present), ``'failed'`` (``error.json``) or ``'pending'``."""
    from ppl_vae.inference import METRICS_NAME

    run_dir = Path(run_dir)
    if (run_dir / METRICS_NAME).is_file():
        return "finished"
    if (run_dir / ERROR_NAME).is_file():
        return "failed"
    return "pending"


def _train_options(spec: SweepSpec, seed: int, vectorised: bool, provenance: dict | None) -> dict[str, Any]:
    """The ``train`` section of a sweep run's ``config.json``: the spec's options and what ``fit`` recorded."""
    return {**spec.train, **(provenance or {}), "seed": seed, "vectorised": vectorised}


def write_run(run_dir: Path, spec: SweepSpec, config, seed: int, data_spec: dict, outcome: ConfigOutcome,
              vectorised: bool) -> None:
    """Write one configuration's run directory; ``metrics.json`` last (the finished marker)."""
    from ppl_vae.diagnostics import save
    from ppl_vae.inference import CHECKPOINT_NAME, CONFIG_NAME, LOSS_NAME, METRICS_NAME, save_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS_NAME).unlink(missing_ok=True)  # unfinished until everything below is written
    train = _train_options(spec, seed, vectorised, outcome.provenance)
    import ppl_vae

    atomic_write_json(run_dir / CONFIG_NAME, {
        "model": config.to_dict(), "data": data_spec, "train": train, "seed": seed,
        "version": ppl_vae.__version__, "device": (outcome.metrics or {}).get("device", "cpu"),
    })
    if not outcome.ok:
        atomic_write_json(run_dir / ERROR_NAME, outcome.error)
        return
    history = outcome.loss_history
    save_checkpoint(run_dir / CHECKPOINT_NAME, {
        "model_state": outcome.state_dict, "step": int(history.size),
        "loss_history": torch.tensor(np.array(history), dtype=torch.float64), "config": config.to_dict(),
        "train": train,
    })
    loss = xr.DataArray(history, dims="step", coords={"step": np.arange(history.size)}, name="loss",
                        attrs={"long_name": "negative beta-ELBO per sample", "units": "nats"})
    atomic_write(run_dir / LOSS_NAME, lambda tmp: loss.to_dataset().to_netcdf(tmp))
    idata = outcome.diagnostics
    # The report reuses diagnostics.nc when these keys match the run (see ppl_vae.report.runs).
    key = cache_key(spec, {"model": config.to_dict(), "data": data_spec, "train": train}, run_dir / CHECKPOINT_NAME)
    idata.attrs.update(key, checkpoint_step=int(history.size))
    save(idata, run_dir / DIAGNOSTICS_NAME)
    (run_dir / ERROR_NAME).unlink(missing_ok=True)
    atomic_write_json(run_dir / METRICS_NAME, outcome.metrics)


def cache_key(spec: SweepSpec, info: Mapping[str, Any], checkpoint: Path) -> dict[str, Any]:
    """What a sweep run's ``diagnostics.nc`` must match: the sweep's diagnostics settings on this run.

    ``info`` holds the run's ``model`` config, ``data`` spec and ``train`` options
    (``config.json``'s content); see :func:`ppl_vae.report.runs.diagnostics_cache_key`.
    """
    from ppl_vae.report.runs import data_split_key, diagnostics_cache_key, file_digest

    split = data_split_key(spec.train, int(info["train"].get("n_test", 0)), spec.diagnostics["max_points"])
    return diagnostics_cache_key(dict(info), file_digest(checkpoint), spec.diagnostics["iw_samples"],
                                 spec.diagnostics["seed"], diagnose_options(spec.diagnostics), split)


def run_diagnostics(run_dir: Path, spec: SweepSpec):
    """A finished run's diagnostics made with the sweep's settings: its ``diagnostics.nc``, or recomputed.

    The cache is recomputed (and rewritten) when it cannot be read or was made
    otherwise (other ``iw_samples``, split, checkpoint or package version), so
    ``combined.nc`` never mixes settings.
    """
    from ppl_vae.diagnostics import save
    from ppl_vae.inference import CHECKPOINT_NAME, CONFIG_NAME, load_run
    from ppl_vae.report.runs import read_cache
    from ppl_vae.sweep.api import diagnose_held_out

    key = cache_key(spec, read_json(run_dir / CONFIG_NAME), run_dir / CHECKPOINT_NAME)
    cached = read_cache(run_dir / DIAGNOSTICS_NAME, key)
    if cached is not None:
        return cached
    model, bundle, info = load_run(run_dir, device="cpu")
    options = dict(spec.diagnostics)
    train, test = held_out_rows(bundle, spec.train["test_fraction"], spec.train["split_seed"],
                                options.pop("max_points"), seed=options["seed"])
    idata = diagnose_held_out(model, train, test, options, torch.device("cpu"))
    idata.attrs.update(key, checkpoint_step=int(info["step"]))
    save(idata, run_dir / DIAGNOSTICS_NAME)
    return idata


def prepare_sweep_dir(out: str | os.PathLike, spec: SweepSpec, *, overwrite: bool = False) -> Path:
    """Create ``out`` for ``spec``, or reuse it if it holds the same spec.

    Raises
    ------
    SpecMismatchError
        ``out`` holds a sweep of another spec and ``overwrite`` is not set.
    FileExistsError
        ``out`` is a non-empty directory that is not a sweep directory.
    """
    out = check_path(out, "the sweep directory")
    spec_path = out / SPEC_NAME
    if spec_path.is_file():
        saved = read_json(spec_path)
        if saved.get("identity") != spec.identity():
            if not overwrite:
                before, now = saved.get("identity", {}), spec.identity()
                changed = sorted(key for key in now if before.get(key) != now[key])
                raise SpecMismatchError(
                    f"{out} holds a sweep with a different spec (changed: {', '.join(changed)}); "
                    "use another --out, or pass --overwrite to discard its results")
            _discard_results(out)
    elif out.exists() and visible_entries(out):
        raise FileExistsError(f"{out} exists and is not a sweep directory (no {SPEC_NAME}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec_path, {"identity": spec.identity(), "spec": spec.to_dict(), "grid_order": list(spec.grid)})
    return out


def _discard_results(out: Path) -> None:
    """Remove everything a sweep of another spec left in ``out`` (before the new spec is written)."""
    (out / SPEC_NAME).unlink(missing_ok=True)
    for folder in (RUNS_DIR, GROUPS_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in (COMBINED_NAME, SUMMARY_NAME):
        (out / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class StudySummary:
    """What one invocation of :func:`run_study` did.

    Attributes
    ----------
    out
        The sweep directory.
    finished
        Run names finished in this invocation.
    skipped
        Run names already finished before it (not retrained).
    failed
        Run name -> error record, for configurations that failed now.
    wall_time
        Seconds for the whole invocation.
    backend
        Name of the backend that ran the tasks.
    not_converged
        Run names finished now whose linear model did not converge (``converged:
        false`` in their ``metrics.json``).
    """

    out: Path
    finished: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: dict[str, dict]
    wall_time: float
    backend: str
    not_converged: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return {"finished": len(self.finished), "failed": len(self.failed), "skipped": len(self.skipped)}

    def lines(self) -> list[str]:
        """Human-readable summary."""
        total = sum(self.counts.values())
        lines = [f"{total} configurations: {len(self.finished)} finished, {len(self.failed)} failed, "
                 f"{len(self.skipped)} skipped (already finished) in {self.wall_time:.1f} s on {self.backend}"]
        for name, error in self.failed.items():
            first_line = (error["message"].splitlines() or [""])[0]
            lines.append(f"  failed {name}: {error['type']}: {first_line}")
        if self.failed:
            lines.append("  rerun the same command to retry the failed configurations")
        if self.not_converged:
            shown = ", ".join(self.not_converged[:5]) + (", ..." if len(self.not_converged) > 5 else "")
            lines.append(f"  warning: {len(self.not_converged)} configuration(s) did not converge ({shown}); their "
                         "collapse counts are not reliable (metrics.json: convergence)")
        lines.append(f"results: {self.out}")
        return lines


Runner = Callable[[SweepTask, Any], list[ConfigOutcome]]


def _as_completed(backend: Backend, runner: Runner, tasks: Sequence[SweepTask], bundle
                  ) -> Iterator[tuple[SweepTask, list[ConfigOutcome] | BaseException]]:
    """Each task's outcomes (or the exception that lost them) as soon as it is done."""
    if hasattr(backend, "as_completed"):
        for position, result in backend.as_completed(runner, tasks, bundle):
            yield tasks[position], result
        return
    for task in tasks:
        try:
            (result,) = backend.map(runner, [task], bundle)
        except Exception as err:  # noqa: BLE001
            result = err
        yield task, result


def make_backend(spec: SweepSpec) -> Backend:
    """The backend ``spec.execution`` asks for (Ray imported only here, only if asked)."""
    if spec.execution["backend"] == "ray":
        from ppl_vae.sweep.ray_backend import RayBackend

        return RayBackend(address=spec.execution["address"], num_cpus=spec.execution["num_cpus"],
                          num_gpus=spec.execution["num_gpus"], max_retries=spec.execution["max_retries"])
    return LocalBackend()


def run_study(spec: SweepSpec, out: str | os.PathLike, *, backend: Backend | None = None, overwrite: bool = False,
              runner: Runner | None = None, echo: Callable[[str], None] | None = None,
              yes: bool = False) -> StudySummary:
    """Run (or resume) the sweep ``spec`` into the directory ``out``.

    Parameters
    ----------
    spec
        The validated sweep.
    out
        Sweep directory (created; reused if it holds the same spec).
    backend
        Where tasks run; default from ``spec.execution`` (``local`` or ``ray``).
    overwrite
        Discard the results of a different spec found in ``out``.
    runner
        The task function, default :func:`run_group` with the spec's
        diagnostics options (tests wrap it to inject failures).
    echo
        Called with one line per finished task (progress), e.g. ``click.echo``.
    yes
        Run a grid larger than ``spec.execution['max_configs']`` (else refused, see
        :meth:`SweepSpec.check_size`).

    Returns
    -------
    StudySummary
        Also written to ``out/summary.json``; ``out/combined.nc`` holds every
        finished configuration's diagnostics along ``run``.

    Raises
    ------
    GridTooLargeError
        The grid is over the limit and ``yes`` is False (nothing is created).
    ppl_vae._lock.OutputInUseError
        Another process is writing to ``out`` (nothing is written).
    SpecMismatchError
        ``out`` holds a sweep of another spec and ``overwrite`` is False.
    """
    start = time.perf_counter()
    spec.check_size(yes)  # before the grid is expanded
    out = check_path(out, "the sweep directory")
    bundle = spec.load_data()
    configs, seeds, names = spec.expand(bundle)  # every config is valid before any work starts
    with claim_output(out, "ppl-vae sweep"):
        prepare_sweep_dir(out, spec, overwrite=overwrite)
        return _run_claimed(spec, out, bundle, (configs, seeds, names), backend=backend, runner=runner, echo=echo,
                            start=start)


def _run_claimed(spec: SweepSpec, out: Path, bundle, grid: tuple[list, list, list[str]], *, backend: Backend | None,
                 runner: Runner | None, echo: Callable[[str], None] | None, start: float) -> StudySummary:
    """:func:`run_study` once ``out`` is claimed and prepared: train what is missing, write the results."""
    configs, seeds, names = grid
    runs = out / RUNS_DIR
    finished_before = [run_status(runs / name) == "finished" for name in names]
    skipped = [k for k, done in enumerate(finished_before) if done]
    todo = [k for k, done in enumerate(finished_before) if not done]
    fit_options = {key: spec.train[key] for key in TRAIN_DEFAULTS} | {"device": spec.execution["device"]}
    tasks = plan_tasks(configs, seeds, fit_options, index=todo, group_size=spec.execution["group_size"],
                        vectorise=spec.execution["vectorise"])
    backend = backend or make_backend(spec)
    # Group checkpoints live on the driver's disk: only where the tasks run in this process.
    groups_dir = str(out / GROUPS_DIR) if isinstance(backend, LocalBackend) else None
    runner = runner or functools.partial(run_group, diagnostics=dict(spec.diagnostics), groups_dir=groups_dir)
    data_spec = bundle.attrs.get("spec")
    finished, failed, not_converged = [], {}, []
    for done, (task, result) in enumerate(_as_completed(backend, runner, tasks, bundle), start=1):
        if isinstance(result, BaseException):
            record = error_record(result)
            result = [ConfigOutcome(index=k, error=record) for k in task.index]
        for outcome in result:
            k = outcome.index
            write_run(runs / names[k], spec, configs[k], seeds[k], data_spec, outcome, task.vectorised)
            if outcome.ok:
                finished.append(names[k])
                if (outcome.metrics or {}).get("converged") is False:
                    not_converged.append(names[k])
            else:
                failed[names[k]] = outcome.error
        if echo is not None:
            echo(f"task {done}/{len(tasks)}: {len(task.index)} configuration(s), "
                 f"{sum(o.ok for o in result)} finished")
    if groups_dir is not None and Path(groups_dir).is_dir() and not any(Path(groups_dir).iterdir()):
        Path(groups_dir).rmdir()  # every group finished and was written out
    summary = StudySummary(out, tuple(finished), tuple(names[k] for k in skipped), failed,
                           time.perf_counter() - start, getattr(backend, "name", type(backend).__name__),
                           tuple(not_converged))
    if finished or skipped:
        write_combined(out)
    atomic_write_json(out / SUMMARY_NAME, {**summary.counts, "finished": list(summary.finished),
                                           "skipped": list(summary.skipped), "failed": summary.failed,
                                           "wall_time_s": summary.wall_time, "backend": summary.backend})
    return summary


# --------------------------------------------------------------------------- combined results


def read_spec(out: str | os.PathLike) -> SweepSpec:
    """The spec a sweep directory was run with."""
    path = Path(out) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out} is not a sweep directory: {SPEC_NAME} is missing")
    saved = read_json(path)
    raw = saved["spec"]
    raw["grid"] = {key: raw["grid"][key] for key in saved["grid_order"]}  # JSON keys were sorted
    return SweepSpec.from_dict(raw)


def rebuild_combined(out: str | os.PathLike):
    """Every finished configuration's diagnostics stacked along ``run`` (sweep order).

    Coordinates along ``run``: the model hyper-parameters and ``family`` (as
    :func:`ppl_vae.diagnostics.combine` sets them), plus every other grid
    entry (``seed``, ``latent_dim``, ...) and ``final_loss``. Each run's
    diagnostics come from :func:`run_diagnostics`: its ``diagnostics.nc`` when
    made with the sweep's settings, else recomputed, so settings never mix.

    Raises
    ------
    FileNotFoundError
        No configuration has finished yet.
    """
    from ppl_vae.diagnostics import combine

    out = Path(out)
    spec = read_spec(out)
    points = spec.points()
    done = [(run_name(p), p) for p in points if run_status(out / RUNS_DIR / run_name(p)) == "finished"]
    if not done:
        raise FileNotFoundError(f"no finished configuration in {out / RUNS_DIR}")
    idatas = [run_diagnostics(out / RUNS_DIR / name, spec) for name, _ in done]
    combined = combine(idatas, run_names=[name for name, _ in done])
    hyper = set(_config_class(spec.model)._hyperparameter_names)
    extra = {key: ("run", np.asarray([point[key] for _, point in done])) for key in spec.grid if key not in hyper}
    if "seed" not in extra:
        extra["seed"] = ("run", np.asarray([int(i.attrs.get("seed", 0)) for i in idatas]))
    from ppl_vae.inference import METRICS_NAME

    final_loss = [read_json(out / RUNS_DIR / name / METRICS_NAME)["final_loss"] for name, _ in done]
    extra["final_loss"] = ("run", np.asarray(final_loss, dtype=np.float64))
    for group in combined.groups():
        combined[group] = combined[group].assign_coords(extra)
    combined.attrs.update(sweep=str(out.resolve().name), n_configs=spec.n_configs, n_finished=len(done))
    return combined


def write_combined(out: str | os.PathLike) -> Path:
    """Rebuild the combined diagnostics and write ``out/combined.nc`` (atomically)."""
    from ppl_vae.diagnostics import save

    return save(rebuild_combined(out), Path(out) / COMBINED_NAME)
