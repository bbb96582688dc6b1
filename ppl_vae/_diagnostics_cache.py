"""What a cached ``diagnostics.nc`` must match to be reused, shared by the report and the sweeps.

A light module (JSON and a file digest, nothing heavy): a sweep computes these
keys while it writes its runs, and must not import the report (matplotlib,
seaborn, ArviZ) to do so. :mod:`ppl_vae.report.runs` re-exports them.
"""

from __future__ import annotations

import json
import os

from ppl_vae._io import file_sha256


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file (the checkpoint), to tell a retrained run from the cached one."""
    return file_sha256(path)


def data_split_key(train_options: dict, n_test: int, max_points: int | None = None) -> dict:
    """The rows diagnostics were computed on: the run's held-out split and the cap on its rows.

    ``max_points`` counts only when it cut the held-out rows (``n_test`` of them),
    so a sweep's capped diagnostics and a report's uncapped ones agree when the
    cap took nothing away.
    """
    fraction = float(train_options.get("test_fraction") or 0.0)
    return {"test_fraction": fraction, "split_seed": int(train_options.get("split_seed", 0)) if fraction > 0 else None,
            "max_points": max_points if max_points is not None and n_test > max_points else None}


def diagnostics_cache_key(info: dict, checkpoint: str, iw_samples: int, seed: int, options: dict,
                          split: dict) -> dict:
    """What a cached ``diagnostics.nc`` must match to be reused (stored in its attrs).

    Shared by the report and the sweep studies so a diagnostics file written by one
    is recognised by the other. ``info`` holds the run's ``model`` config and
    ``data`` spec; ``checkpoint`` is :func:`file_digest` of its checkpoint;
    ``split`` is :func:`data_split_key`'s.
    """
    from ppl_vae import __version__

    return {
        "diagnose_options": json.dumps(options, sort_keys=True, default=str),
        "model_config": json.dumps(info["model"], sort_keys=True),
        "data_spec": json.dumps(info["data"], sort_keys=True, default=str),
        "data_split": json.dumps(split, sort_keys=True),
        "checkpoint_sha256": checkpoint,
        "iw_samples": int(iw_samples),
        "seed": int(seed),
        "ppl_vae_version": __version__,
    }
