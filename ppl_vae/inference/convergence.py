"""Did a model's training settle? A cheap check at the end of ``fit``, for every architecture.

Three things must hold for a run to count as converged (``converged`` True):

1. the parameters moved measurably from their initial values (relative L2
   change at least :data:`MOVE_RTOL`): a model that never trained (``lr``
   1e-12) has a flat loss and a frozen readout, and is never "settled";
2. the loss stopped falling over the last :data:`WINDOW` of the steps;
3. the judged metric stopped moving over that window: the per-dimension KL
   (without beta) of every latent site on a fixed probe of at most
   :data:`PROBE_ROWS` training rows, read at :data:`N_METRIC_SNAPSHOTS`
   steps: at most :data:`COUNT_TOL` dimensions cross the collapse threshold
   (mean KL 0.01 nats) while their KL spans more than a band of
   +/- :data:`COUNT_BAND` around it, and the total KL has no change larger than
   :data:`METRIC_RTOL` of its value (at least :data:`KL_FLOOR` nats).

   Why a band: a dimension that sits AT the threshold (measured: a per-class
   MLP CVAE whose two dimensions read 0.0102, 0.0099, 0.0100, 0.0100 and
   0.0100, 0.0099, 0.0099, 0.0098 nats) flips the hard count by two while its
   KL moves by 3%: that is the readout's resolution, and no amount of
   training removes it. A dimension that crosses while its KL moves by more
   than the band (the MHVAE's 0.0135, 0.0099, 0.0232, 0.0085) is movement.
   Dimensions are counted one by one, so two that cross in opposite
   directions (a net count that does not change) are caught as well. A VAE
   whose loss does not single out the latent axes (one fixed encoder std,
   :func:`rotation_free`) is read along the principal axes of its encoder
   means: its per-axis KL drifts along a flat direction of the loss.

For linear models the decoder singular values are watched as well:

SVI with a constant learning rate never stops moving: the parameters jitter
around the optimum by an amount that grows with the learning rate. For the
linear models the collapse count is read off the decoder singular values
against a tolerance (:data:`~ppl_vae.models.readout.COLLAPSE_TOL`), and weakly
determined directions are exactly the collapsed ones, so a learning rate that
is too large (a linear CVAE with lr >= 0.2) leaves a plateaued loss yet a
collapse count that changes from one step to the next. The check therefore
watches what the run reports:

- the decoder singular values at a few steps spread over the last
  :data:`WINDOW` of training (one small SVD each): a mode that crosses the
  collapse tolerance, a mode that reaches the tolerance and jitters by more
  than :data:`RTOL` of the largest singular value, an active mode still
  drifting one way (a linear trend over the window larger than three residual
  deviations and than :data:`DRIFT_RTOL` of its value), or a mode below the
  tolerance throughout that rises toward it (a significant upward trend of
  more than :data:`RTOL` of the tolerance) means the readout has not settled.
  A mode below the tolerance throughout is otherwise left alone: SVI keeps it
  a few thousandths from zero, and measuring that noise against the
  tolerance (when every mode is collapsed, the scale) flagged settled runs;
- the loss over the same window: a decrease between its two halves larger
  than three standard errors and than :data:`LOSS_RTOL` (relative) means
  training was still improving when it stopped (item 2 above).

A run shorter than :data:`MIN_STEPS`, or resumed inside the window, is not
judged (``converged`` None).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ppl_vae.models.readout import COLLAPSE_TOL, decoder_singular_values

#: Fraction of the steps, at the end, over which the check looks.
WINDOW = 0.2
#: Decoder snapshots taken over the window.
N_SNAPSHOTS = 10
#: Most spread (max - min) of a decoder singular value over the window, relative to the largest one.
RTOL = 0.1
#: Least drift of an active decoder singular value over the window, relative to its value, that counts.
DRIFT_RTOL = 0.05
#: Least relative loss decrease over the window that counts as "still improving".
LOSS_RTOL = 1e-3
#: Shortest run the check judges.
MIN_STEPS = 100
#: Least relative L2 change of a configuration's parameters from their initial values that counts as training.
MOVE_RTOL = 1e-3
#: Training rows on which the per-dimension KL is read at the snapshots.
PROBE_ROWS = 128
#: Snapshots (spread over the window, first and last included) at which the per-dimension KL is read.
N_METRIC_SNAPSHOTS = 4
#: Most dimensions that may cross the collapse threshold (moving by more than the band) over the metric snapshots.
COUNT_TOL = 1
#: Most change of the total KL over the metric snapshots, relative to its value.
METRIC_RTOL = 0.1
#: A crossing counts when the dimension's KL spans more than the band ``KL_EPSILON * (1 +/- COUNT_BAND)`` is wide
#: (0.002 nats): the same relative resolution as the total KL's (:data:`METRIC_RTOL`).
COUNT_BAND = METRIC_RTOL
#: Smallest total KL (nats) the relative change is measured against (a nearly collapsed site may halve 0.01 nats).
KL_FLOOR = 0.5
#: Mean KL (nats) below which a dimension counts as collapsed (the diagnostics' default epsilon).
KL_EPSILON = 0.01


class NotConvergedWarning(UserWarning):
    """A model's parameters, loss or judged readout had not settled when training stopped."""


