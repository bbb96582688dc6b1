"""KL-weight schedules: linear warm-up and cyclical annealing (pure, torch-vectorised).

Convention (the training engine codes against it): the KL weight of every
latent site at optimisation step ``t`` (0-based) is ``beta * w(t)`` with

- no schedule (``warmup_steps == 0`` and ``cycle_steps == 0``): ``w(t) = 1``;
- linear warm-up over ``W = warmup_steps > 0`` steps: ``w(t) = min(1, (t + 1) / W)``;
- cyclical annealing (Fu et al. 2019) with period ``P = cycle_steps > 0`` and
  ramp fraction ``R = cycle_ratio`` in (0, 1]: ``tau = t mod P``,
  ``w(t) = min(1, (tau + 1) / (R P))``.

Learning rate.  :func:`lr_decay_for` turns a decay stated for the run (the
last step's rate as a fraction of the first's) into ``fit``'s per-step factor
for a given number of steps, so a run that is lengthened or shortened ends at
the same fraction of its starting rate.

``w`` is strictly positive (a Pyro ``poutine.scale`` must be > 0, SPEC 7) and
at most 1.  Setting both ``warmup_steps`` and ``cycle_steps`` for the same
configuration is refused: the two schedules answer the same question
differently and silently preferring one would hide a mistake.

End point.  For the linear models the schedule changes only the path: once
``w = 1`` the objective is the plain beta-ELBO again, so the SPEC 4 closed
form at ``beta`` is the prediction for a run that ends at full weight and has
spent long enough there to converge.  :func:`predicted_end_point` states this
as code (and reads a run ending mid-ramp quasi-statically, at ``beta w(T-1)``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import xarray as xr

from ppl_vae._validate import check_int_range


def _as_array(name: str, value) -> np.ndarray:
    """``value`` (number, sequence or tensor) as a float64 NumPy array, refusing non-numbers."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from None


def check_schedule(warmup_steps=0, cycle_steps=0, cycle_ratio=0.5) -> None:
    """Raise ``ValueError`` unless the schedule parameters are valid (elementwise for arrays).

    Parameters
    ----------
    warmup_steps : int or array/tensor of ints >= 0
    cycle_steps : int or array/tensor of ints >= 0
    cycle_ratio : float or array/tensor in (0, 1]
        Only read where ``cycle_steps > 0``, but checked everywhere so a bad
        value never waits for a configuration that uses it.
    A configuration may not set both ``warmup_steps > 0`` and ``cycle_steps > 0``.
    """
    arrays = {}
    for name, value in (("warmup_steps", warmup_steps), ("cycle_steps", cycle_steps)):
        array = _as_array(name, value)
        if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must be an integer >= 0 (0 = off), got {np.ravel(array).tolist()!r}")
        arrays[name] = array
    ratio = _as_array("cycle_ratio", cycle_ratio)
    if not np.all(np.isfinite(ratio)) or np.any(ratio <= 0) or np.any(ratio > 1):
        raise ValueError(f"cycle_ratio must lie in (0, 1], got {np.ravel(ratio).tolist()!r}")
    try:
        both = np.logical_and(arrays["warmup_steps"] > 0, arrays["cycle_steps"] > 0)
    except ValueError:
        raise ValueError(f"warmup_steps and cycle_steps must broadcast together, got shapes "
                         f"{arrays['warmup_steps'].shape} and {arrays['cycle_steps'].shape}") from None
    if np.any(both):
        raise ValueError("warmup_steps and cycle_steps cannot both be > 0 for the same configuration: "
                         "choose linear warm-up (warmup_steps) or cyclical annealing (cycle_steps)")


def lr_decay_for(steps: int, final_fraction: float) -> float:
    """The per-step factor ``d`` of ``fit``'s ``lr_t = lr * d**t`` that ends a ``steps``-step run at ``final_fraction``.

    Parameters
    ----------
    steps : int >= 1
        Optimisation steps of the run (``t = 0 .. steps - 1``).
    final_fraction : float in (0, 1]
        The last step's learning rate over the first's.

    Returns
    -------
    float in (0, 1]: ``final_fraction ** (1 / (steps - 1))`` (1 for a one-step run),
    so ``d ** (steps - 1) == final_fraction`` at any step count.
    """
    steps = check_int_range("steps", steps, 1)
    final_fraction = float(final_fraction)
    if not (np.isfinite(final_fraction) and 0.0 < final_fraction <= 1.0):
        raise ValueError(f"final_fraction must lie in (0, 1], got {final_fraction!r}")
    return 1.0 if steps == 1 else float(np.exp(np.log(final_fraction) / (steps - 1)))


