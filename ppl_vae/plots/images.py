"""Image grids: CVAE conditional completions and (MHVAE / VAE) reconstructions."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ..data.images import join_split
from ._style import new_figure, themed

_CMAP = mpl.colormaps["gray_r"].with_extremes(bad="#dbe4f0")  # bad = the hidden part of a "given" image


def _first_chain(draws: xr.DataArray) -> xr.DataArray:
    return draws.isel(chain=0) if "chain" in draws.dims else draws


def _show(ax, image: np.ndarray, label: str | None) -> None:
    ax.imshow(np.ma.masked_invalid(image), cmap=_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if label:
        ax.set_title(label, fontsize="small")


def completion_grid(condition: xr.DataArray, observed: xr.DataArray, completions: xr.DataArray,
                    image_shape: tuple[int, int], split: str, *, n_obs: int = 6, n_completions: int = 4,
                    title: str | None = None) -> Figure:
    """Rows of: the true image, the given part alone, and completions drawn from p(z | x).

    Parameters
    ----------
    condition
        ``(obs, x_dim)``, the CVAE input x (``constant_data.x``).
    observed
        ``(obs, y_dim)``, the true output y (``observed_data.y``).
    completions
        ``([chain,] draw, obs, y_dim)`` decoder means with z from the prior
        (``prior_predictive.y_mean``).
    image_shape, split
        How x and y tile the image (``DataBundle.image_shape`` / ``.split``).
    """
    n_rows = min(n_obs, condition.sizes["obs"])
    draws = _first_chain(completions)
    n_cols = 2 + min(n_completions, draws.sizes["draw"])
    x = condition.isel(obs=slice(0, n_rows)).values
    y = observed.isel(obs=slice(0, n_rows)).values
    truth = join_split(x, y, image_shape, split)
    given = join_split(x, np.full_like(y, np.nan), image_shape, split)
    generated = [
        join_split(x, draws.isel(draw=k, obs=slice(0, n_rows)).transpose("obs", ...).values, image_shape, split)
        for k in range(n_cols - 2)
    ]
    with themed():
        fig = new_figure(1.1 * n_cols + 0.4, 1.15 * n_rows + 0.5)
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for row in range(n_rows):
            _show(axes[row, 0], truth[row], "data" if row == 0 else None)
            _show(axes[row, 1], given[row], "given x" if row == 0 else None)
            for k, images in enumerate(generated):
                _show(axes[row, 2 + k], images[row], f"completion {k + 1}" if row == 0 else None)
        fig.suptitle(title or "conditional completions, z ~ p(z | x)", fontsize="medium")
    return fig


def reconstruction_grid(observed: xr.DataArray, reconstructions: xr.DataArray, image_shape: tuple[int, int], *,
                        n_obs: int = 6, n_draws: int = 3, title: str | None = None) -> Figure:
    """Rows of: the data image, then decoder means for a few guide draws.

    Parameters
    ----------
    observed
        ``(obs, x_dim)`` (``observed_data.x``).
    reconstructions
        ``([chain,] draw, obs, x_dim)`` decoder means (``posterior_predictive.x_mean``).
    image_shape
        ``(H, W)`` with ``H * W == x_dim``.
    """
    n_rows = min(n_obs, observed.sizes["obs"])
    draws = _first_chain(reconstructions)
    n_cols = 1 + min(n_draws, draws.sizes["draw"])
    originals = join_split(observed.isel(obs=slice(0, n_rows)).values, None, image_shape, None)
    recon = [
        join_split(draws.isel(draw=k, obs=slice(0, n_rows)).transpose("obs", ...).values, None, image_shape, None)
        for k in range(n_cols - 1)
    ]
    with themed():
        fig = new_figure(1.1 * n_cols + 0.4, 1.15 * n_rows + 0.5)
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for row in range(n_rows):
            _show(axes[row, 0], originals[row], "data" if row == 0 else None)
            for k, images in enumerate(recon):
                _show(axes[row, 1 + k], images[row], f"recon {k + 1}" if row == 0 else None)
        fig.suptitle(title or "reconstructions, z ~ q(z | x)", fontsize="medium")
    return fig


def _strip(images: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """``(n, H W)`` images side by side as one ``(H, n (W + 1) - 1)`` array, NaN columns between them."""
    height, width = image_shape
    tiles = np.asarray(images, dtype=float).reshape(-1, height, width)
    gap = np.full((height, 1), np.nan)
    return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)


def reconstruction_matrix(originals: np.ndarray, cells: dict[tuple[float, float], np.ndarray],
                          image_shape: tuple[int, int], *, rows: str = "beta1", columns: str = "beta2",
                          title: str | None = None) -> Figure:
    """The same few images reconstructed over a grid of two hyper-parameters.

    Parameters
    ----------
    originals
        ``(n, H W)`` data images (shown once, above the grid).
    cells
        ``(row value, column value) -> (n, H W)`` reconstructions of ``originals``
        by that configuration's model; a missing cell stays blank.
    image_shape
        ``(H, W)``.
    rows, columns
        Names of the two hyper-parameters (axis labels).
    """
    row_values = sorted({r for r, _ in cells})
    column_values = sorted({c for _, c in cells})
    n = np.asarray(originals).shape[0]
    with themed():
        fig = new_figure(max(3.0, 0.45 * n * len(column_values) + 1.0), 0.6 * (len(row_values) + 1) + 1.0)
        axes = fig.subplots(len(row_values) + 1, len(column_values), squeeze=False)
        for ax in axes[0]:
            ax.set_axis_off()
        _show(axes[0, 0], _strip(originals, image_shape), "data")
        axes[0, 0].set_axis_on()
        for i, r in enumerate(row_values):
            for j, c in enumerate(column_values):
                ax = axes[i + 1, j]
                if (r, c) in cells:
                    _show(ax, _strip(cells[(r, c)], image_shape), f"{columns}={c:g}" if i == 0 else None)
                else:
                    ax.set_axis_off()
                if j == 0:
                    ax.set_ylabel(f"{rows}={r:g}", fontsize="small")
        fig.suptitle(title or f"reconstructions over {rows} (rows) and {columns} (columns)", fontsize="medium")
    return fig
