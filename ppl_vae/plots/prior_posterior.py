"""The aggregate posterior of a collapsed and of an active dimension against the prior."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._style import SAFE_COLOURS, new_figure, themed


def pick_dimensions(kl_mean: xr.DataArray) -> dict[str, int]:
    """``{'collapsed': i, 'active': j}``: the dimensions with the smallest and the largest mean KL.

    Parameters
    ----------
    kl_mean
        ``<site>_kl_mean`` over ``<site>_dim`` (nats), at least one finite value.
    """
    values = kl_mean.values.astype(float)
    if not np.isfinite(values).any():
        raise ValueError(f"{kl_mean.name}: no finite KL to pick dimensions from")
    dims = kl_mean[kl_mean.dims[0]].values
    return {"collapsed": int(dims[np.nanargmin(values)]), "active": int(dims[np.nanargmax(values)])}


def prior_vs_posterior(posterior: xr.DataArray, prior: xr.DataArray, kl_mean: xr.DataArray, *,
                       epsilon: float = 0.01, title: str | None = None) -> Figure:
    """Histograms of the aggregate posterior q(z_i) (draws pooled over points) and of the prior, two dimensions.

    Parameters
    ----------
    posterior, prior
        Draws of one latent site, ``(chain, draw, obs, <site>_dim)`` (the
        ``posterior`` / ``prior`` groups of :func:`ppl_vae.diagnostics.diagnose`).
    kl_mean
        ``<site>_kl_mean`` (nats): the dimensions with the smallest and largest KL are shown.
    """
    dim = kl_mean.dims[0]
    picked = pick_dimensions(kl_mean)
    site = dim.removesuffix("_dim")
    with themed():
        fig = new_figure(8.4, 3.2)
        axes = fig.subplots(1, 2, sharey=False)
        for ax, (role, index) in zip(axes, picked.items()):
            q = posterior.sel({dim: index}).values.ravel()
            p = prior.sel({dim: index}).values.ravel()
            q, p = q[np.isfinite(q)], p[np.isfinite(p)]
            edges = np.histogram_bin_edges(np.concatenate([q, p]), bins=30)
            ax.hist(p, bins=edges, density=True, color=SAFE_COLOURS[7], alpha=0.55, label="prior draws")
            ax.hist(q, bins=edges, density=True, histtype="step", lw=2, color=SAFE_COLOURS[0],
                    label="aggregate posterior")
            kl = float(kl_mean.sel({dim: index}))
            state = "collapsed" if kl < epsilon else ("least active" if role == "collapsed" else "active")
            ax.set(xlabel=f"{site}[{index}]", ylabel="density", title=f"{state}: {site}[{index}], KL {kl:.2g} nats")
        # one legend above both panels: inside, it would sit on the histograms
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=2, fontsize="x-small",
                   frameon=False)
        if title:
            fig.suptitle(title, fontsize="medium")
    return fig
