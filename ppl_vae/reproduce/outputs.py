"""Where an experiment writes: netCDF, CSV, PNG, a manifest and its claim check.

Every experiment owns one folder, ``<out>/<name>/``. :class:`ExperimentOutput`
writes each file atomically and records it in ``manifest.json`` with a
caption, so the report links exactly what this run produced (never a stale
file left by an earlier run). :class:`ClaimCheck` is the experiment's verdict:
the paper's qualitative claim, whether the measured numbers agree, and the
numbers themselves (``claim.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ppl_vae._io import atomic_write, atomic_write_json, atomic_write_text, prepare_run_dir, write_netcdf
from ppl_vae.reproduce import gate
from ppl_vae.reproduce.verdicts import EVIDENCE_COLUMNS

MANIFEST = "manifest.json"
CLAIM = "claim.json"


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars and arrays to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclasses.dataclass(frozen=True)
class ClaimCheck:
    """One experiment's verdict against the paper.

    Attributes
    ----------
    experiment
        Experiment name (the script's stem).
    claim
        The paper's qualitative claim, in words.
    agrees
        Whether the measured numbers support it, by the rule in ``rule``.
    rule
        How ``agrees`` was decided from ``numbers`` (e.g. "collapsed count
        non-decreasing in beta at every eta_dec").
    numbers
        Further numbers behind the verdict (JSON-safe).
    evidence
        The rule's checks, one dict per row (``check, measured, se, expected,
        ok``): what the report shows as the verdict's table.
    n_seeds
        Replicates behind every seed mean the rule read.
    convergence
        :func:`ppl_vae.reproduce.gate.summarise` of the runs the experiment
        trained (empty: none recorded); any run that did not converge makes
        :attr:`status` ``'not converged'``.
    """

    experiment: str
    claim: str
    agrees: bool
    rule: str
    numbers: dict[str, Any]
    evidence: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    n_seeds: int = 1
    convergence: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def status(self) -> str:
        """``'agrees'``, ``'disagrees'``, or ``'not converged'`` (the convergence gate, :mod:`.gate`)."""
        return gate.status(self.agrees, self.convergence)

    @classmethod
    def from_verdict(cls, experiment: str, claim: str, verdict, numbers: dict[str, Any] | None = None) -> ClaimCheck:
        """The claim check of a :class:`ppl_vae.reproduce.verdicts.Verdict`, gated by the convergence records of
        the runs trained so far in the open :func:`ppl_vae.reproduce.gate.ledger` (if any)."""
        records = gate.current_records()
        return cls(experiment, claim, verdict.agrees, verdict.rule, numbers or {}, verdict.evidence(),
                   verdict.n_seeds, {} if records is None else gate.summarise(records))

    def evidence_table(self) -> pd.DataFrame:
        """The checks as a table (empty when the rule recorded none)."""
        return pd.DataFrame(self.evidence, columns=list(EVIDENCE_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        return _plain({"experiment": self.experiment, "claim": self.claim, "agrees": bool(self.agrees),
                       "rule": self.rule, "numbers": self.numbers, "evidence": self.evidence,
                       "n_seeds": self.n_seeds, "status": self.status, "convergence": self.convergence})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClaimCheck:
        return cls(experiment=data["experiment"], claim=data["claim"], agrees=bool(data["agrees"]),
                   rule=data.get("rule", ""), numbers=data.get("numbers", {}),
                   evidence=list(data.get("evidence", [])), n_seeds=int(data.get("n_seeds", 1)),
                   convergence=dict(data.get("convergence") or {}))


class ExperimentOutput:
    """The output folder of one experiment.

    Parameters
    ----------
    root
        Results root.
    name
        Experiment name; files go to ``root / name``.
    overwrite
        Allow a non-empty folder (files are replaced one by one).

    Raises
    ------
    ppl_vae._io.RunDirectoryExistsError
        The folder exists, is not empty and ``overwrite`` is False.
    """

    def __init__(self, root: str | Path, name: str, *, overwrite: bool = False):
        self.name = name
        self.directory = prepare_run_dir(Path(root) / name, overwrite=overwrite)
        self.entries: list[dict[str, str]] = []
        self._write_manifest()

    def _record(self, kind: str, path: Path, caption: str, **extra: str) -> Path:
        relative = path.relative_to(self.directory).as_posix()
        self.entries = [e for e in self.entries if e["path"] != relative]
        self.entries.append({"kind": kind, "path": relative, "caption": caption, **extra})
        self._write_manifest()
        return path

    def _write_manifest(self) -> None:
        atomic_write_json(self.directory / MANIFEST, {"experiment": self.name, "files": self.entries})

    def dataset(self, stem: str, data: xr.Dataset, caption: str) -> Path:
        """Write an ``xr.Dataset`` as ``<stem>.nc``."""
        return self._record("netcdf", write_netcdf(data, self.directory / f"{stem}.nc"), caption, format="Dataset")

    def inference_data(self, stem: str, idata, caption: str) -> Path:
        """Write an ``arviz.InferenceData`` (e.g. diagnostics combined along ``run``) as ``<stem>.nc``."""
        from ppl_vae.diagnostics import save

        return self._record("netcdf", save(idata, self.directory / f"{stem}.nc"), caption, format="InferenceData")

    def table(self, stem: str, frame: pd.DataFrame, caption: str) -> Path:
        """Write a table as ``<stem>.csv`` (no index column)."""
        path = atomic_write_text(self.directory / f"{stem}.csv", frame.to_csv(index=False, float_format="%.6g"))
        return self._record("table", path, caption)

    def figure(self, stem: str, fig, caption: str) -> Path:
        """Render a matplotlib ``Figure`` to ``<stem>.png``."""
        from ppl_vae.plots import to_png

        png = to_png(fig)
        return self._record("figure", atomic_write(self.directory / f"{stem}.png", lambda tmp: tmp.write_bytes(png)),
                            caption)

    def claim(self, check: ClaimCheck) -> Path:
        """Write the claim check as ``claim.json``."""
        return atomic_write_json(self.directory / CLAIM, check.to_dict())


def read_manifest(directory: str | Path) -> list[dict[str, str]]:
    """The files an experiment recorded (empty if it wrote none)."""
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text())["files"] if path.is_file() else []


def read_claim(directory: str | Path) -> ClaimCheck | None:
    """The claim check an experiment wrote, or None."""
    path = Path(directory) / CLAIM
    return ClaimCheck.from_dict(json.loads(path.read_text())) if path.is_file() else None
