"""One run's diagnostics as plain xarray groups and attributes, without ArviZ.

An :class:`arviz.InferenceData` is a set of named ``xarray.Dataset`` groups and
top-level attributes; importing ArviZ costs a second or more (it imports
matplotlib and SciPy's statistics). Code that only stacks diagnostics and writes
them to netCDF (a sweep's workers and driver) holds them as a
:class:`PlainDiagnostics` instead: the same groups and attributes, read the same
way (``groups()``, ``run["collapse"]``, ``run.attrs``), turned into an
``InferenceData`` by :meth:`PlainDiagnostics.to_inference_data` when one is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import arviz as az
    import xarray as xr


#: The groups of ArviZ's InferenceData schema, in the order ``InferenceData`` lists them; any
#: other group (the suite's ``collapse``, ``theory``, ``metrics``) follows, in the order given.
SCHEMA_GROUPS = ("posterior", "posterior_predictive", "predictions", "log_likelihood", "log_prior", "sample_stats",
                 "prior", "prior_predictive", "sample_stats_prior", "observed_data", "constant_data",
                 "predictions_constant_data", "unconstrained_posterior", "unconstrained_prior")


class PlainDiagnostics:
    """Named groups (``xarray.Dataset``) and top-level attributes: an ``InferenceData``'s content.

    Built from the same groups and attributes, it holds what
    ``arviz.InferenceData(attrs=attrs, **groups)`` holds: the groups in the
    schema's order, then the others in the order given, and a group without
    data variables left out (as ArviZ leaves it out).

    Parameters
    ----------
    groups
        Group name -> Dataset.
    attrs
        Top-level attributes.
    """

    def __init__(self, groups: Mapping[str, xr.Dataset], attrs: Mapping[str, Any] | None = None):
        order = [name for name in SCHEMA_GROUPS if name in groups]
        order += [name for name in groups if name not in SCHEMA_GROUPS]
        self._groups = {name: groups[name] for name in order if groups[name] is not None and groups[name].data_vars}
        self.attrs: dict[str, Any] = dict(attrs or {})

    def groups(self) -> list[str]:
        """The group names, in order (as :meth:`arviz.InferenceData.groups`)."""
        return list(self._groups)

    def __getitem__(self, name: str) -> xr.Dataset:
        return self._groups[name]

    def __setitem__(self, name: str, value: xr.Dataset) -> None:
        self._groups[name] = value

    def __contains__(self, name: object) -> bool:
        return name in self._groups

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups)

    def __getattr__(self, name: str) -> xr.Dataset:
        # idata.collapse as InferenceData allows; only group names (never private ones) are looked up
        groups = self.__dict__.get("_groups", {})
        if name.startswith("_") or name not in groups:
            raise AttributeError(f"{type(self).__name__} has no attribute or group {name!r}")
        return groups[name]

    def __repr__(self) -> str:
        return f"PlainDiagnostics(groups={self.groups()})"

    def to_inference_data(self) -> az.InferenceData:
        """The same groups and attributes as an :class:`arviz.InferenceData` (ArviZ imported here)."""
        from .core import build_inference_data

        return build_inference_data(self._groups, self.attrs)


def is_inference_data(value: object) -> bool:
    """Whether ``value`` is an :class:`arviz.InferenceData`, without importing ArviZ.

    Nothing can be one unless ArviZ was imported already.
    """
    arviz = sys.modules.get("arviz")
    return arviz is not None and isinstance(value, arviz.InferenceData)


def is_diagnostics(value: object) -> bool:
    """Whether ``value`` holds one run's diagnostics: an ``InferenceData`` or a :class:`PlainDiagnostics`."""
    return isinstance(value, PlainDiagnostics) or is_inference_data(value)
