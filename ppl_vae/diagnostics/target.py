"""What :func:`~ppl_vae.diagnostics.diagnose` diagnoses: a Pyro model / guide pair and the data it takes.

Any pair of Pyro callables works, written the usual way (``pyro.module``,
``pyro.plate`` over the data rows, latents sampled in the guide and scored by
the model, one observed site). The suite's own models (``ppl_vae.models``) are
such a pair plus a config; :func:`as_target` turns either into one
:class:`PyroTarget`, and every diagnostic runs on that.

Latent and observed sites are found by tracing the guide and the replayed
model once (:func:`discover_sites`), or named by the caller. Draws are
vectorised in one of two ways (``PyroTarget.vectorize``):

- ``'repeat'``: the data rows are repeated S times and the callables run once
  on ``S * n`` rows. This assumes nothing but that the model handles a batch
  of any size, so it is what arbitrary callables get.
- ``'plate'``: one ``pyro.plate("samples", S, dim=-2)`` around the callables
  (cheaper: the networks see each row once). The suite's models follow a
  contract that allows it (their data plate sits at ``dim=-1``).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from .._validate import check_choice
from ..data.bundle import DataBundle
from ._sites import full_plates

VECTORIZE_CHOICES = ("auto", "repeat", "plate")


@dataclass(frozen=True)
class ModelArgs:
    """The positional arguments of a model / guide pair, split into rows.

    Attributes
    ----------
    args
        What ``model(*args)`` takes. Tensors are data, ``n`` rows each (one
        per point); anything else (``None``, numbers, strings) is passed
        unchanged to every call.
    n
        Number of data points (rows).
    row_arg
        For each argument, whether it is split into rows.
    names
        A name per argument (the model's parameter names when known).
    bundle
        The :class:`DataBundle` the arguments came from (labels, image shape,
        provenance), or None.
    """

    args: tuple
    n: int
    row_arg: tuple[bool, ...]
    names: tuple[str, ...]
    bundle: DataBundle | None = None

    @property
    def labels(self) -> torch.Tensor | None:
        return None if self.bundle is None else self.bundle.labels

    def row_tensors(self) -> dict[str, torch.Tensor]:
        """Name -> ``(n, ...)`` tensor for every argument split into rows."""
        return {name: arg for name, arg, row in zip(self.names, self.args, self.row_arg) if row}

    def subset(self, index: torch.Tensor | slice) -> ModelArgs:
        """The rows ``index`` of every row argument (labels included)."""
        args = tuple(arg[index] if row else arg for arg, row in zip(self.args, self.row_arg))
        bundle = None if self.bundle is None else self.bundle.subset(index)
        n = args[self.row_arg.index(True)].shape[0]
        return replace(self, args=args, n=int(n), bundle=bundle)

    def batches(self, batch_size: int) -> Iterator[ModelArgs]:
        """Consecutive row blocks of at most ``batch_size`` rows."""
        for start in range(0, self.n, batch_size):
            yield self.subset(slice(start, start + batch_size))

    def to(self, device: torch.device) -> ModelArgs:
        """A copy whose tensors (and bundle) live on ``device``."""
        if self.bundle is not None:
            bundle = self.bundle.to(device)
            return replace(self, args=bundle.tensors(), bundle=bundle)
        args = tuple(arg.to(device) if isinstance(arg, torch.Tensor) else arg for arg in self.args)
        return replace(self, args=args)

    def digest(self) -> str:
        """SHA-256 of the row tensors' values: identifies the data points (e.g. a held-out set)."""
        digest = hashlib.sha256()
        for tensor in self.row_tensors().values():
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def repeated(self, times: int) -> tuple:
        """The arguments with every row argument repeated ``times`` times, sample-major: ``(times * n, ...)``."""
        return tuple(
            arg.expand(times, *arg.shape).reshape(times * arg.shape[0], *arg.shape[1:]) if row else arg
            for arg, row in zip(self.args, self.row_arg)
        )


def _parameter_names(fn: Callable, count: int) -> tuple[str, ...]:
    """The first ``count`` positional parameter names of ``fn`` (``arg0``, ... where unknown)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return tuple(params[i] if i < len(params) else f"arg{i}" for i in range(count))


def as_model_args(data: Any, model: Callable | None = None, *, name: str = "data") -> ModelArgs:
    """Turn what a model takes into :class:`ModelArgs`.

    Parameters
    ----------
    data
        A tensor ``(n, ...)`` (the model's one argument), a tuple / list of the
        model's positional arguments (tensors, ``n`` rows each, are data;
        ``None`` and other non-tensors are passed through), a :class:`DataBundle`
        (``bundle.tensors()``: ``(x,)`` or ``(x, y)``), or :class:`ModelArgs`.
    model
        The model callable, whose parameter names label the arguments.
    name
        The parameter name used in error messages.

    Raises
    ------
    ValueError
        No tensor argument, a tensor without rows, or row tensors whose
        numbers of rows differ.
    """
    if isinstance(data, ModelArgs):
        return data
    bundle = data if isinstance(data, DataBundle) else None
    if bundle is not None:
        args, names = bundle.tensors(), ("x", "y")[: len(bundle.tensors())]
    elif isinstance(data, torch.Tensor):
        args, names = (data,), None
    elif isinstance(data, (tuple, list)):
        args, names = tuple(data), None
    else:
        raise ValueError(f"{name} must be a torch.Tensor, a tuple of the model's positional arguments or a "
                         f"DataBundle, got {type(data).__module__}.{type(data).__name__}")
    tensors = [(i, a) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    if not tensors:
        raise ValueError(f"{name} must contain at least one torch.Tensor of data rows, got {args!r}")
    first, tensor = tensors[0]
    if tensor.dim() == 0 or tensor.shape[0] == 0:
        raise ValueError(f"{name}[{first}] must have at least one row, got shape {tuple(tensor.shape)}")
    n = int(tensor.shape[0])
    row_arg = tuple(isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n for a in args)
    odd = [(i, tuple(a.shape)) for i, a in tensors if not row_arg[i]]
    if odd:
        raise ValueError(f"every tensor in {name} must have the same number of rows ({n}, one per data point); "
                         f"{', '.join(f'{name}[{i}] has shape {s}' for i, s in odd)}")
    if names is None:
        names = _parameter_names(model, len(args)) if model is not None else tuple(f"arg{i}" for i in range(len(args)))
    return ModelArgs(args=args, n=n, row_arg=row_arg, names=tuple(names), bundle=bundle)


@dataclass(frozen=True)
class PyroTarget:
    """A model / guide pair ready for the diagnostics.

    Attributes
    ----------
    model, guide
        Pyro callables taking the same positional arguments.
    latent_sites
        Latent sample sites diagnosed (collapse statistics, draws), in the guide's order.
    all_latent_sites
        Every latent site of the model: the importance weights cover them all.
    observed_site
        The observed sample site whose likelihood is diagnosed.
    vectorize
        ``'repeat'`` or ``'plate'`` (module docstring).
    modules
        The ``torch.nn.Module`` objects holding the parameters (moved by ``diagnose(device=...)``).
    config
        The suite's model config (hyper-parameters, closed-form theory), or None.
    source
        The suite's model object, or None for plain callables.
    n_configs
        K when the pair runs K configurations at once (a ``BatchedModel``,
        its sites batched ``(K, n)`` by a plate at dim -2; see
        :mod:`ppl_vae.diagnostics.group`), else None.
    """

    model: Callable
    guide: Callable
    latent_sites: tuple[str, ...]
    all_latent_sites: tuple[str, ...]
    observed_site: str
    vectorize: str = "repeat"
    modules: tuple[torch.nn.Module, ...] = field(default_factory=tuple)
    config: Any = None
    source: Any = None
    n_configs: int | None = None

    @property
    def is_suite_model(self) -> bool:
        return self.config is not None

    def device(self) -> torch.device:
        """Where the parameters live (see :func:`parameter_device`)."""
        return parameter_device(self.modules)



def parameter_device(modules: tuple[torch.nn.Module, ...]) -> torch.device:
    """The modules' parameter device, else that of Pyro's parameter store, else the CPU."""
    for module in modules:
        for tensor in module.parameters():
            return tensor.device
    for _, value in pyro.get_param_store().items():
        return value.device
    return torch.device("cpu")


def is_suite_style(model: Any) -> bool:
    """True for objects that follow the suite's model contract (``model``, ``guide``, ``latent_sites``)."""
    return all(hasattr(model, name) for name in ("model", "guide", "latent_sites", "observed_site"))


def owner_modules(*callables: Callable) -> tuple[torch.nn.Module, ...]:
    """The ``nn.Module`` objects the callables are bound methods of (or are), without repeats."""
    found: list[torch.nn.Module] = []
    for fn in callables:
        owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, torch.nn.Module) and not any(owner is m for m in found):
            found.append(owner)
    return tuple(found)


