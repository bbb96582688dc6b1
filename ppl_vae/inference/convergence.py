"""Did a linear model's training settle? A cheap check at the end of ``fit``.

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
  collapse tolerance, a mode that jitters by more than :data:`RTOL` of the
  largest singular value, or an active mode still drifting one way (a linear
  trend over the window larger than three residual deviations and than
  :data:`DRIFT_RTOL` of its value) means the readout has not settled;
- the loss over the same window: a decrease between its two halves larger
  than three standard errors and than :data:`LOSS_RTOL` (relative) means
  training was still improving when it stopped.

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


class NotConvergedWarning(UserWarning):
    """A linear model's readout or loss had not settled when training stopped."""


def snapshot_steps(total_steps: int, start_step: int) -> list[int]:
    """The steps (counted as done, 1-based) after which the decoder is read: none if the run is not judged."""
    if total_steps < MIN_STEPS:
        return []
    first = total_steps - math.ceil(WINDOW * total_steps)
    if start_step > first:
        return []
    return sorted({int(round(step)) for step in np.linspace(first, total_steps, N_SNAPSHOTS)} - {0})


def take_snapshot(models) -> list[np.ndarray | None]:
    """Each model's decoder singular values (None for a non-linear model)."""
    return [decoder_singular_values(m) if m.config.arch == "linear" else None for m in models]


def judge(snapshots: list[list[np.ndarray | None]], history: np.ndarray, n_configs: int) -> list[dict[str, Any] | None]:
    """One verdict per configuration: ``{'converged': bool | None, 'reason': str, ...}``; None if not linear.

    Parameters
    ----------
    snapshots
        ``take_snapshot`` at each of :func:`snapshot_steps` (empty: not judged).
    history
        ``(steps, K)`` per-sample loss of the whole run.
    """
    verdicts: list[dict[str, Any] | None] = []
    for k in range(n_configs):
        values = [snap[k] for snap in snapshots]
        if snapshots and (values[0] is None or not all(np.isfinite(v).all() for v in values)):
            verdicts.append(None)  # not a linear model, or diverged in the window
            continue
        if len(values) < 2:
            verdicts.append({"converged": None, "reason": f"not judged: fewer than {MIN_STEPS} steps, or resumed "
                                                           "inside the last fifth of the run"})
            continue
        verdicts.append(_verdict(np.stack(values), history[:, k]))
    return verdicts


def _verdict(singular_values: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    """The verdict of one configuration from its ``(snapshots, modes)`` decoder singular values and loss."""
    counts = (singular_values < COLLAPSE_TOL).sum(axis=1)
    reasons = []
    if counts.min() != counts.max():
        reasons.append(f"the collapsed count changed between {counts.min()} and {counts.max()} over the last "
                       f"{WINDOW:.0%} of the steps")
    scale = max(float(singular_values.max()), COLLAPSE_TOL)
    jitter = float(np.ptp(singular_values, axis=0).max()) / scale
    if jitter > RTOL:
        reasons.append(f"the decoder singular values still moved by {jitter:.0%} of the largest one")
    drift = _drift(singular_values[:, (singular_values >= COLLAPSE_TOL).all(axis=0)])
    if drift > DRIFT_RTOL:
        reasons.append(f"an active decoder singular value was still drifting ({drift:.0%} over the stretch)")
    drop = _loss_drop(loss)
    if drop is not None:
        reasons.append(f"the loss was still falling ({drop:.2g} nats per sample over the stretch)")
    return {"converged": not reasons, "reason": "; ".join(reasons) or "settled",
            "collapsed_counts": counts.tolist(), "max_rel_jitter_decoder_sv": jitter, "max_rel_drift_active_sv": drift}


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
            "train longer or with a smaller learning rate")