def snapshot_steps(total_steps: int, start_step: int) -> list[int]:
    """The steps (counted as done, 1-based) after which the decoder is read: none if the run is not judged."""
    if total_steps < MIN_STEPS:
        return []
    first = total_steps - math.ceil(WINDOW * total_steps)
    if start_step > first:
        return []
    return sorted({int(round(step)) for step in np.linspace(first, total_steps, N_SNAPSHOTS)} - {0})


def metric_snapshot(index: int) -> bool:
    """Whether the ``index``-th snapshot (0-based, of :data:`N_SNAPSHOTS`) also reads the per-dimension KL."""
    stride = max(1, (N_SNAPSHOTS - 1) // (N_METRIC_SNAPSHOTS - 1))
    return index % stride == 0 or index == N_SNAPSHOTS - 1


def take_snapshot(models, data=None, index: int = 0) -> list[dict[str, np.ndarray | None]]:
    """Each model's readout: ``{'sv': decoder singular values (linear) or None, 'kl': per-dimension KL or None}``.

    ``kl`` (all sites' dimensions, concatenated; nats) is read from the first
    :data:`PROBE_ROWS` rows of ``data`` when ``data`` is given and
    :func:`metric_snapshot` selects ``index``.
    """
    probe = None
    if data is not None and metric_snapshot(index):
        import torch

        probe = data.subset(torch.arange(min(PROBE_ROWS, data.n), device=data.x.device))
    return [{"sv": decoder_singular_values(m) if m.config.arch == "linear" else None,
             "kl": None if probe is None else kl_by_dimension(m, probe)} for m in models]


def kl_by_dimension(model, probe) -> np.ndarray:
    """Mean over the probe rows of KL(q || p) per latent dimension, every site concatenated (nats, no beta).

    For a model whose loss does not depend on the latent basis (:func:`rotation_free`) the dimensions are the
    principal axes of the encoder means (:func:`principal_kl`), not the latent axes.
    """
    from ppl_vae.diagnostics.collapse import kl_per_dimension

    if rotation_free(model):
        return principal_kl(model, probe)

    was_training = model.training
    try:
        kl = kl_per_dimension(model, probe, num_samples=1, batch_size=PROBE_ROWS)
    finally:
        model.train(was_training)
    return np.concatenate([kl[site].values.mean(axis=0) for site in kl.data_vars])


def rotation_free(model) -> bool:
    """Whether ``model``'s loss is unchanged by a rotation R of its latent basis.

    A linear or MLP VAE with one fixed encoder std for every dimension and the prior N(0, eta_enc^2 I): z -> R z
    with the encoder's mean head multiplied by R and the decoder's first layer by R^T leaves q's and p's
    densities, hence the ELBO, as they were. Its per-axis KL is then a choice of basis, not a readout: measured
    on a trained linear VAE (digits, beta 4, eta_dec 0.5, std 1), three random rotations moved the count of
    axes under 0.01 nats from 5 to 6, 5 and 1 at the same total KL (1.1013 nats), and SVI drifts along that
    flat direction, so two axes crossed 0.01 nats in opposite directions while the decoder's singular values
    (15 of 16 collapsed) did not move. A learned (diagonal, input-dependent) std singles the axes out.
    """
    config = model.config
    if getattr(model, "family", None) != "vae" or getattr(config, "arch", None) not in ("linear", "mlp"):
        return False
    if getattr(config, "prior", "standard") != "standard" or getattr(config, "encoder_std", None) is None:
        return False
    return float(np.ptp(np.atleast_1d(np.asarray(config.encoder_std, dtype=np.float64)))) == 0.0


def principal_kl(model, probe) -> np.ndarray:
    """Mean KL(q || p) along the principal axes of a :func:`rotation_free` VAE's encoder means on ``probe``.

    With q = N(m(x), s^2 I) and p = N(0, t^2 I) the mean KL along a unit direction u is
    ``log(t / s) + (s^2 + u^T M u) / (2 t^2) - 1/2`` with ``M`` the second moment of m over the probe rows: along
    M's eigenvectors it is the same expression at M's eigenvalues. Returned in descending order (shape
    ``(latent_dim,)``, float64, nats); their sum is the per-axis KL's sum.
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            loc, scale = model.encoder(probe.x)
    finally:
        model.train(was_training)
    loc = loc.detach().double().cpu().numpy()
    variance = float(scale.detach().double().reshape(-1)[0].cpu()) ** 2
    prior_variance = float(model.config.eta_enc) ** 2
    moments = np.linalg.eigvalsh(loc.T @ loc / loc.shape[0])[::-1]
    return 0.5 * (np.log(prior_variance / variance) + (variance + moments) / prior_variance - 1.0)


def parameter_copy(parameters) -> list:
    """Detached copies of the trained parameters (the starting point :func:`parameter_movement` measures from)."""
    return [p.detach().clone() for p in parameters]


def parameter_movement(initial, final, n_configs: int) -> np.ndarray:
    """Relative L2 change ``||theta - theta_0|| / ||theta_0||`` of each configuration's parameters.

    Parameters
    ----------
    initial, final
        Matching sequences of tensors; with ``n_configs > 1`` each has a leading
        configuration axis of size ``n_configs`` (a batched model's stacked
        parameters).

    Returns
    -------
    np.ndarray of shape ``(n_configs,)``, float64 (dimensionless).
    """
    change = np.zeros(n_configs)
    size = np.zeros(n_configs)
    for start, end in zip(initial, final):
        start, end = start.detach().double(), end.detach().double()
        rows = start.reshape(n_configs, -1) if n_configs > 1 else start.reshape(1, -1)
        moved = (end.reshape(rows.shape) - rows)
        change += moved.pow(2).sum(dim=1).cpu().numpy()
        size += rows.pow(2).sum(dim=1).cpu().numpy()
    return np.sqrt(change) / np.maximum(np.sqrt(size), np.finfo(np.float64).tiny)


def judge(snapshots: list[list], history: np.ndarray, n_configs: int,
          moved: np.ndarray | None = None) -> list[dict[str, Any] | None]:
    """One verdict per configuration: ``{'converged': bool | None, 'reason': str, ...}``; None if it diverged.

    Parameters
    ----------
    snapshots
        ``take_snapshot`` at each of :func:`snapshot_steps` (empty: not judged).
        A bare array per model (older callers) is read as its decoder singular values.
    history
        ``(steps, K)`` per-sample loss of the whole run.
    moved
        ``(K,)`` :func:`parameter_movement` of this run (None: not checked).
    """
    verdicts: list[dict[str, Any] | None] = []
    for k in range(n_configs):
        values = [_as_record(snap[k]) for snap in snapshots]
        if any(_non_finite(v) for v in values):
            verdicts.append(None)  # diverged in the window
            continue
        if len(values) < 2:
            verdicts.append({"converged": None, "reason": f"not judged: fewer than {MIN_STEPS} steps, or resumed "
                                                           "inside the last fifth of the run"})
            continue
        verdicts.append(_verdict(values, history[:, k], None if moved is None else float(moved[k])))
    return verdicts


def _as_record(value) -> dict[str, np.ndarray | None]:
    return value if isinstance(value, dict) else {"sv": value, "kl": None}


def _non_finite(record: dict[str, np.ndarray | None]) -> bool:
    return any(v is not None and not np.isfinite(v).all() for v in record.values())


def _verdict(records: list[dict], loss: np.ndarray, moved: float | None) -> dict[str, Any]:
    """The verdict of one configuration from its snapshots, its loss and its parameter movement."""
    reasons: list[str] = []
    details: dict[str, Any] = {}
    if moved is not None:
        details["param_rel_change"] = moved
        if moved < MOVE_RTOL:
            reasons.append(f"the parameters barely moved from their initial values (relative change {moved:.2g} < "
                           f"{MOVE_RTOL:g}): the model did not train")
    kl = [r["kl"] for r in records if r["kl"] is not None]
    if len(kl) >= 2:
        reasons += _metric_reasons(np.stack(kl), details)
    sv = [r["sv"] for r in records if r["sv"] is not None]
    if len(sv) >= 2:
        reasons += _sv_reasons(np.stack(sv), details)
    drop = _loss_drop(loss)
    if drop is not None:
        reasons.append(f"the loss was still falling ({drop:.2g} nats per sample over the stretch)")
    return {"converged": not reasons, "reason": "; ".join(reasons) or "settled", **details}


def _metric_reasons(kl: np.ndarray, details: dict[str, Any]) -> list[str]:
    """Reasons the ``(snapshots, dims)`` per-dimension KL has not settled (empty: it has)."""
    below = kl < KL_EPSILON
    counts = below.sum(axis=1)
    # a crossing counts when the dimension was on both sides of the threshold and its KL moved by more than the
    # band; one that hovers at the threshold (a few percent of it) flips the hard count without moving
    crossed = below.any(axis=0) & (~below).any(axis=0) & (np.ptp(kl, axis=0) > 2 * COUNT_BAND * KL_EPSILON)
    totals = kl.sum(axis=1)
    change = float(np.ptp(totals)) / max(float(totals.max()), KL_FLOOR)
    details.update(kl_collapsed_counts=counts.tolist(), kl_crossed_dims=int(crossed.sum()), kl_total_rel_change=change)
    reasons = []
    if crossed.sum() > COUNT_TOL:
        reasons.append(f"{int(crossed.sum())} dimensions crossed the collapse threshold (the KL-collapsed dimension "
                       f"count changed between {counts.min()} and {counts.max()}) over the last {WINDOW:.0%} of the "
                       "steps")
    if change > METRIC_RTOL:
        reasons.append(f"the total KL still moved by {change:.0%} over the last {WINDOW:.0%} of the steps")
    return reasons


def _sv_reasons(singular_values: np.ndarray, details: dict[str, Any]) -> list[str]:
    """Reasons the ``(snapshots, modes)`` decoder singular values of a linear model have not settled."""
    counts = (singular_values < COLLAPSE_TOL).sum(axis=1)
    reasons = []
    if counts.min() != counts.max():
        reasons.append(f"the collapsed count changed between {counts.min()} and {counts.max()} over the last "
                       f"{WINDOW:.0%} of the steps")
    scale = max(float(singular_values.max()), COLLAPSE_TOL)
    # a mode below the tolerance at every snapshot reads "collapsed" throughout: its SVI noise around zero
    # (a few thousandths) is not a readout that moves, so only modes that reach the tolerance are held to RTOL
    reached = (singular_values >= COLLAPSE_TOL).any(axis=0)
    jitter = float(np.ptp(singular_values[:, reached], axis=0).max()) / scale if reached.any() else 0.0
    if jitter > RTOL:
        reasons.append(f"the decoder singular values still moved by {jitter:.0%} of the largest one")
    drift = _drift(singular_values[:, (singular_values >= COLLAPSE_TOL).all(axis=0)])
    if drift > DRIFT_RTOL:
        reasons.append(f"an active decoder singular value was still drifting ({drift:.0%} over the stretch)")
    rise = _rise(singular_values[:, ~reached])
    if rise > RTOL:
        reasons.append(f"a collapsed decoder singular value was rising toward the collapse tolerance "
                       f"({rise:.0%} of it over the stretch)")
    details.update(collapsed_counts=counts.tolist(), max_rel_jitter_decoder_sv=jitter, max_rel_drift_active_sv=drift,
                   max_rel_rise_collapsed_sv=rise)
    return reasons


def _drift(values: np.ndarray) -> float:
    """The largest significant linear trend over the snapshots, relative to the value (0 if none is significant)."""
    if values.shape[1] == 0 or values.shape[0] < 3:
        return 0.0
    steps = np.arange(values.shape[0], dtype=np.float64)
    slope, intercept = np.polyfit(steps, values, 1)
    residual = values - (np.outer(steps, slope) + intercept)
    noise = residual.std(axis=0, ddof=2)
    change = np.abs(slope) * steps[-1]
    significant = change > 3 * noise
    relative = np.where(significant, change / values.mean(axis=0), 0.0)
    return float(relative.max())


def _rise(values: np.ndarray) -> float:
    """The largest significant upward trend of ``(snapshots, modes)`` collapsed singular values, relative to
    :data:`~ppl_vae.models.readout.COLLAPSE_TOL` (0 if none rises significantly).

    A collapsed mode leaving its saddle grows from near zero toward the tolerance: that readout has not settled
    even before the count changes. Settling down (a falling trend) or noise is not a rise.
    """
    if values.shape[1] == 0 or values.shape[0] < 3:
        return 0.0
    steps = np.arange(values.shape[0], dtype=np.float64)
    slope, intercept = np.polyfit(steps, values, 1)
    noise = (values - (np.outer(steps, slope) + intercept)).std(axis=0, ddof=2)
    change = slope * steps[-1]
    return float(np.where((change > 0) & (change > 3 * noise), change / COLLAPSE_TOL, 0.0).max())


def _loss_drop(loss: np.ndarray) -> float | None:
    """The loss decrease between the two halves of the window, if significant; else None."""
    window = loss[-math.ceil(WINDOW * loss.size):]
    window = window[np.isfinite(window)]
    half = window.size // 2
    if half < 2:
        return None
    first, second = window[:half], window[half:]
    drop = float(first.mean() - second.mean())
    standard_error = math.sqrt(first.var(ddof=1) / first.size + second.var(ddof=1) / second.size)
    return drop if drop > 3 * standard_error and drop > LOSS_RTOL * abs(second.mean()) else None


def summary_line(verdicts: list[dict[str, Any] | None]) -> str | None:
    """One warning line for the configurations that did not converge, or None."""
    bad = [(k, v) for k, v in enumerate(verdicts) if v is not None and v["converged"] is False]
    if not bad:
        return None
    which = "" if len(verdicts) == 1 else f"configuration(s) {', '.join(str(k) for k, _ in bad)}: "
    return (f"training did not converge ({which}{bad[0][1]['reason']}); the collapse count is not reliable: "
            "train longer, or with a learning rate that lets the model move and settle")
