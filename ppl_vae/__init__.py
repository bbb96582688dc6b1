"""ppl_vae: detect, predict and explain posterior collapse in CVAEs and MHVAEs.

The package is split by concern:

- :mod:`ppl_vae.data`        synthetic Gaussian data, bundled digits, local MNIST, CVAE splits
- :mod:`ppl_vae.theory`      closed-form collapse predictions for linear models (float64)
- :mod:`ppl_vae.models`      Pyro model/guide pairs (VAE, CVAE, MHVAE)
- :mod:`ppl_vae.inference`   SVI training, checkpoints
- :mod:`ppl_vae.diagnostics` collapse metrics as ArviZ/xarray objects
- :mod:`ppl_vae.plots`       figures drawn from those objects only
- :mod:`ppl_vae.report`      self-contained HTML reports
- :mod:`ppl_vae.sweep`       hyper-parameter sweeps (vectorised, local, Ray)
- :mod:`ppl_vae.cli`         the ``ppl-vae`` command

The everyday functions are here too, imported on first use (PEP 562), so that
``import ppl_vae`` costs no torch, Pyro or ArviZ::

    from ppl_vae import diagnose, fit, save, load, combine, compare_heldout, theory
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> (module, attribute or None for the module itself), imported when first asked for.
_LAZY = {
    "diagnose": ("ppl_vae.diagnostics", "diagnose"),
    "save": ("ppl_vae.diagnostics", "save"),
    "load": ("ppl_vae.diagnostics", "load"),
    "combine": ("ppl_vae.diagnostics", "combine"),
    "compare_heldout": ("ppl_vae.diagnostics", "compare_heldout"),
    "fit": ("ppl_vae.inference", "fit"),
    "theory": ("ppl_vae.theory", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("ppl-vae")
        except PackageNotFoundError:  # running from a source tree that is not installed
            value = "0.0.0+unknown"
    elif name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
