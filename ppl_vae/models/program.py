"""A user's own Pyro program from a Python file: ``PATH.py:build``.

The file defines a function (``build`` by default) that takes the
hyper-parameters as keyword arguments and returns the model and guide::

    # my_vae.py
    def build(latent_dim=8, beta=1.0):
        vae = MyVAE(latent_dim, beta)         # a torch.nn.Module with .model / .guide
        return vae.model, vae.guide           # or just: return vae

Loading the file RUNS ITS CODE, as ``python my_vae.py`` would: that is the
point of naming it. Only a file the user names (``--program``) is ever
loaded; nothing read from a run directory is executed (a run of a program
records the file's path and SHA-256, and its report reads the diagnostics the
run wrote instead of rebuilding the model).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The function a program file is asked for when ``PATH.py`` names no function.
DEFAULT_BUILDER = "build"


class ProgramError(ValueError):
    """A program file, builder or hyper-parameter that cannot be used; the message names it."""


@dataclass(frozen=True)
class ProgramRef:
    """Where a program comes from: the file, the builder's name and the file's SHA-256 (hex)."""

    path: Path
    builder: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """JSON form for ``config.json`` (provenance only: never used to run the file again unasked)."""
        return {"path": str(self.path), "builder": self.builder, "sha256": self.sha256}

    @property
    def label(self) -> str:
        """``file.py:build``, for messages and run names."""
        return f"{self.path.name}:{self.builder}"


def parse_program(spec: str) -> ProgramRef:
    """The :class:`ProgramRef` of ``"PATH.py"`` or ``"PATH.py:function"``.

    Raises
    ------
    ProgramError
        For a path that is not an existing ``.py`` file, or a function name
        that is not a Python identifier.
    """
    text = str(spec)
    path_text, sep, builder = text.rpartition(":")
    if not sep or not path_text or path_text.endswith(("\\", "/")) or "/" in builder or "\\" in builder:
        path_text, builder = text, DEFAULT_BUILDER
    if not builder.isidentifier():
        raise ProgramError(f"--program {spec!r}: {builder!r} is not a function name (PATH.py:function)")
    path = Path(path_text).expanduser()
    if path.suffix != ".py":
        raise ProgramError(f"--program {spec!r}: expected a Python file PATH.py[:function]")
    if not path.is_file():
        raise ProgramError(f"--program {spec!r}: no file at {path}")
    path = path.resolve()
    return ProgramRef(path, builder, hashlib.sha256(path.read_bytes()).hexdigest())


def load_builder(ref: ProgramRef) -> Callable[..., Any]:
    """Import the program file (running its code) and return its builder function.

    The module is imported under a private name so that it cannot shadow an
    installed package, and its folder is importable while it loads (so the
    file can import its neighbours).
    """
    name = f"_ppl_vae_program_{ref.sha256[:16]}"
    spec = importlib.util.spec_from_file_location(name, ref.path)
    if spec is None or spec.loader is None:
        raise ProgramError(f"{ref.path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(ref.path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    builder = getattr(module, ref.builder, None)
    if not callable(builder):
        defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        raise ProgramError(f"{ref.path}: no function {ref.builder!r}; it defines {', '.join(defined) or 'none'}")
    return builder


def builder_defaults(builder: Callable[..., Any]) -> dict[str, Any]:
    """The builder's keyword arguments with their defaults (the hyper-parameters it accepts)."""
    parameters = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty}


def check_hyper(builder: Callable[..., Any], hyper: Mapping[str, Any], label: str) -> None:
    """Refuse hyper-parameters the builder does not take, and required arguments not given, by name."""
    parameters = inspect.signature(builder).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    keywords = {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(hyper) - keywords) if not takes_any else []
    if unknown:
        raise ProgramError(f"{label} takes no argument {', '.join(map(repr, unknown))}; its arguments are "
                           f"{', '.join(sorted(keywords)) or 'none'}")
    missing = sorted(n for n, p in parameters.items()
                     if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                     and n not in hyper)
    if missing:
        raise ProgramError(f"{label} needs {', '.join(map(repr, missing))}: give them with --set NAME=VALUE")


def build_program(builder: Callable[..., Any], hyper: Mapping[str, Any], label: str = "the program"
                  ) -> tuple[Any, Callable, Callable]:
    """``(source, model, guide)`` from ``builder(**hyper)``.

    The builder may return a ``(model, guide)`` pair (``source`` is then None) or
    an object with ``.model`` and ``.guide`` methods, e.g. a ``torch.nn.Module``
    (``source``: the engine trains its parameters with every ``pyro.param`` the
    program registers, and manages its train / eval mode).
    """
    check_hyper(builder, hyper, label)
    built = builder(**hyper)
    if isinstance(built, tuple) and len(built) == 2 and all(callable(f) for f in built):
        return None, built[0], built[1]
    model, guide = getattr(built, "model", None), getattr(built, "guide", None)
    if callable(model) and callable(guide):
        return built, model, guide
    raise ProgramError(f"{label} returned {type(built).__name__}; it must return (model, guide) or an object with "
                       ".model and .guide methods")


def setting_value(text: str) -> int | float | bool | str | None:
    """A ``--set`` value: an integer, a float (``1e-3`` too), ``true``/``false``, ``none``, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_setting(text: str) -> tuple[str, tuple[Any, ...]]:
    """``"name=v1,v2"`` -> ``("name", (v1, v2))``, each value read by :func:`setting_value`.

    Raises
    ------
    ProgramError
        For a setting without ``=``, a name that is not an identifier, or no value.
    """
    name, sep, raw = str(text).partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ProgramError(f"--set {text!r}: expected NAME=VALUE or NAME=V1,V2,... (NAME a keyword of the builder)")
    values = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            raise ProgramError(f"--set {text!r}: empty value")
        values.append(setting_value(part))
    return name, tuple(values)


def settings_grid(settings: list[str] | tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
    """The grid of ``--set`` options: name -> values, each name once."""
    grid: dict[str, tuple[Any, ...]] = {}
    for text in settings:
        name, values = parse_setting(text)
        if name in grid:
            raise ProgramError(f"--set {name}=... given twice; list its values once: --set {name}=a,b")
        grid[name] = values
    return grid
