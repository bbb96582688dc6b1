"""Sweep specs: what to train (model, data, grid, training) and how to run it, validated before any work.

:class:`SweepSpec` is built from a mapping (:meth:`SweepSpec.from_dict`) or a
YAML / TOML / JSON file (:func:`load_spec`); every entry is checked there and a
bad one is refused with a ``ValueError`` naming it. :meth:`SweepSpec.expand`
turns the grid into model configs, seeds and run names (:func:`run_name`, which
never gives two grid points one name).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ppl_vae._device import check_device_name
from ppl_vae._io import DamagedFileError, reading
from ppl_vae._validate import check_choice, check_int_range, check_mapping, check_positive, count_range
from ppl_vae.sweep.api import DIAGNOSTICS_DEFAULTS

FAMILIES = ("vae", "cvae", "mhvae")
SPEC_SECTIONS = ("model", "arch", "data", "model_options", "grid", "train", "diagnostics", "execution")
#: Config fields fixed by the data set, never set by a spec.
DERIVED_FIELDS = ("input_dim", "x_dim", "y_dim", "image_shape", "split", "arch")
TRAIN_DEFAULTS: dict[str, Any] = {"steps": None, "epochs": None, "batch_size": None, "lr": 1e-3,
                                  "optimizer": "adam", "lr_decay": 1.0, "clip_norm": None, "test_fraction": 0.1,
                                  "split_seed": 0, "checkpoint_every": 1000, "jit": True}
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
                count_range(f"sweep spec grid[{entry!r}]", first, last)  # counted before it is expanded
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
    _refuse_unknown(f"sweep spec {name}", given, defaults)
    return {**defaults, **given}


def _refuse_unknown(where: str, given: Mapping[str, Any], allowed) -> None:
    """ValueError naming the entries of ``given`` that are not in ``allowed``."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown entr{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(map(repr, unknown))}; allowed: {', '.join(map(repr, allowed))}")


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
    if not isinstance(train["jit"], bool):
        raise ValueError(f"sweep spec train['jit'] must be true or false, got {train['jit']!r}")


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
        _refuse_unknown("sweep spec", raw, SPEC_SECTIONS)
        family = check_choice("sweep spec 'model'", raw.get("model", "cvae"), FAMILIES)
        from ppl_vae.models import ARCHITECTURES

        arch = check_choice("sweep spec 'arch'", raw.get("arch", "linear"), ARCHITECTURES)
        data = dict(check_mapping("sweep spec 'data'", raw.get("data") or {"name": "digits"}))
        if "name" not in data:
            raise ValueError("sweep spec 'data' must give the data set's 'name' (synthetic, digits, mnist, or the "
                             "path of a data file)")
        data.pop("paired", None)  # implied by the model family

        settable = _settable_fields(family)
        model_options = dict(check_mapping("sweep spec 'model_options'", raw.get("model_options") or {}))
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
