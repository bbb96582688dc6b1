"""A user's own Pyro program (model and guide callables) as the training engine takes it.

:func:`~ppl_vae.inference.fit` trains the suite's models and, through :class:`Program`,
any model / guide pair written the ordinary Pyro way: ``pyro.module`` networks,
``pyro.param`` values (with constraints), ``pyro.plate`` over the data rows (subsampled
or not), ``poutine.mask`` and ``poutine.scale``. Before training, :func:`check_program`
runs the pair once and refuses, by site name, what the engine cannot follow:
enumerated or non-reparameterisable latents, latents that are not Normal (their noise
comes from per-run generators), and global latents (outside the data plate).

The parameters are what Pyro's ``SVI`` would optimise: every ``pyro.param`` the pair
registers (``pyro.module`` registers a module's parameters the same way), taken as the
param store's unconstrained tensors, plus those of a ``torch.nn.Module`` passed as the
program object.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro.poutine as poutine
import torch
from pyro.distributions import Independent, Normal
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ppl_vae.data.bundle import DataBundle
from ppl_vae.inference.elbo import SAMPLED, collect_sites, elbo_terms

ESTIMATORS = ("auto", "Trace_ELBO", "TraceMeanField_ELBO")


@dataclasses.dataclass(frozen=True)
class ProgramConfig:
    """What a :class:`Program` run records as its model config (``config.json``, checkpoints)."""

    name: str
    hyper: dict[str, Any]
    parameters: dict[str, list[int]]
    latent_sites: tuple[str, ...]
    family: str = "program"
    arch: str = "program"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "hyper": dict(self.hyper),
                "parameters": dict(self.parameters), "latent_sites": list(self.latent_sites)}


class Program:
    """A Pyro model / guide pair, with the interface the engine trains.

    Parameters
    ----------
    model, guide
        Pyro callables taking the same positional arguments (the data's tensors,
        ``(n, ...)`` each, rows first).
    source
        The object they came from (a ``PyroModule`` or an object with ``.model`` /
        ``.guide``); its ``nn.Module`` parameters and train/eval mode are managed too.
    hyper
        JSON-able hyper-parameters to record (e.g. the keyword arguments of a ``build``).
    estimator
        ``'auto'`` (closed-form KL for a program with one latent site, else sampled
        terms), ``'Trace_ELBO'`` (every term sampled) or ``'TraceMeanField_ELBO'``
        (every KL in closed form: right only if no model factor depends on a latent
        the guide draws later).
    """

    kl_levels: dict[str, str] = {}

    def __init__(self, model: Callable, guide: Callable, *, source: Any = None, hyper: dict | None = None,
                 estimator: str = "auto"):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        self._model, self._guide, self.source, self.estimator = model, guide, source, estimator
        self.hyper = dict(hyper or {})
        self.named_params: dict[str, torch.Tensor] = {}
        self.latent_sites: tuple[str, ...] = ()
        self.latent_dims: dict[str, int] = {}
        self.observed_site: str | None = None
        self.config: ProgramConfig | None = None

    def model(self, *args):
        return self._model(*args)

    def guide(self, *args):
        return self._guide(*args)

    @property
    def analytic_kl_sites(self) -> tuple[str, ...]:
        if self.estimator == "TraceMeanField_ELBO" or (self.estimator == "auto" and len(self.latent_sites) == 1):
            return self.latent_sites
        return ()

    def check_data(self, bundle: DataBundle) -> None:
        """Run :func:`check_program` on ``bundle``'s rows and take the program's parameters."""
        info = check_program(self._model, self._guide, *bundle.tensors())
        self.latent_sites, self.latent_dims = info["latent_sites"], info["latent_dims"]
        self.observed_site = info["observed_sites"][0] if info["observed_sites"] else None
        self.named_params = dict(info["params"])
        if isinstance(self.source, torch.nn.Module):
            known = {id(p) for p in self.named_params.values()}
            for name, p in self.source.named_parameters():
                if id(p) not in known and p.requires_grad:
                    self.named_params[f"module.{name}"] = p
        named = self.source if self.source is not None else self._model
        name = getattr(named, "__qualname__", None) or type(named).__qualname__
        self.config = ProgramConfig(name=str(name), hyper=self.hyper,
                                    parameters={k: list(v.shape) for k, v in self.named_params.items()},
                                    latent_sites=self.latent_sites)

    def parameters(self):
        return iter(self.named_params.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_params.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.named_params):
            raise ValueError(f"the saved parameters ({sorted(state)}) are not the program's "
                             f"({sorted(self.named_params)})")
        with torch.no_grad():
            for name, p in self.named_params.items():
                p.copy_(state[name])

    def to(self, device: torch.device) -> Program:
        if isinstance(self.source, torch.nn.Module):
            self.source.to(device)
        for p in self.named_params.values():
            if p.device != torch.device(device):
                p.data = p.data.to(device)
        return self

    def train(self, mode: bool = True) -> Program:
        if isinstance(self.source, torch.nn.Module):
            self.source.train(mode)
        return self

    def eval(self) -> Program:
        return self.train(False)


def as_program(model: Any, guide: Callable | None = None, **options) -> Program | None:
    """``model`` (and ``guide``) as a :class:`Program`; None for the suite's own models.

    Accepts ``(model, guide)`` callables, or one object with ``.model`` and ``.guide``
    (a ``PyroModule`` or any class); ``options`` go to :class:`Program`.
    """
    from ppl_vae.models.base import LatentVariableModel

    if isinstance(model, LatentVariableModel) and guide is None:
        return None
    if isinstance(model, Program):
        return model
    if guide is not None:
        if not (callable(model) and callable(guide)):
            raise ValueError("model and guide must be Pyro callables")
        return Program(model, guide, source=model if isinstance(model, torch.nn.Module) else None, **options)
    if callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None)):
        return Program(model.model, model.guide, source=model, **options)
    raise ValueError(f"model must be a ppl_vae model, an object with .model and .guide methods, or a Pyro model "
                     f"callable given with its guide (fit(model, guide, data)); got {type(model).__name__}")


def as_bundle(data: Any) -> DataBundle:
    """A user's data as the :class:`DataBundle` the engine batches: rows first.

    ``data`` is a :class:`DataBundle`, one tensor / NumPy array ``(n, ...)`` (the
    program's one argument), or a tuple of two (``(x, y)``, the same n rows).
    The provenance (shapes and a SHA-256 of the values) goes into ``attrs['source']``.
    """
    if isinstance(data, DataBundle):
        return data
    parts = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"data must be one array of rows or a tuple (x, y) of two; got {len(parts)} parts")
    tensors = []
    for i, part in enumerate(parts):
        if isinstance(part, np.ndarray):
            part = torch.from_numpy(np.ascontiguousarray(part))
        if not isinstance(part, torch.Tensor) or part.dim() == 0 or part.shape[0] == 0:
            raise ValueError(f"data[{i}] must be a tensor or NumPy array with at least one row, got "
                             f"{type(part).__name__} {tuple(getattr(part, 'shape', ()))}")
        tensors.append(part)
    if len(tensors) == 2 and tensors[0].shape[0] != tensors[1].shape[0]:
        raise ValueError(f"x and y must have the same number of rows, got {tensors[0].shape[0]} and "
                         f"{tensors[1].shape[0]}")
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    source = {"shapes": [list(t.shape) for t in tensors], "sha256": digest.hexdigest()}
    return DataBundle("user", tensors[0], tensors[1] if len(tensors) == 2 else None, attrs={"source": source})


class _SiteCheck(Messenger):
    """Refuse, before anything is drawn, a sample site the engine cannot train (named in the error)."""

    def _pyro_sample(self, msg) -> None:
        if site_is_subsample(msg):
            return
        name, fn = msg["name"], msg["fn"]
        if (msg["infer"] or {}).get("enumerate"):
            raise ValueError(f"site {name!r} asks for enumeration (infer={{'enumerate': ...}}), which the engine "
                             "does not do: train this program with Pyro's TraceEnum_ELBO")
        if msg["is_observed"]:
            return
        if not getattr(fn, "has_rsample", False):
            raise ValueError(f"latent site {name!r} ({type(fn).__name__}) is discrete or not reparameterisable; "
                             "the engine trains reparameterised (Normal) latents only")
        base = fn
        while isinstance(base, Independent):
            base = base.base_dist
        if not isinstance(base, Normal):
            raise ValueError(f"latent site {name!r} is {type(base).__name__}; the engine draws each run's noise "
                             "for Normal latents only (wrap other families in a Normal reparameterisation)")


def check_program(model: Callable, guide: Callable, *args) -> dict[str, Any]:
    """Run ``guide`` and ``model`` once on ``args``; refuse what the engine cannot follow.

    The global random states are left as they were.

    Returns
    -------
    dict
        ``latent_sites`` (guide order), ``latent_dims`` (site -> flattened event size),
        ``observed_sites``, ``params`` (param-store name -> unconstrained tensor, in the
        order the program registers them).

    Raises
    ------
    ValueError
        Naming the site: enumeration, a discrete or non-Normal latent, a model latent
        missing from the guide, or a site outside the data plate (a global latent).
    """
    from ppl_vae.inference.traced import _same_random_state

    with _same_random_state(), poutine.trace(param_only=True) as params, _SiteCheck():
        model_sites, guide_sites = collect_sites(model, guide, *args)
        latent = tuple(name for name, site in guide_sites.items() if name in model_sites)
        estimators = {name: SAMPLED for name in latent}
        for name, term in elbo_terms(model, guide, *args, estimators=estimators):
            if term.dim() != 1:
                raise ValueError(f"site {name!r} is outside the data plate (batch shape {tuple(term.shape)}): a "
                                 "global latent or parameter-like site, which the engine does not train; keep "
                                 "every sample site inside one pyro.plate over the data rows (dim=-1)")
            del term
    unconstrained: dict[str, torch.Tensor] = {}
    for name, site in params.trace.nodes.items():
        if site["type"] == "param":
            unconstrained.setdefault(name, site["value"].unconstrained())
    return {
        "latent_sites": latent,
        "latent_dims": {name: int(np.prod(guide_sites[name]["fn"].event_shape, dtype=np.int64)) for name in latent},
        "observed_sites": tuple(name for name, site in model_sites.items() if site["is_observed"]),
        "params": unconstrained,
    }


def load_program_state(run_dir, model: Any, guide: Callable | None = None, data: Any = None) -> Program:
    """Put the trained parameters of a program's run back into the program, built again by the caller.

    Nothing from the run directory is executed: the caller builds the model and guide
    (as for :func:`~ppl_vae.inference.fit`); they run once on ``data`` (which creates
    their ``pyro.param`` values), then the checkpoint's tensors are copied in.

    Parameters
    ----------
    run_dir
        A run directory written by ``fit(model, guide, data, run_dir=...)``.
    model, guide
        As for ``fit``.
    data
        Rows the program takes (any rows of the training data's shape).

    Returns
    -------
    Program
        The program, its parameters (param store and modules) set to the checkpoint's.
    """
    from pathlib import Path

    from ppl_vae.inference.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from ppl_vae.models.config import as_training_data

    if data is None:
        raise ValueError("data is needed: the program runs once on it to create its parameters")
    program = as_program(model, guide)
    if program is None:
        raise ValueError("model is one of the suite's models: use ppl_vae.inference.load_run")
    state = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    program.check_data(as_training_data(as_bundle(data)))
    saved = state["configs"][0].get("parameters", {})
    if saved != program.config.parameters:
        raise ValueError(f"the program's parameters ({program.config.parameters}) are not those of the run in "
                         f"{run_dir} ({saved})")
    program.load_state_dict(state["model_state"])
    return program