def _tensor(value, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.as_tensor(value, dtype=dtype, device=device)


def kl_weight(step, warmup_steps=0, cycle_steps=0, cycle_ratio=0.5, *, dtype: torch.dtype | None = None,
              validate: bool = True) -> torch.Tensor:
    """The KL weight ``w(step)`` in (0, 1] (see the module docstring for the formulas).

    Parameters
    ----------
    step : int or integer tensor >= 0
        0-based optimisation step(s); a tensor of shape (T,) gives a curve.
    warmup_steps, cycle_steps : int >= 0, or tensor of shape (K, 1)
        Per-configuration values broadcast against ``step`` (K configurations).
    cycle_ratio : float in (0, 1], or tensor of shape (K, 1)
    dtype : torch dtype of the result (default: torch's default float dtype).
    validate : bool
        Check the parameters (:func:`check_schedule`).  The engine may check
        once up front and pass False on the hot path (the check syncs with the host).

    Returns
    -------
    torch.Tensor of shape ``broadcast(step, warmup_steps, cycle_steps, cycle_ratio)``,
    dimensionless, every entry in (0, 1].  The device follows the first tensor argument.
    """
    if validate:
        step_array = _as_array("step", step)
        if not np.all(np.isfinite(step_array)) or np.any(step_array < 0) or np.any(step_array != np.round(step_array)):
            raise ValueError(f"step must be an integer >= 0 (0-based), got {np.ravel(step_array).tolist()!r}")
        check_schedule(warmup_steps, cycle_steps, cycle_ratio)
    dtype = dtype or torch.get_default_dtype()
    device = next((v.device for v in (step, warmup_steps, cycle_steps, cycle_ratio) if isinstance(v, torch.Tensor)),
                  None)
    # Work in float64 so (t + 1) / W is exact for any realistic step count, then cast.
    t, warmup, cycle, ratio = (_tensor(value, torch.float64, device)
                               for value in (step, warmup_steps, cycle_steps, cycle_ratio))
    # clamp_min keeps the unused branch finite (no 0/0) where a schedule is off.
    linear = torch.clamp((t + 1.0) / warmup.clamp_min(1.0), max=1.0)
    period = cycle.clamp_min(1.0)
    cyclical = torch.clamp((torch.remainder(t, period) + 1.0) / (ratio * period), max=1.0)
    weight = torch.where(cycle > 0, cyclical, torch.where(warmup > 0, linear, torch.ones_like(linear)))
    return weight.to(dtype)


class StepWeights:
    """The KL weights of every scheduled site at each step of a run, computed a block of steps at a time.

    ``at(step)`` gives ``{site: kl_weight(step, *schedule)}``, the same numbers bit for bit (the
    formulas are element-wise, in float64, so one step's entry of a block is that step's own
    computation), for the cost of one :func:`kl_weight` call per ``block`` steps instead of one per
    step and site (about a dozen small tensor operations each, 50 us on the development CPU).

    Parameters
    ----------
    schedules
        Latent site -> ``(warmup_steps, cycle_steps, cycle_ratio)``, numbers for one model or
        ``(K, 1)`` tensors for K configurations (as :func:`ppl_vae.inference.run_parts.kl_controls`
        gives them), checked already.
    block
        Steps computed at once; a run asks for its steps in order, from any first step.
    """

    def __init__(self, schedules: dict[str, tuple], block: int = 1000):
        self.schedules = dict(schedules)
        self.block = check_int_range("block", block, 1)
        self._first: int | None = None
        self._weights: dict[str, torch.Tensor] = {}

    def at(self, step: int) -> dict[str, torch.Tensor]:
        """Site -> the KL weight at ``step``: a 0-d tensor, or ``(K, 1)``; ``{}`` without schedules."""
        if not self.schedules:
            return {}
        if self._first is None or not self._first <= step < self._first + self.block:
            self._first = step
            self._weights = {site: _weight_block(step, self.block, *schedule)
                             for site, schedule in self.schedules.items()}
        offset = step - self._first
        return {site: weights[offset] for site, weights in self._weights.items()}


def _weight_block(first: int, count: int, warmup_steps, cycle_steps, cycle_ratio) -> torch.Tensor:
    """``kl_weight`` at steps ``first .. first + count - 1``, stacked along a new leading dimension."""
    values = (warmup_steps, cycle_steps, cycle_ratio)
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), None)
    ndim = max(v.dim() if isinstance(v, torch.Tensor) else np.ndim(v) for v in values)
    steps = torch.arange(first, first + count, dtype=torch.float64, device=device)
    return kl_weight(steps.reshape(count, *(1,) * ndim), *values, validate=False)


