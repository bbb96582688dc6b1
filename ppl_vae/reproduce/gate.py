"""The convergence gate: a verdict is read only off runs that converged.

Every training run an experiment makes through
:func:`ppl_vae.reproduce.run_replicates` carries ``fit``'s convergence record
(:mod:`ppl_vae.inference.convergence`: parameters moved from their initial
values, loss and per-dimension KL stable over the last fifth of the steps).
While an analysis script runs (:func:`ppl_vae.reproduce.run_script` opens a
:func:`ledger` around it) those records are gathered, and the experiment's
:class:`~ppl_vae.reproduce.ClaimCheck` summarises them. Its status is then

- ``"not converged"`` when any run it trained did not converge: the rule's
  outcome is kept in the claim file for the record, but it is not a verdict;
- ``"agrees"`` / ``"disagrees"`` otherwise (the rule's outcome).

Runs too short to be judged (fewer than
:data:`~ppl_vae.inference.convergence.MIN_STEPS` steps, the test suite's tiny
scale) are counted as "not judged" and do not block the verdict; the summary
says how many there were.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: Statuses of a claim check, in the order the report lists them.
STATUSES = ("agrees", "disagrees", "not converged")
#: Reasons listed in a summary (the runs.csv of each experiment has the rest).
MAX_REASONS = 5

_LEDGER: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("convergence_ledger",
                                                                                       default=None)


@contextlib.contextmanager
def ledger() -> Iterator[list[dict[str, Any]]]:
    """Gather the convergence records of the runs trained inside the block (one list per experiment)."""
    records: list[dict[str, Any]] = []
    token = _LEDGER.set(records)
    try:
        yield records
    finally:
        _LEDGER.reset(token)


def run_label(config: Any, seed: int) -> str:
    """A short label of one run: architecture, hyper-parameters and seed."""
    hyper = config.hyperparameters() if hasattr(config, "hyperparameters") else {}
    parts = [str(getattr(config, "arch", ""))] + [f"{k}={v:g}" for k, v in hyper.items()
                                                  if isinstance(v, (int, float))]
    return ",".join(p for p in parts if p) + f",seed={seed}"


def record(result: Any, *, label: str = "", judged: Callable[[Any], bool] | None = None) -> list[dict[str, Any]]:
    """Add the convergence records of a :class:`ppl_vae.sweep.SweepResult`'s runs to the open ledger.

    Returns the records (also when no ledger is open, e.g. a notebook calling
    ``run_replicates`` directly). A diverged run is recorded as not converged.
    ``judged(config)`` False marks a run the verdict does not read (e.g. a
    figure's extra grid): it is recorded and reported, but does not gate.
    """
    records = []
    conv = tuple(result.convergence) or (None,) * len(result.configs)
    for k, (config, seed) in enumerate(zip(result.configs, result.seeds)):
        verdict = conv[k] if k < len(conv) else None
        if k in result.diverged:
            verdict = {"converged": False, "reason": f"diverged at step {result.diverged[k]}"}
        elif verdict is None:
            verdict = {"converged": None, "reason": "no convergence record"}
        records.append({"run": (f"{label}:" if label else "") + run_label(config, seed),
                        "converged": verdict["converged"], "reason": verdict["reason"],
                        "param_rel_change": verdict.get("param_rel_change"),
                        "judged": True if judged is None else bool(judged(config))})
    current = _LEDGER.get()
    if current is not None:
        current.extend(records)
    return records


def current_records() -> list[dict[str, Any]] | None:
    """The open ledger's records so far (None when no ledger is open)."""
    current = _LEDGER.get()
    return None if current is None else list(current)


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of converged, not converged and not judged runs, and the first reasons of the failures.

    Only the runs the verdict reads (``judged``) count; the others are
    counted apart (``n_unused``, ``n_unused_not_converged``).
    """
    used = [r for r in records if r.get("judged", True)]
    unused = [r for r in records if not r.get("judged", True)]
    bad = [r for r in used if r["converged"] is False]
    return {"n_runs": len(used), "n_converged": sum(r["converged"] is True for r in used),
            "n_not_converged": len(bad), "n_not_judged": sum(r["converged"] is None for r in used),
            "not_converged": [f"{r['run']}: {r['reason']}" for r in bad[:MAX_REASONS]],
            "n_unused": len(unused), "n_unused_not_converged": sum(r["converged"] is False for r in unused)}


def status(agrees: bool, summary: dict[str, Any] | None) -> str:
    """``'not converged'`` if any run behind the verdict did not converge, else ``'agrees'`` / ``'disagrees'``."""
    if summary and summary.get("n_not_converged", 0) > 0:
        return "not converged"
    return "agrees" if agrees else "disagrees"


def describe(summary: dict[str, Any] | None) -> str:
    """One sentence on the convergence of the runs behind a verdict (empty when nothing was recorded)."""
    if not summary or not summary.get("n_runs"):
        return ""
    text = (f"Convergence gate: {summary['n_converged']} of {summary['n_runs']} runs converged, "
            f"{summary['n_not_converged']} did not, {summary['n_not_judged']} not judged (too short).")
    if summary.get("n_unused"):
        text += (f" {summary['n_unused']} more runs (not read by the verdict, e.g. a figure's grid): "
                 f"{summary['n_unused_not_converged']} of them did not converge.")
    if summary["n_not_converged"]:
        text += " Not converged: " + "; ".join(summary["not_converged"])
        if summary["n_not_converged"] > len(summary["not_converged"]):
            text += f"; and {summary['n_not_converged'] - len(summary['not_converged'])} more"
        text += "."
    return text
