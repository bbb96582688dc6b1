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
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ppl-vae")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