def _sample_sites(trace, *, observed: bool) -> list[str]:
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and bool(site["is_observed"]) == observed]


def trace_pair(model: Callable, guide: Callable, args: tuple):
    """(guide trace, model trace replayed on it) of one plain call on ``args``.

    Every subsampled ``pyro.plate`` runs on its full range
    (:class:`~ppl_vae.diagnostics._sites.full_plates`): the diagnostics need a
    value for every data point, and the model gets the guide's indices.
    """
    with full_plates():
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return guide_trace, model_trace


def discover_sites(model: Callable, guide: Callable, args: tuple) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(latent sites in the guide's order, observed sites) from one traced call.

    Latent sites are the model's unobserved sample sites; each must also be
    sampled by the guide.

    Raises
    ------
    ValueError
        A model latent the guide does not sample, or no latent / observed site.
    """
    with torch.no_grad():
        guide_trace, model_trace = trace_pair(model, guide, args)
    model_latents = _sample_sites(model_trace, observed=False)
    guide_latents = _sample_sites(guide_trace, observed=False)
    missing = [name for name in model_latents if name not in guide_latents]
    if missing:
        raise ValueError(f"the guide does not sample the model's latent site(s) {', '.join(map(repr, missing))}; "
                         "the diagnostics need q for every latent")
    latents = tuple(name for name in guide_latents if name in model_latents)
    observed = tuple(_sample_sites(model_trace, observed=True))
    if not latents:
        raise ValueError("the model has no latent sample site (every site is observed or missing from the guide)")
    if not observed:
        raise ValueError("the model has no observed sample site (pyro.sample(..., obs=...))")
    return latents, observed


def _chosen(kind: str, given: tuple[str, ...] | None, found: tuple[str, ...]) -> tuple[str, ...]:
    if given is None:
        return found
    unknown = [name for name in given if name not in found]
    if unknown:
        raise ValueError(f"{kind} {', '.join(map(repr, unknown))} not found in the traces; "
                         f"the model's {kind.split('_')[0]} sites are {', '.join(map(repr, found))}")
    return tuple(given)


def as_target(
    model: Any,
    guide: Callable | None = None,
    data: Any = None,
    *,
    latent_sites: tuple[str, ...] | list[str] | str | None = None,
    observed_site: str | None = None,
    vectorize: str = "auto",
) -> PyroTarget:
    """A :class:`PyroTarget` from a suite model, or from a Pyro model / guide pair.

    Parameters
    ----------
    model
        A suite model (``ppl_vae.models``, or any object with ``model``,
        ``guide``, ``latent_sites`` and ``observed_site``), a Pyro model
        callable, or a :class:`PyroTarget` (returned as is).
    guide
        The guide callable (None for a suite model).
    data
        What the model takes (see :func:`as_model_args`): needed to find the
        sites of a callable pair by tracing a few rows.
    latent_sites, observed_site
        Name the sites instead of finding them; each must occur in the traces.
    vectorize
        ``'auto'`` (``'plate'`` for suite models, ``'repeat'`` for callables),
        ``'repeat'`` or ``'plate'``.
    """
    if isinstance(model, PyroTarget):
        return model
    vectorize = check_choice("vectorize", vectorize, VECTORIZE_CHOICES)
    if isinstance(latent_sites, str):
        latent_sites = (latent_sites,)
    if guide is None:
        if not is_suite_style(model):
            raise ValueError("guide is required unless model is a suite model (with model, guide, latent_sites "
                             f"and observed_site), got model={type(model).__name__}")
        return PyroTarget(
            model=model.model,
            guide=model.guide,
            latent_sites=_chosen("latent_sites", None if latent_sites is None else tuple(latent_sites),
                                 tuple(model.latent_sites)),
            all_latent_sites=tuple(model.latent_sites),
            observed_site=_chosen("observed_site", None if observed_site is None else (observed_site,),
                                  (model.observed_site,))[0],
            vectorize="plate" if vectorize == "auto" else vectorize,
            modules=owner_modules(model),
            config=getattr(model, "config", None),
            source=model,
        )
    if not callable(model) or not callable(guide):
        raise ValueError(f"model and guide must be callables, got {type(model).__name__} and {type(guide).__name__}")
    if data is None:
        raise ValueError("data is needed to find the sites of a model / guide pair")
    example = as_model_args(data, model).subset(slice(0, 8))
    found_latent, found_observed = discover_sites(model, guide, example.args)
    latents = _chosen("latent_sites", None if latent_sites is None else tuple(latent_sites), found_latent)
    if observed_site is None and len(found_observed) > 1:
        raise ValueError(f"the model has several observed sites ({', '.join(map(repr, found_observed))}); "
                         "name the one to diagnose with observed_site=")
    observed = _chosen("observed_site", None if observed_site is None else (observed_site,), found_observed)[0]
    return PyroTarget(model=model, guide=guide, latent_sites=latents, all_latent_sites=found_latent,
                      observed_site=observed,
                      vectorize="repeat" if vectorize == "auto" else vectorize, modules=owner_modules(model, guide))


def bind(model: Any, data: Any) -> tuple[PyroTarget, ModelArgs]:
    """(target, data on the target's device) for a suite model or a :class:`PyroTarget`."""
    target = as_target(model)
    return target, as_model_args(data, target.model).to(target.device())


#: Dimension names of the InferenceData; a site named like one is stored as ``<site>_site``.
RESERVED_NAMES = ("obs", "eval_obs", "chain", "draw", "epsilon", "run", "mode", "label")


def variable_name(site: str) -> str:
    """The InferenceData variable holding ``site`` (its own name unless that is a dimension name)."""
    return f"{site}_site" if site in RESERVED_NAMES else site


def observed_argument(args: ModelArgs, observed: torch.Tensor) -> str | None:
    """The name of the row argument whose rows equal the observed values ``(n, d)``, or None."""
    flat = observed.detach().reshape(observed.shape[0], -1)
    for name, tensor in args.row_tensors().items():
        rows = tensor.detach().reshape(tensor.shape[0], -1).to(flat.device, flat.dtype)
        if rows.shape == flat.shape and torch.equal(rows, flat):
            return name
    return None