def schedule_curve(steps: int, warmup_steps=0, cycle_steps=0, cycle_ratio=0.5) -> xr.DataArray:
    """The KL weight over ``steps`` optimisation steps, as a DataArray (for reports and plots).

    Parameters
    ----------
    steps : int >= 1
        Number of steps; the curve covers ``step = 0 .. steps - 1``.
    warmup_steps, cycle_steps, cycle_ratio : number, or 1-D sequences of a common length K
        Sequences give one curve per configuration along a ``config`` dimension,
        with the three parameters as coordinates.

    Returns
    -------
    xr.DataArray over ``step`` (or (``config``, ``step``)), float64 in (0, 1];
    ``attrs`` hold the scalar parameters and ``long_name``.
    """
    steps = check_int_range("steps", steps, 1)
    params = {name: _as_array(name, value) for name, value in
              (("warmup_steps", warmup_steps), ("cycle_steps", cycle_steps), ("cycle_ratio", cycle_ratio))}
    if any(a.ndim > 1 for a in params.values()):
        raise ValueError("warmup_steps, cycle_steps and cycle_ratio must be numbers or 1-D sequences")
    sizes = {a.size for a in params.values() if a.ndim == 1}
    if len(sizes) > 1:
        raise ValueError(f"warmup_steps, cycle_steps and cycle_ratio sequences must share one length, "
                         f"got lengths {sorted(sizes)}")
    check_schedule(*params.values())
    step = np.arange(steps)
    attrs = {"long_name": "KL weight w(t)", "units": "1"}
    if not sizes:
        weight = kl_weight(torch.as_tensor(step), *params.values(), dtype=torch.float64, validate=False)
        return xr.DataArray(weight.numpy(), dims=("step",), coords={"step": step},
                            attrs=dict(attrs, **{name: float(a) for name, a in params.items()}))
    n_configs = sizes.pop()
    columns = [np.broadcast_to(a, (n_configs,)).reshape(-1, 1).copy() for a in params.values()]
    weight = kl_weight(torch.as_tensor(step), *columns, dtype=torch.float64, validate=False)
    coords = {"step": step, "config": np.arange(n_configs)}
    coords.update({name: ("config", column[:, 0]) for name, column in zip(params, columns)})
    return xr.DataArray(weight.numpy(), dims=("config", "step"), coords=coords, attrs=attrs)


def predicted_end_point(predict: Callable[..., xr.Dataset], *, beta: float, steps: int, warmup_steps: int = 0,
                        cycle_steps: int = 0, cycle_ratio: float = 0.5, **theory_kwargs) -> xr.Dataset:
    """Linear-theory prediction of where a scheduled run ends: ``predict`` at ``beta * w(steps - 1)``.

    For linear models the expected loss at weight ``w`` is the beta-ELBO at
    ``beta w``; a schedule changes only the path.  So a run whose last step has
    ``w = 1`` is predicted by the closed form at ``beta`` (no new theory), provided it
    spent enough steps at full weight to converge: ``attrs["steps_at_full_weight"]``
    says how many trailing steps had ``w = 1``.  A run that ends mid-ramp (a
    cyclical schedule cut short) is read quasi-statically at ``beta w(T-1)``;
    that is only a prediction if the ramp is slow compared with convergence.

    Parameters
    ----------
    predict : callable
        A closed form taking ``beta=`` (e.g. :func:`ppl_vae.theory.linear_vae`).
    beta : float > 0
    steps : int >= 1, total optimisation steps T
    warmup_steps, cycle_steps, cycle_ratio : the schedule (scalars)
    theory_kwargs : everything else ``predict`` needs (data, latent_dim, ...)

    Returns
    -------
    ``predict``'s Dataset, with ``final_kl_weight``, ``effective_beta``,
    ``steps_at_full_weight`` and the schedule added to ``attrs``.
    """
    curve = schedule_curve(steps, warmup_steps, cycle_steps, cycle_ratio)
    if curve.ndim != 1:
        raise ValueError("predicted_end_point takes one schedule (scalar warmup_steps, cycle_steps, cycle_ratio)")
    weights = curve.values
    final = float(weights[-1])
    below = np.flatnonzero(weights < 1.0)
    at_full = steps - (int(below[-1]) + 1 if below.size else 0)
    prediction = predict(beta=beta * final, **theory_kwargs)
    return prediction.assign_attrs(final_kl_weight=final, effective_beta=beta * final, steps_at_full_weight=at_full,
                                   schedule_beta=beta, warmup_steps=warmup_steps, cycle_steps=cycle_steps,
                                   cycle_ratio=cycle_ratio, steps=steps)


def config_schedule(config: dict, steps: int) -> xr.DataArray | None:
    """The KL weight over ``steps`` of a model config (``to_dict()`` form), one curve per latent level.

    Returns
    -------
    xr.DataArray or None
        Over (``level``, ``step``) (levels ``''`` or ``'1'``, ``'2'``), with ``attrs["free_bits"]``
        the largest free-bits floor (nats per dimension, 0 if none); None when the config has
        neither a schedule nor a floor.
    """
    levels = [level for level in ("", "1", "2") if f"kl_warmup{level}" in config]
    if not levels:
        return None
    warmup = [int(config[f"kl_warmup{level}"]) for level in levels]
    cycle = [int(config[f"kl_cycle{level}"]) for level in levels]
    floors = [float(config[f"free_bits{level}"]) for level in levels]
    if not any(warmup) and not any(cycle) and not any(floors):
        return None
    curve = schedule_curve(steps, warmup, cycle, [float(config[f"kl_cycle_ratio{level}"]) for level in levels])
    names = ["z" if not level else f"z{level}" for level in levels]
    return (curve.reset_coords(drop=True).assign_coords(config=names).rename(config="level")
            .assign_attrs(free_bits=max(floors)))
