"""Checks made before a run starts work: what it will cost and where it will write.

A run that would fail after training (a closed-form theory too large for
memory, a run name the file system cannot hold) is refused before training,
with one error naming the cause; see docs/reliability.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from ppl_vae._lock import check_name_length
from ppl_vae._validate import check_theory_cost


def check_before_training(config, bundle, run_dir: str | os.PathLike | None = None) -> None:
    """Refuse a run whose end would fail: the linear theory's ``d x d`` cost, the run directory's name.

    Parameters
    ----------
    config
        The model config (a linear one gets its closed-form theory computed at the end).
    bundle
        The data (``x`` ``(n, d)``, ``y`` ``(n, d_y)`` for pairs).
    run_dir
        Where the run will be written, or None.

    Raises
    ------
    ppl_vae._validate.MemoryBudgetError
        The theory's matrices would not fit in memory.
    OSError
        A path component is longer than the file system allows (``ENAMETOOLONG``).
    """
    if run_dir is not None:
        check_name_length(Path(run_dir))
    if getattr(config, "arch", None) == "linear":
        check_theory_cost("x", int(bundle.x.shape[-1]))
        if getattr(bundle, "y", None) is not None:
            check_theory_cost("y", int(bundle.y.shape[-1]))


#: Attributes of a diagnostics file that hold a JSON object (mapping).
JSON_MAPPING_ATTRS = ("model_config", "hyperparameters", "data_spec")


def check_json_attrs(attrs: dict, path: str | os.PathLike, names: tuple[str, ...] = JSON_MAPPING_ATTRS) -> None:
    """Refuse a sent file whose JSON attributes are not JSON objects (a list, a number, broken text).

    Raises
    ------
    ppl_vae._io.DamagedFileError
        Naming the file and the attribute.
    """
    import json

    from ppl_vae._io import DamagedFileError

    for name in names:
        if name not in attrs:
            continue
        value = attrs[name]
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise DamagedFileError(f"{path}: attribute {name!r} must be a JSON object (mapping), got "
                                   f"{str(value)[:60]!r}; the file is damaged or was not written by ppl_vae")
