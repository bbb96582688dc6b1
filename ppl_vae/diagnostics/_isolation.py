"""Leave no trace on the user's run: what :func:`~ppl_vae.diagnostics.diagnose` saves and restores.

``diagnose`` runs the user's model and guide; around that work,
:func:`untouched` restores

- the random number generators: torch's CPU generator, every initialised CUDA
  device's, Python's ``random`` and NumPy's global state (the diagnostics seed
  their own draws, so a training loop that calls ``diagnose`` every k steps
  draws the same numbers as the loop without it);
- each module's ``training`` flag: the modules are put in eval mode while they
  are diagnosed (BatchNorm uses, and does not update, its running statistics;
  dropout is off) and put back as they were;
- Pyro's parameter store: parameters the traced calls register (``pyro.module``,
  ``pyro.param`` with an initial value) are removed again, and the values and
  constraints of those already there are put back.

Where the modules live is the caller's business (``diagnose(device=...)``).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pyro
import torch


def referenced_modules(*callables: Callable) -> tuple[torch.nn.Module, ...]:
    """``nn.Module`` objects the callables are (bound methods of), or name in their closures / globals.

    Plain functions that call ``pyro.module("encoder", encoder)`` on a module
    defined at module level are found through the names they use.
    """
    found: list[torch.nn.Module] = []

    def add(candidate) -> None:
        if isinstance(candidate, torch.nn.Module) and not any(candidate is m for m in found):
            found.append(candidate)

    for fn in callables:
        add(fn)
        add(getattr(fn, "__self__", None))
        target = getattr(fn, "__func__", fn)
        if inspect.isfunction(target):
            try:
                names = inspect.getclosurevars(target)
            except (TypeError, ValueError):
                continue
            for value in (*names.nonlocals.values(), *names.globals.values()):
                add(value)
    return tuple(found)


@contextmanager
def rng_preserved() -> Iterator[None]:
    """Restore torch's (CPU and initialised CUDA), Python's and NumPy's global RNG states on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextmanager
def eval_mode(modules: tuple[torch.nn.Module, ...]) -> Iterator[None]:
    """Every module (and submodule) in eval mode for the block, each flag put back as it was."""
    flags = [(sub, sub.training) for module in modules for sub in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for sub, training in flags:
            sub.training = training


@contextmanager
def param_store_preserved() -> Iterator[None]:
    """Pyro's parameter store as it was on exit: new names removed, old values and constraints restored."""
    store = pyro.get_param_store()
    before = {name: (store._params[name], store._constraints[name]) for name in store.keys()}
    try:
        yield
    finally:
        for name in [name for name in store.keys() if name not in before]:
            del store[name]
        for name, (unconstrained, constraint) in before.items():
            if store._params.get(name) is not unconstrained:
                store._params[name] = unconstrained
                store._param_to_name[unconstrained] = name
            store._constraints[name] = constraint


@contextmanager
def untouched(modules: tuple[torch.nn.Module, ...]) -> Iterator[None]:
    """All of the above around a block (module docstring)."""
    with rng_preserved(), param_store_preserved(), eval_mode(modules):
        yield
