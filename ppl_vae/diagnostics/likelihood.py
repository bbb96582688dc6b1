"""Held-out fit: importance-weighted log-likelihood, ELBO and reconstruction error.

For each data point, K latents (every latent site) are drawn from the guide,
the proposal, and weighted by w_k = p(obs | z_k) p(z_k | .) / q(z_k | .), with
every density taken WITHOUT the beta factor; log p(obs) is estimated by logsumexp_k log w_k - log K (SPEC
section 5). The same draws give the ELBO (mean of log w_k), the training
objective with the trained beta (each KL term times its site's
``poutine.scale``), and the squared reconstruction error of the decoder mean.
Work is batched over samples and points on the model's device.

Masks follow Pyro (:mod:`._sites`): masked entries add nothing to a density,
and a point whose observed site is masked in full has no likelihood: its
pointwise values are NaN and the means, the standard error and the
``log_likelihood`` group leave it out (``attrs['n_eval']`` counts the points kept).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .._validate import check_int_range
from ._traces import seeded, trace_batch
from .target import ModelArgs, PyroTarget, bind

#: Default draws and points per forward pass of the likelihood (peak memory ~ their product x outputs).
SAMPLE_CHUNK = 100
BATCH_SIZE = 256


def evaluation_metrics(
    model,
    data,
    *,
    iw_samples: int = 1000,
    sample_chunk: int = SAMPLE_CHUNK,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
) -> xr.Dataset:
    """Importance-weighted log-likelihood, ELBO and reconstruction MSE on ``data``.

    Parameters
    ----------
    model
        A suite model, or a :class:`~ppl_vae.diagnostics.target.PyroTarget`
        for any Pyro model / guide pair. The weights cover every latent site.
    data
        What the model takes, usually held-out points; ``n`` of them.
    iw_samples
        K, guide draws per point (the paper uses 1000).
    sample_chunk, batch_size
        Draws and points per forward pass; peak memory is about
        ``sample_chunk * batch_size * d_obs`` floats.
    seed
        Seeds the guide draws.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    xr.Dataset
        Pointwise over ``eval_obs``: ``iw_log_likelihood_pointwise``,
        ``elbo_pointwise``, ``elbo_beta_pointwise`` (nats per point) and
        ``squared_error_pointwise`` (mean over output dimensions); scalars:
        their means ``iw_log_likelihood``, ``elbo``, ``elbo_beta``,
        ``reconstruction_mse`` and ``iw_log_likelihood_se`` (standard error over points).
        The squared error is NaN when the likelihood has no mean.
        ``attrs['eval_data_sha256']`` identifies the points (pointwise
        comparisons between runs need the same points).
    """
    target, args = bind(model, data)
    pointwise = pointwise_metrics(target, args, iw_samples=iw_samples, sample_chunk=sample_chunk,
                                  batch_size=batch_size, seed=seed, progress=progress)
    return metrics_dataset({name: values.numpy() for name, values in pointwise.items()}, iw_samples=iw_samples,
                           seed=seed, digest=args.digest())


def pointwise_metrics(
    target: PyroTarget,
    args: ModelArgs,
    *,
    iw_samples: int = 1000,
    sample_chunk: int = SAMPLE_CHUNK,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """The per-point quantities of :func:`evaluation_metrics` as float64 CPU tensors.

    Returns
    -------
    dict
        ``iw_log_likelihood``, ``elbo``, ``elbo_beta``, ``squared_error``: each
        ``(n,)``, or ``(K, n)`` for a target batched over K configurations.
    """
    check_int_range("iw_samples", iw_samples, 1)
    check_int_range("sample_chunk", sample_chunk, 1)
    check_int_range("batch_size", batch_size, 1)
    device = target.device()
    configs = () if target.n_configs is None else (target.n_configs,)
    chunks = [min(sample_chunk, iw_samples - start) for start in range(0, iw_samples, sample_chunk)]
    batches = list(args.batches(batch_size))
    iw, sums, kept = [], [], []
    bar = tqdm(total=len(batches) * len(chunks), desc=f"IW log-likelihood (K={iw_samples})", disable=not progress)
    with torch.no_grad(), seeded(seed, device), bar:
        for batch in batches:
            log_sum = torch.full((*configs, batch.n), -math.inf, dtype=torch.float64, device=device)
            total = torch.zeros(3, *configs, batch.n, dtype=torch.float64, device=device)
            for size in chunks:
                traced = trace_batch(target, batch, size)
                log_w, log_w_beta = traced.log_weight.double(), traced.log_weight_beta.double()
                log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, 0))
                if traced.decoder_mean is None:
                    err = torch.full_like(log_w, math.nan)
                else:
                    # squares summed in float64 without a float64 copy of the (draws, points, outputs) array
                    diff = traced.decoder_mean - traced.observed
                    err = diff.square_().sum(-1, dtype=torch.float64) / diff.shape[-1]
                total += torch.stack([log_w.sum(0), log_w_beta.sum(0), err.sum(0)])
                bar.update()
            iw.append((log_sum - math.log(iw_samples)).cpu())
            sums.append((total / iw_samples).cpu())
            rows = traced.observed_rows
            kept.append(torch.ones(batch.n, dtype=torch.bool) if rows is None else rows.cpu())
    means = torch.cat(sums, dim=-1)
    out = {"iw_log_likelihood": torch.cat(iw, dim=-1), "elbo": means[0], "elbo_beta": means[1],
           "squared_error": means[2]}
    observed = torch.cat(kept)
    if not bool(observed.all()):  # fully masked points have no likelihood (Pyro: they add nothing)
        out = {name: values.masked_fill(~observed, math.nan) for name, values in out.items()}
    return out


def metrics_dataset(pointwise: dict[str, np.ndarray], *, iw_samples: int, seed: int, digest: str) -> xr.Dataset:
    """The ``metrics`` Dataset of one model from its :func:`pointwise_metrics` (each ``(n,)``).

    The five summaries are xarray's own reductions (NaN skipped) of the pointwise
    variables, added in one assignment: a sweep builds this group for every
    configuration, and five assignments (an alignment and a copy each) cost several
    times the arithmetic. Variables, attributes and their order are as before.
    """
    rows = len(pointwise["iw_log_likelihood"])
    points = {f"{k}_pointwise": xr.Variable("eval_obs", v) for k, v in pointwise.items()}
    n = int((~np.isnan(pointwise["iw_log_likelihood"])).sum())
    summaries = {
        "iw_log_likelihood": points["iw_log_likelihood_pointwise"].mean(),
        "iw_log_likelihood_se": points["iw_log_likelihood_pointwise"].std(ddof=1) / np.sqrt(max(n, 1)),
        "elbo": points["elbo_pointwise"].mean(),
        "elbo_beta": points["elbo_beta_pointwise"].mean(),
        "reconstruction_mse": points["squared_error_pointwise"].mean(),
    }
    every = {**points, **summaries}
    for name in ("iw_log_likelihood", "iw_log_likelihood_pointwise", "elbo", "elbo_pointwise"):
        every[name].attrs["units"] = "nats per data point"
    long_name = "ELBO with each KL term times the training beta"
    every["elbo_beta"].attrs["long_name"] = long_name
    every["elbo_beta_pointwise"].attrs["long_name"] = long_name
    ds = xr.Dataset(points, coords={"eval_obs": np.arange(rows)}).assign(summaries)
    return ds.assign_attrs(iw_samples=iw_samples, n_eval=n, seed=seed, eval_data_sha256=digest)


def iw_log_likelihood(model, data, *, iw_samples: int = 1000, seed: int = 0, **options) -> xr.DataArray:
    """Importance-weighted estimate of log p(obs) per point, ``(eval_obs,)``, nats.

    A lower bound in expectation that tightens as ``iw_samples`` grows; see
    :func:`evaluation_metrics` for ``options``.
    """
    return evaluation_metrics(model, data, iw_samples=iw_samples, seed=seed, **options)["iw_log_likelihood_pointwise"]
